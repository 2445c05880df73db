"""Encoder scaling: the BiMamba stack vs a transformer of the same width and depth (self-attention
through torch's scaled_dot_product_attention), forward+backward on L tokens.

    python benchmarks/encoder.py                       # dim 64, depth 2 (the cpu profile), L = 256 ... 16384
    python benchmarks/encoder.py --dim 256 --depth 6   # the full profile's width and depth

Both stacks run side by side in one process on the same (batch, L, dim) float32 input. Time: best
of --repeats; peak memory: the rise of the resident set during one more run. Prints the time per
token (Mamba must grow linearly: its time per token at the longest L within 1.5x of that at 1024),
the transformer / Mamba ratios, and the first L where the transformer is slower. Writes
benchmarks/results/encoder.md and encoder.json.
"""
import argparse
import sys

import torch
from _util import RESULTS, measure, track_live_memory, write_results

from ginr_common.mamba import BiMambaStack
from ginr_common.transformer import TransformerStack


def bench(stack, x, repeats):
    def fwd_bwd():
        stack.zero_grad(set_to_none=True)
        stack(x.clone().requires_grad_()).sum().backward()

    return measure(fwd_bwd, repeats)


def main(argv=None):
    if argv is None:
        track_live_memory()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "encoder"))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    stacks = {"bimamba": BiMambaStack(a.dim, a.depth), "transformer": TransformerStack(a.dim, a.depth)}
    rows = []
    for L in a.lengths:
        x = torch.randn(a.batch, L, a.dim)
        r = {"L": L}
        for name, stack in stacks.items():
            t, m = bench(stack, x, a.repeats if L <= 4096 else 1)
            r[f"{name}_s"], r[f"{name}_mb"], r[f"{name}_us_per_token"] = t, m / 2**20, t / (a.batch * L) * 1e6
        r["transformer_over_bimamba_time"] = r["transformer_s"] / r["bimamba_s"]
        r["transformer_over_bimamba_mem"] = r["transformer_mb"] / max(r["bimamba_mb"], 1e-9)
        rows.append(r)
        print(f"L={L:6d}  bimamba {r['bimamba_s'] * 1e3:9.1f} ms {r['bimamba_mb']:8.1f} MB   transformer "
              f"{r['transformer_s'] * 1e3:9.1f} ms {r['transformer_mb']:8.1f} MB", flush=True)

    lines = [f"forward+backward, batch {a.batch}, dim {a.dim}, depth {a.depth}, float32. Peak memory = rise of "
             "the resident set during one run.", "",
             "| L | BiMamba (ms) | µs/token | peak MB | transformer (ms) | µs/token | peak MB | time ratio T/M | memory ratio T/M |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['L']} | {r['bimamba_s'] * 1e3:.1f} | {r['bimamba_us_per_token']:.1f} | {r['bimamba_mb']:.0f} | "
                     f"{r['transformer_s'] * 1e3:.1f} | {r['transformer_us_per_token']:.1f} | {r['transformer_mb']:.0f} | "
                     f"{r['transformer_over_bimamba_time']:.2f}x | {r['transformer_over_bimamba_mem']:.2f}x |")
    by_L = {r["L"]: r for r in rows}
    summary = {}
    if 1024 in by_L and max(by_L) > 1024:
        growth = by_L[max(by_L)]["bimamba_us_per_token"] / by_L[1024]["bimamba_us_per_token"]
        summary["linear_growth_ratio"] = growth
        lines += ["", f"BiMamba time per token at L={max(by_L)} / at L=1024: {growth:.2f}x "
                  f"({'linear: within' if growth <= 1.5 else 'NOT linear: above'} the 1.5x bound)"]
    behind = [r["L"] for r in rows if r["transformer_over_bimamba_time"] > 1]
    summary["transformer_slower_from_L"] = behind[0] if behind else None
    lines.append(f"The transformer is slower than BiMamba from L={behind[0]} on (of the lengths measured)."
                 if behind else "The transformer was faster at every length measured.")
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "encoder.py", argv or sys.argv[1:], text, {"rows": rows, **summary, "args": vars(a)})
    return rows, summary


if __name__ == "__main__":
    main()
