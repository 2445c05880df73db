"""Selective-scan benchmark on CPU: ours (numba) vs mambapy's parallel scan vs a plain autograd loop.

    python benchmarks/scan.py                 # batch 8, dim 512, N 16; L = 512, 2048, 16384
    python benchmarks/scan.py --quick         # L = 512 only, fewer repeats

All three compute the same selective scan (u, delta, A, B, C, D) in float32 on the same inputs,
side by side in one process. Time: best of --repeats runs. Peak memory (one further run): the rise of this
process's resident set during the call, sampled every 0.5 ms, relative to one
(batch, dim, L, N) float32 tensor. A baseline whose estimated memory exceeds --mem-budget-gb is
skipped and says so. Writes benchmarks/results/scan.md and scan.json.
"""
import argparse
import os
import sys

import torch
from _util import RESULTS, measure, track_live_memory, write_results

from ginr_common.scan import selective_scan, selective_scan_ref


def mambapy_scan(u, delta, A, B, C, D):
    """mamba.py's selective scan (MambaBlock.selective_scan) in our (batch, dim, L) layout."""
    from mambapy.pscan import pscan

    x, dl = u.transpose(1, 2), delta.transpose(1, 2)            # (b, L, d)
    Bl, Cl = B.transpose(1, 2), C.transpose(1, 2)               # (b, L, N)
    deltaA = torch.exp(dl.unsqueeze(-1) * A)
    BX = dl.unsqueeze(-1) * Bl.unsqueeze(2) * x.unsqueeze(-1)
    hs = pscan(deltaA, BX)
    y = (hs @ Cl.unsqueeze(-1)).squeeze(3) + D * x
    return y.transpose(1, 2)


METHODS = {
    "ours (numba)": (lambda *a: selective_scan(*a, backend="numba"), 0.0),
    "mambapy pscan": (mambapy_scan, 6.0),          # ~6 (b, L, d, N) tensors alive in backward
    "plain loop": (lambda *a: selective_scan_ref(*a), 5.0),
}


def inputs(b, d, L, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, L, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(b, d, L, generator=g) - 4)
    A = -torch.exp(torch.randn(d, N, generator=g) * 0.5)
    B = torch.randn(b, N, L, generator=g)
    C = torch.randn(b, N, L, generator=g)
    D = torch.randn(d, generator=g)
    return [u, delta, A, B, C, D]


def bench(b, d, L, N, repeats, budget):
    xs = inputs(b, d, L, N)
    full = b * d * L * N * 4
    rows = []
    for name, (fn, full_tensors) in METHODS.items():
        if full_tensors * full > budget * 2**30:
            rows.append(dict(method=name, L=L, skipped=f"needs ~{full_tensors * full / 2**30:.0f} GB"))
            continue
        reps = repeats if L <= 2048 or name.startswith("ours") else 1

        def fwd():
            with torch.no_grad():
                fn(*xs)

        def fwd_bwd():
            leaves = [x.clone().requires_grad_() for x in xs]
            fn(*leaves).sum().backward()

        tf, mf = measure(fwd, reps)
        tb, mb = measure(fwd_bwd, reps)
        rows.append(dict(method=name, L=L, fwd_s=tf, fwd_bwd_s=tb, fwd_peak_rel=mf / full,
                         fwd_bwd_peak_rel=mb / full))
    ours = rows[0]
    for r in rows:
        if "fwd_s" in r:
            r["fwd_speedup_of_ours"] = r["fwd_s"] / ours["fwd_s"]
            r["fwd_bwd_speedup_of_ours"] = r["fwd_bwd_s"] / ours["fwd_bwd_s"]
    return rows


def table(rows, b, d, N):
    out = [f"batch {b}, dim {d}, N {N}, float32, CPU ({os.cpu_count()} cores, torch "
           f"{torch.__version__}, {torch.get_num_threads()} threads). Peak memory = RSS rise / one "
           f"(b, d, L, N) float32 tensor. Ours is x times faster = baseline time / our time.", "",
           "| L | method | forward (ms) | fwd+bwd (ms) | fwd peak mem | fwd+bwd peak mem | ours faster, fwd | ours faster, fwd+bwd |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['L']} | {r['method']} | skipped: {r['skipped']} | | | | | |")
        else:
            out.append(f"| {r['L']} | {r['method']} | {r['fwd_s'] * 1e3:.1f} | {r['fwd_bwd_s'] * 1e3:.1f} | "
                       f"{r['fwd_peak_rel']:.2f}x | {r['fwd_bwd_peak_rel']:.2f}x | "
                       f"{r['fwd_speedup_of_ours']:.1f}x | {r['fwd_bwd_speedup_of_ours']:.1f}x |")
    return "\n".join(out)


def main(argv=None):
    if argv is None:
        track_live_memory()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 16384])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mem-budget-gb", type=float, default=16.0)
    p.add_argument("--quick", action="store_true", help="L=512 only, 2 repeats")
    p.add_argument("--out", default=str(RESULTS / "scan"))
    a = p.parse_args(argv)
    if a.quick:
        a.lengths, a.repeats = [512], 2
    rows = []
    for L in a.lengths:
        rows += bench(a.batch, a.dim, L, a.state, a.repeats, a.mem_budget_gb)
        print(table([r for r in rows if r["L"] == L], a.batch, a.dim, a.state).split("\n", 3)[-1], flush=True)
    text = table(rows, a.batch, a.dim, a.state)
    print("\n" + text)
    write_results(a.out, "scan.py", argv or sys.argv[1:], text, rows)
    return rows


if __name__ == "__main__":
    main()
