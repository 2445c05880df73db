"""What a flow model's sample adds to its estimate, beside what the truth adds: on the test tiles (20% of
the pixels observed with the fixed evaluation masks), the residual from the estimate mu of the truth
and of one sample (8 exponential steps), in the opponent colour basis (``flow.colour``: brightness,
red-green, yellow-blue), in [-1, 1] units: its standard deviation over the unobserved pixels and its
correlation between neighbouring pixels (lag 1, rows and columns). Colour grain shows as a colour
residual that is too large, or too little correlated from pixel to pixel.

    python benchmarks/flow_residual.py                                 # the shipped flow_sparse
    python benchmarks/flow_residual.py --models shipped checkpoints/<run>/best.pt

Writes benchmarks/results/<out>.md and .json.
"""
import argparse

import torch
from flow_steps import spread_tiles, tabulate

from ginr_common.flow.colour import basis_matrix
from ginr_common.tasks.sparse_flow import observe

COMPONENTS = ("brightness", "red-green", "yellow-blue")


def residual_stats(residual, unobserved):
    """residual (B, C, H, W) in the opponent basis, unobserved (B, H, W) -> {component: {std, lag1}}."""
    out = {}
    for name, r in zip(COMPONENTS, residual.unbind(1)):
        lag1 = ((r[:, :, 1:] * r[:, :, :-1]).mean() + (r[:, 1:] * r[:, :-1]).mean()) / 2 / (r * r).mean()
        out[name] = {"std": float(r[unobserved].pow(2).mean().sqrt()), "lag1": float(lag1)}
    return out


@torch.no_grad()
def measure(model, tiles, steps=8, seed=0):
    model.eval()
    B, C, H, W = tiles.shape
    oc, ov, grid, unobserved = observe(tiles, model.config.observe_frac)
    as_img = lambda v: v.transpose(1, 2).reshape(B, C, H, W)  # noqa: E731
    mu = as_img(model.estimate(oc, ov, grid))
    sample = as_img(model.sample(oc, ov, grid, steps=steps, generator=torch.Generator().manual_seed(seed)))
    opponent = lambda x: torch.einsum("bchw,cd->bdhw", 2 * (x - mu), basis_matrix("opponent", C))  # noqa: E731
    mask = unobserved.reshape(B, H, W)
    return {"truth": residual_stats(opponent(tiles), mask), "sample": residual_stats(opponent(sample), mask)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["shipped"], help="'shipped' or flow checkpoints (best.pt)")
    p.add_argument("--n-images", type=int, default=32, help="test tiles spread over the split")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default="flow_residual")
    a = p.parse_args(argv)
    tiles = spread_tiles("test", a.n_images)
    lines = [f"The residual from the estimate on {len(tiles)} test tiles (one sample: {a.steps} exponential steps), "
             "opponent basis, [-1, 1] units: standard deviation on the unobserved pixels / lag-1 correlation", "",
             "| model | residual of | " + " | ".join(COMPONENTS) + " |", "|---|---|" + "---|" * len(COMPONENTS)]
    tabulate(a.models, lambda model: measure(model, tiles, a.steps),
             lambda r: " | ".join(f"{r[c]['std']:.3f} / {r[c]['lag1']:.2f}" for c in COMPONENTS), lines,
             "flow_residual.py", a.out, argv)

if __name__ == "__main__":
    main()
