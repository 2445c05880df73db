"""Encoder scaling on long sequences: the BiMamba stack against two transformers of the same width
and depth, ours (``TransformerStack``: pre-norm blocks, scaled_dot_product_attention) and torch's own
``nn.TransformerEncoder`` (pre-norm layers, the same attention kernel), on the token counts of images
(patch 2: 32^2 ... 256^2 -> 256 ... 16,384 tokens) and volumes (patch 4: 32^3 and 64^3 -> 512 and
4,096 tokens), batch 8: training (forward + backward) and inference (forward without gradients),
time and peak memory.

    python benchmarks/encoder.py                        # dim 64, depth 2 (the cpu profiles), batch 8
    python benchmarks/encoder.py --dim 256 --depth 6    # the full profile's width and depth

All stacks run side by side in one process on the same (batch, L, dim) float32 input. Time: best of
--repeats (one run from 8,192 tokens on); peak memory: the rise of the resident set during one more
run. Prints per length the times, memories and transformer / BiMamba ratios, and the first length
from which BiMamba is faster (and lighter) than each transformer. Writes
benchmarks/results/encoder.md and encoder.json.
"""
import argparse
import sys

import torch
from torch import nn
from _util import RESULTS, measure, track_live_memory, write_results

from ginr_common.mamba import BiMambaStack
from ginr_common.transformer import TransformerStack

INPUTS = {"32^2": 256, "64^2": 1024, "128^2": 4096, "256^2": 16384, "32^3": 512, "64^3": 4096}


def torch_encoder(dim, depth):
    """torch's nn.TransformerEncoder, pre-norm (norm_first), GELU, 4x MLP, heads of 32 channels."""
    layer = nn.TransformerEncoderLayer(dim, max(1, dim // 32), 4 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


def bench(stack, x, repeats, train):
    def run():
        if train:
            stack.zero_grad(set_to_none=True)
            stack(x.clone().requires_grad_()).sum().backward()
        else:
            with torch.no_grad():
                stack(x)

    return measure(run, repeats)


def first_from(rows, key):
    """The first length from which ``key`` (a ratio transformer / BiMamba) stays above 1."""
    by_L = sorted({r["L"]: r for r in rows}.values(), key=lambda r: r["L"])
    for i, r in enumerate(by_L):
        if all(s[key] > 1 for s in by_L[i:]):
            return r["L"]
    return None


def main(argv=None):
    if argv is None:
        track_live_memory()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lengths", type=int, nargs="+", default=sorted(set(INPUTS.values())))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "encoder"))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    stacks = {"bimamba": BiMambaStack(a.dim, a.depth), "transformer": TransformerStack(a.dim, a.depth),
              "torch": torch_encoder(a.dim, a.depth)}
    rows = []
    for L in a.lengths:
        x = torch.randn(a.batch, L, a.dim)
        for mode in ("train", "inference"):
            r = {"L": L, "mode": mode, "inputs": ", ".join(k for k, v in INPUTS.items() if v == L)}
            for name, stack in stacks.items():
                t, m = bench(stack, x, a.repeats if L < 8192 else 1, mode == "train")
                r[f"{name}_ms"], r[f"{name}_mb"] = t * 1e3, m / 2**20
            for name in ("transformer", "torch"):
                r[f"{name}_over_bimamba_time"] = r[f"{name}_ms"] / r["bimamba_ms"]
                r[f"{name}_over_bimamba_mem"] = r[f"{name}_mb"] / max(r["bimamba_mb"], 1e-9)
            rows.append(r)
            print(f"L={L:6d} {mode:9s} " + "  ".join(f"{n} {r[f'{n}_ms']:9.1f} ms {r[f'{n}_mb']:7.0f} MB"
                                                     for n in stacks), flush=True)
    lines = [f"batch {a.batch}, dim {a.dim}, depth {a.depth}, float32; train = forward + backward, inference = "
             "forward without gradients. Peak memory = rise of the resident set during one run. Ratios: "
             "transformer / BiMamba (above 1: BiMamba faster or lighter).", "",
             "| L | inputs | mode | BiMamba ms | MB | ours: transformer ms | MB | nn.TransformerEncoder ms | MB | "
             "time ratio (ours, torch) | memory ratio (ours, torch) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['L']} | {r['inputs']} | {r['mode']} | {r['bimamba_ms']:.1f} | {r['bimamba_mb']:.0f} | "
                     f"{r['transformer_ms']:.1f} | {r['transformer_mb']:.0f} | {r['torch_ms']:.1f} | {r['torch_mb']:.0f} | "
                     f"{r['transformer_over_bimamba_time']:.2f}x, {r['torch_over_bimamba_time']:.2f}x | "
                     f"{r['transformer_over_bimamba_mem']:.2f}x, {r['torch_over_bimamba_mem']:.2f}x |")
    summary = {}
    for mode in ("train", "inference"):
        sub = [r for r in rows if r["mode"] == mode]
        for name in ("transformer", "torch"):
            for what in ("time", "mem"):
                summary[f"{mode}_bimamba_{'faster' if what == 'time' else 'lighter'}_than_{name}_from_L"] = \
                    first_from(sub, f"{name}_over_bimamba_{what}")
    lines.append("")
    for key, L in summary.items():
        lines.append(f"- {key.replace('_', ' ')}: {L if L is not None else 'at no length measured'}")
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "encoder.py", argv or sys.argv[1:], text, {"rows": rows, **summary, "args": vars(a)})
    return rows, summary


if __name__ == "__main__":
    main()
