"""What the Makefile's allocator setting (``ALLOC``: glibc keeps freed memory for reuse instead of
returning every large block to the system) does to CPU training: ``train_throughput.py`` run in
fresh processes with glibc's defaults and with the setting, alternating, side by side in one run.
Reports the best unsplit step time of each, its ratio, and the processes' user and system CPU time
and peak resident memory.

    python benchmarks/allocator.py                                   # standard_fourier, cpu profile
    python benchmarks/allocator.py --config gaussian_fourier --rounds 3

Writes benchmarks/results/allocator.md and .json.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import RESULTS, write_results

HERE = Path(__file__).resolve().parent


def make_setting():
    """The ``ALLOC`` variables of the Makefile, as a dict."""
    line = re.search(r"^ALLOC\s*:=\s*(.+)$", (HERE.parent / "Makefile").read_text(), re.M).group(1)
    return dict(kv.split("=", 1) for kv in line.split())


def run(env, args):
    """One train_throughput.py process -> (its rows, wall s, user s, system s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / "train_throughput.py"), *args, "--out", f"{tmp}/r"], env=env,
                       check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rows = json.loads(Path(f"{tmp}/r.json").read_text())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return rows, wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="standard_fourier")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per process (train_throughput.py)")
    p.add_argument("--rounds", type=int, default=2, help="processes per setting, alternating")
    p.add_argument("--out", default=str(RESULTS / "allocator"))
    a = p.parse_args(argv)
    alloc = make_setting()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    settings = {"glibc defaults": base, " ".join(f"{k}={v}" for k, v in alloc.items()): {**base, **alloc}}
    args = ["--config", a.config, "--profile", a.profile, "--repeats", str(a.repeats)]
    best = {name: None for name in settings}
    for _ in range(a.rounds):
        for name, env in settings.items():
            rows, wall, user, sys_ = run(env, args)
            r = {"step_ms": rows["step_ms"], "wall_s": wall, "user_s": user, "sys_s": sys_,
                 "peak_rss_mb": rows["peak_rss_mb"]}
            print(name, {k: round(v, 1) for k, v in r.items()}, flush=True)
            if best[name] is None or r["step_ms"] < best[name]["step_ms"]:
                best[name] = r
    default, tuned = best.values()
    lines = [f"config {a.config}, profile {a.profile}: one training step (train_throughput.py, best of {a.repeats} "
             f"steps per process, best of {a.rounds} processes per setting, alternating)", "",
             "| allocator | step ms | process wall s | user s | system s | peak RSS MB |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['step_ms']:.1f} | {r['wall_s']:.1f} | {r['user_s']:.1f} | {r['sys_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} |" for name, r in best.items()]
    ratio = default["step_ms"] / tuned["step_ms"]
    lines += ["", f"Step time, glibc defaults over the Makefile's setting: {ratio:.2f}x"]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "allocator.py", argv if argv is not None else sys.argv[1:], text,
                  {"rows": best, "speedup": ratio, "setting": alloc, "args": vars(a)})
    return ratio


if __name__ == "__main__":
    main()
