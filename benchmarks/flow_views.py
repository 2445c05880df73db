"""Does averaging a flow model over the symmetries of the tile lift its posterior mean? On the test tiles
(20% of the pixels observed with the fixed evaluation masks), the model reads the observations and
renders the queries in each of the 8 views of the square (the coordinates flipped along y, along x,
and transposed: every pixel centre lands on a pixel centre, and the answer needs no turning back),
and the views' answers are averaged: the one-shot estimate, and the mean of 16 samples drawn as one
antithetic pair per view, twice over, beside the model as it is (``tasks.sparse_flow.evaluate_sparse``).
PSNR on the unobserved pixels, SSIM on the full tile, chroma total variation over the truth's.

    python benchmarks/flow_views.py                                       # the shipped flow_sparse
    python benchmarks/flow_views.py --models shipped checkpoints/<run>/best.pt

Writes benchmarks/results/<out>.md and .json.
"""
import argparse

import torch
from flow_steps import spread_tiles, tabulate

from ginr_common.metrics import masked_psnr, ssim
from ginr_common.tasks.sparse_flow import evaluate_sparse, observe, tv_ratios

VIEWS = [(fy, fx, tr) for fy in (0, 1) for fx in (0, 1) for tr in (0, 1)]


def view(coords, v):
    """Coordinates (..., 2) in [0, 1] (rows y, x) in view v = (flip y, flip x, transpose)."""
    fy, fx, tr = v
    c = coords.clone()
    if fy:
        c[..., 0] = 1 - c[..., 0]
    if fx:
        c[..., 1] = 1 - c[..., 1]
    return c.flip(-1) if tr else c


def scores(pred, tiles, unobserved):
    return {"psnr_unobserved": float(masked_psnr(pred, tiles, unobserved).mean()),
            "ssim": float(ssim(pred, tiles).mean()), **tv_ratios(pred, tiles)}


@torch.no_grad()
def measure(model, tiles, k=16, seed=0):
    model.eval()
    B, C, H, W = tiles.shape
    oc, ov, grid, unobserved = observe(tiles, model.config.observe_frac)
    as_img = lambda v: v.transpose(1, 2).reshape(B, C, H, W)  # noqa: E731
    plain = evaluate_sparse(model, tiles, ks=(k,), seed=seed, with_ssim=True)
    rows = {"estimate": plain["estimate"], f"mean_{k}": plain[f"mean_{k}"]}
    estimates = torch.stack([as_img(model.estimate(view(oc, v), ov, view(grid, v))) for v in VIEWS])
    g = torch.Generator().manual_seed(seed)
    draws = [as_img(x) for i in range(k // 2)
             for x in model.samples(view(oc, VIEWS[i % 8]), ov, view(grid, VIEWS[i % 8]), k=2, generator=g)]
    rows["estimate, 8 views"] = scores(estimates.mean(0), tiles, unobserved)
    rows[f"mean_{k}, a pair per view"] = scores(torch.stack(draws).mean(0), tiles, unobserved)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["shipped"], help="'shipped' or flow checkpoints (best.pt)")
    p.add_argument("--n-images", type=int, default=32, help="test tiles spread over the split")
    p.add_argument("--k", type=int, default=16, help="samples in the mean (even: antithetic pairs)")
    p.add_argument("--out", default="flow_views")
    a = p.parse_args(argv)
    if a.k < 2 or a.k % 2:
        p.error(f"--k must be an even number >= 2 (antithetic pairs), got {a.k}")
    tiles = spread_tiles("test", a.n_images)
    lines = [f"The flow's estimate and mean of {a.k} on {len(tiles)} test tiles, as it is and averaged over the 8 "
             "views of the square: PSNR on the unobserved pixels / SSIM / chroma TV over the truth's", "",
             "| model | row | PSNR unobserved | SSIM | chroma TV / truth |", "|---|---|---|---|---|"]
    tabulate(a.models, lambda model: measure(model, tiles, a.k),
             lambda r: f"{r['psnr_unobserved']:.2f} | {r['ssim']:.4f} | {r['chroma_tv_ratio']:.2f}", lines,
             "flow_views.py", a.out, argv)

if __name__ == "__main__":
    main()
