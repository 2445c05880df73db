"""Selective-scan benchmark on a CUDA GPU: Triton vs mamba-ssm's fused kernel vs the pure-PyTorch
path, forward and forward+backward, at the shapes of benchmarks/scan.py.

    python benchmarks/scan_gpu.py                   # batch 8, dim 512, N 16; L = 512, 2048, 16384
    python benchmarks/scan_gpu.py --dtype bfloat16

Timing: CUDA events around each call, median of --repeats after --warmup calls (Triton compiles
on its first call). Peak memory: torch.cuda.max_memory_allocated during one call, relative to one
(batch, dim, L, N) float32 tensor. A backend that is not installed is listed as such. Writes
benchmarks/results/scan_gpu.md and .json. Needs a CUDA GPU; it refuses to run without one, so no
GPU number in this repository comes from anywhere but a run of this script.
"""
import argparse
import sys

import torch
from _util import RESULTS, write_results

from ginr_common.scan import mamba_ssm_available, selective_scan, triton_available

BACKENDS = {"triton": triton_available, "mamba_ssm": mamba_ssm_available, "torch": lambda: True}


def inputs(b, d, L, N, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    return [r(b, d, L).to(dtype), torch.nn.functional.softplus(r(b, d, L) - 4).to(dtype),
            -torch.exp(r(d, N) * 0.5), r(b, N, L).to(dtype), r(b, N, L).to(dtype), r(d)]


def cuda_time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def peak(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--state", type=int, default=16)
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 16384])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default=str(RESULTS / "scan_gpu"))
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/scan_gpu.py needs a CUDA GPU; none is visible here (no numbers written).")
    dtype = getattr(torch, a.dtype)
    rows = []
    for L in a.lengths:
        xs = inputs(a.batch, a.dim, L, a.state, dtype)
        full = a.batch * a.dim * L * a.state * 4
        for name, available in BACKENDS.items():
            if not available():
                rows.append({"L": L, "backend": name, "skipped": "not installed"})
                continue

            def fwd():
                with torch.no_grad():
                    selective_scan(*xs, delta_softplus=True, backend=name)

            def fwd_bwd():
                leaves = [x.detach().requires_grad_() for x in xs]
                selective_scan(*leaves, delta_softplus=True, backend=name).float().sum().backward()

            rows.append({"L": L, "backend": name, "fwd_ms": cuda_time(fwd, a.warmup, a.repeats) * 1e3,
                         "fwd_bwd_ms": cuda_time(fwd_bwd, a.warmup, a.repeats) * 1e3,
                         "fwd_bwd_peak_rel": peak(fwd_bwd) / full})
        base = {r["backend"]: r for r in rows if r["L"] == L and "fwd_ms" in r}
        for r in rows:
            if r["L"] == L and "fwd_ms" in r and "triton" in base:
                r["triton_speedup_fwd_bwd"] = r["fwd_bwd_ms"] / base["triton"]["fwd_bwd_ms"]
    lines = [f"batch {a.batch}, dim {a.dim}, N {a.state}, {a.dtype} inputs, {torch.cuda.get_device_name()}; "
             f"median of {a.repeats} after {a.warmup} warm-up calls (CUDA events).", "",
             "| L | backend | forward (ms) | fwd+bwd (ms) | fwd+bwd peak mem | backend time / Triton time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['L']} | {r['backend']} | {r['skipped']} | | | |")
        else:
            lines.append(f"| {r['L']} | {r['backend']} | {r['fwd_ms']:.2f} | {r['fwd_bwd_ms']:.2f} | "
                         f"{r['fwd_bwd_peak_rel']:.2f}x | {r.get('triton_speedup_fwd_bwd', float('nan')):.2f}x |")
    text = "\n".join(lines)
    print(text)
    write_results(a.out, "scan_gpu.py", argv or sys.argv[1:], text, rows)


if __name__ == "__main__":
    main()
