"""Shared by the benchmark scripts: best-of-N timing, peak resident memory, result files."""
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def run_with_live_memory(argv):
    """Run this script again in a child process with ``argv``, under the allocator of
    ``track_live_memory`` (its peaks are fair, but every large allocation there faults in fresh
    pages, which slows the timings of allocation-heavy code: time in this process, memory in the
    child). Returns the child's last line of output, parsed as JSON."""
    import subprocess

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    r = subprocess.run([sys.executable, sys.argv[0], *argv], env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the memory run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def track_live_memory():
    """Re-exec this script once with glibc serving every block >= 64 KiB by mmap (unmapped on
    free), so the resident set tracks live memory and its peak is a fair memory measure."""
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_rise(fn):
    """Peak rise of this process's resident set while fn() runs, sampled every 0.5 ms."""
    base = rss_bytes()
    top = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            top[0] = max(top[0], rss_bytes())
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    fn()
    stop.set()
    th.join()
    return max(top[0], rss_bytes()) - base


def measure(fn, repeats, memory=True):
    """(best seconds over ``repeats`` runs after one warm-up, peak RSS rise in bytes of one more
    run, or None). Memory is sampled in a separate run: the sampler thread would skew timing."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best, (peak_rss_rise(fn) if memory else None)


def machine():
    return (f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{platform.machine()})")


def write_results(out, script, argv, text, rows):
    """``out``.md (the command, date and table) and ``out``.json (the rows)."""
    out = str(out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".md").write_text(f"`python benchmarks/{script} {' '.join(argv)}`".replace(" `", "`")
                                 + f" on {machine()}, {time.strftime('%Y-%m-%d')}\n\n{text}\n")
    Path(out + ".json").write_text(json.dumps(rows, indent=1))
