"""The best fixed linear filter for x2 super-resolution, fitted by least squares: a reference point
between bicubic and the learned models of notebook 2.

    python benchmarks/linear_filter.py                 # k = 4 6 8 (support in input pixels)

On the training HR crops (their antialiased 32x32 downsample -> the crop resized to 64x64) it fits,
for each of the 4 output phases of x2, one k x k filter over the input pixels (shared by the colour
channels, plus a constant) by least squares, then scores it on the validation and test pairs
against bicubic, both against the real crop resized to 64. The filter sees only the position of
the output pixel, never the content: what a model gains beyond it comes from reading the image.
Writes results/linear_filter.md/.json.
"""
import argparse
import sys

import torch
import torch.nn.functional as F
from _util import RESULTS, write_results

from ginr_common.baselines import bicubic
from ginr_common.data import load_dataset, load_sr_pairs, resize
from ginr_common.metrics import psnr

PHASES = [(0, 0), (0, 1), (1, 0), (1, 1)]


def neighbourhoods(lr, k):
    """(B, C, 32, 32) -> (B*C*32*32, k*k + 1): the k x k input pixels around each one (from i - k/2 + 1
    to i + k/2, border replicated) and a constant."""
    n, p = lr.shape[-1], k // 2
    x = F.pad(lr.reshape(-1, 1, n, n), (p - 1, p, p - 1, p), mode="replicate")
    u = F.unfold(x, k).transpose(1, 2).reshape(-1, k * k).double()
    return torch.cat([u, torch.ones(len(u), 1, dtype=u.dtype)], 1)


def fit(lr, hr2, k, ridge=1e-4):
    X = neighbourhoods(lr, k)
    A = X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype)
    t = hr2.reshape(-1, 1, *hr2.shape[-2:])
    return [torch.linalg.solve(A, X.T @ t[:, 0, a::2, b::2].reshape(-1).double()) for a, b in PHASES]


def apply(lr, weights, k):
    B, C, n, _ = lr.shape
    X = neighbourhoods(lr, k)
    out = torch.zeros(B * C, 2 * n, 2 * n, dtype=torch.float64)
    for (a, b), w in zip(PHASES, weights):
        out[:, a::2, b::2] = (X @ w).reshape(B * C, n, n)
    return out.reshape(B, C, 2 * n, 2 * n).float().clamp(0, 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[4, 6, 8])
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    hr = load_dataset("photos")["train_hr"]
    hr = torch.stack([hr[i][0] for i in range(len(hr))])
    lr, hr2 = resize(hr, (32, 32)), resize(hr, (64, 64))
    pairs = {s: load_sr_pairs(s) for s in ("val", "test")}
    rows = []
    for k in a.k:
        w = fit(lr, hr2, k)
        for split, (l, h) in pairs.items():
            gt = resize(h, (64, 64))
            rows.append({"k": k, "split": split, "filter": float(psnr(apply(l, w, k), gt).mean()),
                         "bicubic": float(psnr(bicubic(l, (64, 64)), gt).mean())})
    lines = [f"x2, least-squares filters fitted on the {len(hr)} training HR crops; PSNR against the real crop "
             "resized to 64x64", "", "| k | split | fixed filter | bicubic | gain |", "|---|---|---|---|---|"]
    lines += [f"| {r['k']} | {r['split']} | {r['filter']:.2f} | {r['bicubic']:.2f} | {r['filter'] - r['bicubic']:+.2f} |"
              for r in rows]
    text = "\n".join(lines)
    print(text)
    write_results(a.out or RESULTS / "linear_filter", "linear_filter.py", argv or sys.argv[1:], text, rows)
    return rows


if __name__ == "__main__":
    main()
