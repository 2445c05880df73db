"""Encoder scaling on long sequences: the BiMamba stack (as it trains by default, and with
``recompute=True``: each block keeps only its input for the mixer and recomputes the mixer in the
backward) against two transformers of the same width and depth, ours (``TransformerStack``:
pre-norm blocks, scaled_dot_product_attention) and torch's own ``nn.TransformerEncoder`` (pre-norm
layers, the same attention kernel), on the token counts of images (patch 2: 32^2 ... 256^2 -> 256
... 16,384 tokens) and volumes (patch 4: 32^3 and 64^3 -> 512 and 4,096 tokens), batch 8: training
(forward + backward) and inference (forward without gradients), time and peak memory.

    python benchmarks/encoder.py                        # dim 64, depth 2 (the cpu profiles), batch 8
    python benchmarks/encoder.py --dim 256 --depth 6    # the full profile's width and depth

All stacks run side by side in one process on the same (batch, L, dim) float32 input; time: best
of --repeats (one run from 8,192 tokens on). Peak memory is the rise of the resident set during
one run, measured in a second process whose allocator returns freed blocks to the system
(``_util.run_with_live_memory``; that allocator slows allocation-heavy code, so no time is taken
there). Prints per length the times, memories and transformer / BiMamba ratios, and the first
length from which BiMamba is faster (and lighter) than each transformer. Writes
benchmarks/results/encoder.md, encoder.json and encoder.png (time and memory against length).
"""
import argparse
import json
import sys

import torch
from torch import nn
from _util import RESULTS, measure, peak_rss_rise, run_with_live_memory, write_results

from ginr_common.mamba import BiMambaStack
from ginr_common.transformer import TransformerStack

INPUTS = {"32^2": 256, "64^2": 1024, "128^2": 4096, "256^2": 16384, "32^3": 512, "64^3": 4096}
NAMES = {"bimamba": "BiMamba", "recompute": "BiMamba, recompute", "transformer": "ours: transformer",
         "torch": "nn.TransformerEncoder"}


