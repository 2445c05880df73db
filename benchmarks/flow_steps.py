"""Does a flow model's sample settle as the solver refines? One sample of each test tile (20% of its
pixels observed with the fixed evaluation masks), from the same noise, at 8, 16 and 32 steps of each
solver: PSNR on the unobserved pixels, total variation over the truth's and the same of its colour
(``metrics.chroma``: colour grain raises it), each the mean of an antithetic pair's two draws
(``tasks.sparse_flow.one_sample_by_steps``).

    python benchmarks/flow_steps.py                                     # the shipped flow_sparse, test tiles
    python benchmarks/flow_steps.py --models shipped checkpoints/<run>/best.pt --split val
    python benchmarks/flow_steps.py --without-network                   # the Gaussian part of the flow alone
    python benchmarks/flow_steps.py --solvers exponential --steps 8 --temperatures 1,1 1,0.5 0.8,0.5

``--without-network`` zeroes the network's output F, leaving x1_hat = mu + c_skip (x_t - mu): the
flow of a Gaussian field around the estimate, which the exponential solver integrates exactly.
Writes benchmarks/results/<out>.md and .json.
"""
import argparse
import sys

import torch
from _util import RESULTS, write_results

from ginr_common.checkpoints import load_checkpoint, load_pretrained
from ginr_common.data import load_dataset
from ginr_common.flow.sampler import SOLVERS
from ginr_common.tasks.sparse_flow import one_sample_by_steps

KEYS = ("psnr_unobserved", "tv_ratio", "chroma_tv_ratio")


def load(model):
    return load_pretrained("flow_sparse") if model == "shipped" else load_checkpoint(model)[0]


def spread_tiles(split, n):
    """n tiles (n, C, H, W) spread evenly over a split of the embedded photographs."""
    tiles = load_dataset("photos")[split]
    return torch.stack([tiles[int(i)][0] for i in torch.linspace(0, len(tiles) - 1, min(n, len(tiles))).long()])


def finish(lines, rows, script, out, argv):
    """Print the table ``lines`` and write it with ``rows`` to benchmarks/results/<out>.md and .json."""
    text = "\n".join(lines)
    print("\n" + text)
    write_results(RESULTS / out, script, argv if argv is not None else sys.argv[1:], text, rows)


def tabulate(models, measure, cells, lines, script, out, argv):
    """For each of ``models`` ('shipped' or checkpoints): rows[model] = measure(the loaded model), a dict of
    results, each a table line "| model | key | cells(result) |" added to ``lines`` and printed as it comes;
    then ``finish``."""
    rows = {}
    for name in models:
        rows[name] = measure(load(name))
        for key, r in rows[name].items():
            lines.append(f"| {name} | {key} | {cells(r)} |")
            print(lines[-1], flush=True)
    finish(lines, rows, script, out, argv)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["shipped"], help="'shipped' or flow checkpoints (best.pt)")
    p.add_argument("--solvers", nargs="+", default=["exponential", "euler"], choices=SOLVERS)
    p.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--n-images", type=int, default=32, help="tiles spread over the split")
    p.add_argument("--without-network", action="store_true", help="zero the network's output (the Gaussian part)")
    p.add_argument("--noise-length", type=float, help="draw the noise field with this length (pixels) instead of "
                   "the one the model was trained with")
    p.add_argument("--temperatures", nargs="+", default=[None], metavar="B,C",
                   help="sampling temperatures (brightness,colour) to draw at, each a row (default: the model's)")
    p.add_argument("--out", default="flow_steps")
    a = p.parse_args(argv)
    tiles = spread_tiles(a.split, a.n_images)
    lines = [f"One sample of {len(tiles)} {a.split} tiles as the solver refines: PSNR on the unobserved pixels / total "
             "variation over the truth's / chroma total variation over the truth's" +
             (" (the network's output zeroed: the Gaussian part alone)" if a.without_network else ""), "",
             "| model | solver | " + " | ".join(f"{n} steps" for n in a.steps) + " |",
             "|---|---|" + "---|" * len(a.steps)]
    rows = {}
    for name in a.models:
        model = load(name)
        c = model.config
        if a.noise_length is not None:
            c.noise_length = a.noise_length
        if a.without_network:
            model.network = lambda ctx, x, t: torch.zeros_like(x)
        for temp, solver in [(t, sv) for t in a.temperatures for sv in a.solvers]:
            t = tuple(model.temperature.tolist()) if temp is None else tuple(float(v) for v in temp.split(","))
            label = f"{name} (noise length {c.noise_length}, channel correlation {c.noise_channel_corr}, temperature {t})"
            r = one_sample_by_steps(model, tiles, tuple(a.steps), solver, temperature=t)
            rows[f"{name}/{solver}" + ("" if temp is None else f"/{temp}")] = r
            lines.append(f"| {label} | {solver} | " + " | ".join(
                f"{r[n]['psnr_unobserved']:.2f} / {r[n]['tv_ratio']:.3f} / {r[n]['chroma_tv_ratio']:.2f}"
                for n in a.steps) + " |")
            print(lines[-1], flush=True)
    finish(lines, rows, "flow_steps.py", a.out, argv)


if __name__ == "__main__":
    main()
