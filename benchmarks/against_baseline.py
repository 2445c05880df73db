"""Speed of this tree against an earlier commit, measured side by side in one run.

    python benchmarks/against_baseline.py --rev 5c88e9f          # the commit to compare with

Extracts ``ginr_common/`` and ``benchmarks/`` of --rev into a temporary folder, then alternates
(--rounds times) between that tree and this one, each in a fresh process with the same thread
count:
- the encoder: ``BiMambaStack(64, 2)`` forward + backward on (16, 384, 64) float32 (best of
  --repeats after a warm-up);
- training throughput: each tree's own ``benchmarks/train_throughput.py`` at the cpu profile of
  that tree (its own model, batch, queries), images per second of a full training step.
Prints the best of the rounds for each and the ratios; writes results/against_baseline.md/.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from _util import RESULTS, write_results

ROOT = Path(__file__).resolve().parents[1]
ENCODER = """
import json, time, torch
torch.manual_seed(0)
from ginr_common.mamba import BiMambaStack
m = BiMambaStack(64, 2)
x = torch.randn(16, 384, 64, requires_grad=True)
for _ in range(2):
    m(x).sum().backward()
best = float("inf")
for _ in range({repeats}):
    t = time.perf_counter()
    m(x).sum().backward()
    best = min(best, time.perf_counter() - t)
print(json.dumps({{"ms": best * 1e3}}))
"""


def extract(rev, dest):
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "ginr_common", "benchmarks"], check=True,
                             capture_output=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tf:
            tf.extractall(dest, filter="data")


def in_tree(tree, args, env):
    r = subprocess.run([sys.executable, *args], cwd=tree, capture_output=True, text=True, timeout=1800,
                       env={**env, "PYTHONPATH": str(tree)})
    if r.returncode:
        raise RuntimeError(f"{args[:2]} failed in {tree}:\n{r.stderr[-2000:]}")
    return r.stdout


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", required=True, help="the earlier commit")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "against_baseline"))
    a = p.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "NUMBA_NUM_THREADS": str(a.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        extract(a.rev, before)
        trees = {"before": before, "after": ROOT}
        enc = {k: float("inf") for k in trees}
        ips = {k: 0.0 for k in trees}
        for _ in range(a.rounds):
            for name, tree in trees.items():
                out = in_tree(tree, ["-c", ENCODER.format(repeats=a.repeats)], env)
                enc[name] = min(enc[name], json.loads(out.strip().splitlines()[-1])["ms"])
                res = Path(tmp) / f"tp_{name}"
                in_tree(tree, ["benchmarks/train_throughput.py", "--profile", "cpu", "--repeats",
                               str(a.train_repeats), "--out", str(res)], env)
                ips[name] = max(ips[name], json.loads(Path(str(res) + ".json").read_text())["images_per_s"])
    lines = [f"this tree against {a.rev}, {a.threads} threads, best of {a.rounds} alternating rounds.", "",
             "| measure | before | after | ratio |", "|---|---|---|---|",
             f"| BiMambaStack(64, 2) fwd+bwd (16, 384, 64), ms | {enc['before']:.1f} | {enc['after']:.1f} | "
             f"{enc['before'] / enc['after']:.2f}x faster |",
             f"| training step at the cpu profile, images/s | {ips['before']:.1f} | {ips['after']:.1f} | "
             f"{ips['after'] / ips['before']:.2f}x |"]
    text = "\n".join(lines)
    print(text)
    rows = {"rev": a.rev, "encoder_ms": enc, "images_per_s": ips, "encoder_speedup": enc["before"] / enc["after"],
            "throughput_ratio": ips["after"] / ips["before"]}
    write_results(a.out, "against_baseline.py", argv or sys.argv[1:], text, rows)
    return rows


if __name__ == "__main__":
    main()