def torch_encoder(dim, depth):
    """torch's nn.TransformerEncoder, pre-norm (norm_first), GELU, 4x MLP, heads of 32 channels."""
    layer = nn.TransformerEncoderLayer(dim, max(1, dim // 32), 4 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


def stacks(dim, depth):
    torch.manual_seed(0)
    bimamba = BiMambaStack(dim, depth)
    recompute = BiMambaStack(dim, depth, recompute=True)
    recompute.load_state_dict(bimamba.state_dict())
    return {"bimamba": bimamba, "recompute": recompute, "transformer": TransformerStack(dim, depth),
            "torch": torch_encoder(dim, depth)}


def runner(stack, x, train):
    def run():
        if train:
            stack.zero_grad(set_to_none=True)
            stack(x.clone().requires_grad_()).sum().backward()
        else:
            with torch.no_grad():
                stack(x)
    return run


def cases(a):
    """(L, mode, name) in the order measured; the recompute variant only trains differently."""
    return [(L, mode, name) for L in a.lengths for mode in ("train", "inference") for name in NAMES
            if not (mode == "inference" and name == "recompute")]


def memory_child(a):
    """The memory run: one warm-up and one measured run of each case; prints {case: MB} as JSON."""
    s, out = stacks(a.dim, a.depth), {}
    for L, mode, name in cases(a):
        x = torch.randn(a.batch, L, a.dim)
        run = runner(s[name], x, mode == "train")
        run()
        out[f"{L} {mode} {name}"] = peak_rss_rise(run) / 2**20
    print(json.dumps(out))


def first_from(rows, key):
    """The first length from which ``key`` (a ratio transformer / BiMamba) stays above 1."""
    by_L = sorted({r["L"]: r for r in rows}.values(), key=lambda r: r["L"])
    for i, r in enumerate(by_L):
        if all(s[key] > 1 for s in by_L[i:]):
            return r["L"]
    return None


def plot(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for col, (mode, what, unit) in enumerate([("train", "ms", "time (ms)"), ("train", "mb", "peak memory (MB)"),
                                              ("inference", "ms", "time (ms)"), ("inference", "mb", "peak memory (MB)")]):
        ax = axes[col]
        sub = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["L"])
        for (name, label), colour in zip(NAMES.items(), ("C0", "C1", "C2", "C3")):
            pts = [(r["L"], r[f"{name}_{what}"]) for r in sub if f"{name}_{what}" in r]
            if pts:
                ax.loglog(*zip(*pts), "o-", label=label, base=2, color=colour)
        ax.set(xlabel="tokens L", ylabel=unit, title=f"{mode}: {unit.split(' (')[0]}")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lengths", type=int, nargs="+", default=sorted(set(INPUTS.values())))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "encoder"))
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    a = p.parse_args(argv)
    if a.memory_child:
        return memory_child(a)
    s, rows = stacks(a.dim, a.depth), []
    for L in a.lengths:
        x = torch.randn(a.batch, L, a.dim)
        for mode in ("train", "inference"):
            r = {"L": L, "mode": mode, "inputs": ", ".join(k for k, v in INPUTS.items() if v == L)}
            for L_, mode_, name in cases(a):
                if (L_, mode_) == (L, mode):
                    t, _ = measure(runner(s[name], x, mode == "train"), a.repeats if L < 8192 else 1, memory=False)
                    r[f"{name}_ms"] = t * 1e3
            rows.append(r)
            print(f"L={L:6d} {mode:9s} " + "  ".join(f"{n} {r[f'{n}_ms']:9.1f} ms" for n in NAMES if f"{n}_ms" in r),
                  flush=True)
    print("peak memory, in a second process ...", flush=True)
    mem = run_with_live_memory([*argv, "--memory-child"])
    for r in rows:
        for name in NAMES:
            if f"{name}_ms" in r:
                r[f"{name}_mb"] = mem[f"{r['L']} {r['mode']} {name}"]
        for base in ("bimamba", "recompute"):
            for name in ("transformer", "torch"):
                if f"{base}_ms" in r:
                    r[f"{name}_over_{base}_time"] = r[f"{name}_ms"] / r[f"{base}_ms"]
                    r[f"{name}_over_{base}_mem"] = r[f"{name}_mb"] / max(r[f"{base}_mb"], 1e-9)
    lines = [f"batch {a.batch}, dim {a.dim}, depth {a.depth}, float32; train = forward + backward, inference = "
             "forward without gradients; time: best of the runs in one process, peak memory: rise of the resident "
             "set during one run, in a second process. Ratios: transformer / BiMamba (above 1: BiMamba faster or "
             "lighter); in training also against BiMamba with recompute.", "",
             "| L | inputs | mode | " + " | ".join(f"{v} ms | MB" for v in NAMES.values())
             + " | time ratio (ours, torch) | memory ratio (ours, torch) | recompute: time, memory ratio (ours) |",
             "|---" * (3 + 2 * len(NAMES) + 3) + "|"]
    for r in rows:
        cells = [f"{r[f'{n}_ms']:.1f} | {r[f'{n}_mb']:.0f}" if f"{n}_ms" in r else "- | -" for n in NAMES]
        rc = (f"{r['transformer_over_recompute_time']:.2f}x, {r['transformer_over_recompute_mem']:.2f}x"
              if "recompute_ms" in r else "-")
        lines.append(f"| {r['L']} | {r['inputs']} | {r['mode']} | " + " | ".join(cells) + " | "
                     f"{r['transformer_over_bimamba_time']:.2f}x, {r['torch_over_bimamba_time']:.2f}x | "
                     f"{r['transformer_over_bimamba_mem']:.2f}x, {r['torch_over_bimamba_mem']:.2f}x | {rc} |")
    summary = {}
    for mode in ("train", "inference"):
        sub = [r for r in rows if r["mode"] == mode]
        for base in ("bimamba", "recompute") if mode == "train" else ("bimamba",):
            for name in ("transformer", "torch"):
                for what in ("time", "mem"):
                    summary[f"{mode}_{base}_{'faster' if what == 'time' else 'lighter'}_than_{name}_from_L"] = \
                        first_from(sub, f"{name}_over_{base}_{what}")
    lines.append("")
    for key, L in summary.items():
        lines.append(f"- {key.replace('_', ' ')}: {L if L is not None else 'at no length measured'}")
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "encoder.py", argv, text, {"rows": rows, **summary, "args": vars(a)})
    plot(rows, a.out + ".png", f"encoder scaling: batch {a.batch}, dim {a.dim}, depth {a.depth}, float32, "
                               f"{torch.get_num_threads()} threads")
    return rows, summary


if __name__ == "__main__":
    main()
