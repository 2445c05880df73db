"""Quality of the notebook models and their ablations on the held-out test photographs.

    python benchmarks/quality.py                                   # the three notebook models, cpu profile, seeds 0 1
    python benchmarks/quality.py --experiments standard_fourier sf/global sf/lps --steps 400 --seeds 0 1 --out X
    python benchmarks/quality.py --experiments gaussian_fourier gf/no-filter --steps 500 --seeds 0 --split val
    python benchmarks/quality.py --list                            # the named experiments

Each experiment is a file under ginr_common/experiments/ (a notebook configuration, or an ablation
stating its differences from what it extends; any experiment file may be given by its path), the
same files ``python -m ginr_common.train --config-file NAME`` trains. Each (experiment, seed) is
trained in checkpoints/<config>-<hash of its settings> (a finished run is reused, a partial one
resumed), and its best.pt (selected on the validation photographs) is evaluated on the test
photographs: reconstruction of the 32x32 test tiles (PSNR, SSIM), and renders of the 32x32
downsamples of the HR test crops at 64 (x2) and 128 (x4) against the real crop, bicubic
upsampling of the same input beside it, with the grid-artifact ratio (``metrics.grid_artifact``).
Prints mean and spread over the random seeds, and the quality targets; writes results/<out>.md/.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _util import RESULTS, write_results

from ginr_common.configs import experiments, get_config, load_experiment, run_name
from ginr_common.evaluate import evaluate_checkpoint
from ginr_common.train import CHECKPOINTS, fit

MAIN = ["standard_fourier", "gaussian_fourier", "scent"]   # the notebook models; sf/*, gf/*, scent/*: their ablations


def score_on_validation(checkpoint):
    """The same measures on the validation photographs (for choosing designs; the test photographs
    are for reporting): its 32x32 tiles, and renders of its HR crops at x2 and x4."""
    from ginr_common.checkpoints import load_checkpoint
    from ginr_common.data import load_dataset
    from ginr_common.tasks.recon import evaluate_reconstruction, evaluate_sr

    model = load_checkpoint(checkpoint, map_location="cpu")[0]
    data = load_dataset("photos")
    sr, _ = evaluate_sr(model, *data["val_sr"], sizes=(64, 128))
    return {"test": evaluate_reconstruction(model, data["val"]), "super_resolution": sr}


def experiment_config(name, profile="cpu", seed=0, steps=None):
    """The TrainConfig of a named experiment (``profile``: a notebook config's profile), with its seed and
    optionally its length changed (options tied to the length keep their share, as ``train --steps``)."""
    cfg = get_config(name, profile) if name in MAIN else load_experiment(name)
    cfg.seed = seed
    if steps:
        cfg.options = cfg.options.for_steps(cfg.steps, steps)
        cfg.steps = steps
        cfg.val_every = cfg.ckpt_every = max(1, steps // 4)
    return cfg


# one process per measurement, glibc serving every block >= 64 KiB by mmap (so that the resident set tracks live
# memory): the checkpoint's model encodes a batch of 16 tiles and decodes them at x2 (64x64), best of 3
INFERENCE = """import json, sys, time, torch
sys.path.insert(0, sys.argv[2])
from _util import peak_rss_rise
from ginr_common.checkpoints import load_checkpoint
torch.manual_seed(0)
model, _ = load_checkpoint(sys.argv[1])
x = torch.rand(16, model.config.in_channels, *model.config.input_size)
go = lambda: model.render(x, [2 * s for s in model.config.input_size])
go()
mb = peak_rss_rise(go) / 2**20
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    go()
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "infer_ms": 1e3 * best, "peak_mb": mb}))"""


def inference_cost(checkpoint):
    """Parameters, the time to encode 16 tiles and render them at x2 (ms, best of 3) and the peak rise
    of resident memory while doing it (MB), measured in a fresh process."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    r = subprocess.run([sys.executable, "-c", INFERENCE, str(checkpoint), str(Path(__file__).parent)],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(variant, profile, seed, steps, split="test"):
    cfg = experiment_config(variant, profile, seed, steps)
    out = CHECKPOINTS / run_name(cfg, "photos")
    metrics = fit(cfg, "photos", out=out, resume=True)
    if split == "val":
        ev = score_on_validation(out / "best.pt")
    else:
        ev, _ = evaluate_checkpoint(out / "best.pt", "photos", sizes=(64, 128), progress=False)
    sr = ev["super_resolution"]
    return {"variant": variant, "seed": seed, "checkpoint": str(out / "best.pt"), "steps": metrics["steps"],
            "train_seconds": metrics["train_seconds"], "best_val_psnr": metrics["best_val_psnr"],
            "test_psnr": ev["test"]["psnr"], "test_ssim": ev["test"]["ssim"],
            **{f"x{int(s) // 32}_{k}": sr[s][k]["psnr"] for s in sr for k in ("model", "bicubic")},
            **{f"x{int(s) // 32}_grid_{k}": sr[s][k]["grid"] for s in sr for k in ("model", "bicubic")},
            **inference_cost(out / "best.pt")}


KEYS = ["test_psnr", "test_ssim", "x2_model", "x2_bicubic", "x4_model", "x4_bicubic", "x2_grid_model",
        "x2_grid_bicubic", "train_seconds", "params", "infer_ms", "peak_mb"]


def summarise(rows):
    out = {}
    for r in rows:
        out.setdefault(r["variant"], []).append(r)
    table = {}
    for v, rs in out.items():
        table[v] = {"seeds": [r["seed"] for r in rs]}
        for k in KEYS:
            vals = [r[k] for r in rs]
            table[v][k] = (statistics.mean(vals), (max(vals) - min(vals)) / 2 if len(vals) > 1 else 0.0)
    return table


def targets(t):
    out = []
    if "standard_fourier" in t:
        v = t["standard_fourier"]
        out.append(f"notebook 1 reconstruction >= 32 dB: {v['test_psnr'][0]:.2f} dB -> "
                   f"{'met' if v['test_psnr'][0] >= 32 else 'NOT met'}")
        d = v["x2_model"][0] - v["x2_bicubic"][0]
        out.append(f"notebook 1 render 32 -> 64 >= bicubic - 1.5 dB: {v['x2_model'][0]:.2f} vs {v['x2_bicubic'][0]:.2f}"
                   f" ({d:+.2f} dB) -> {'met' if d >= -1.5 else 'NOT met'}; grid artifact {v['x2_grid_model'][0]:.2f}"
                   f" (bicubic {v['x2_grid_bicubic'][0]:.2f})")
    if "gaussian_fourier" in t:
        v = t["gaussian_fourier"]
        for s, need in ((2, 1.0), (4, 0.5)):
            d = v[f"x{s}_model"][0] - v[f"x{s}_bicubic"][0]
            out.append(f"notebook 2 x{s} >= bicubic + {need} dB: {v[f'x{s}_model'][0]:.2f} vs "
                       f"{v[f'x{s}_bicubic'][0]:.2f} ({d:+.2f} dB) -> {'met' if d >= need else 'NOT met'}")
    if "scent" in t:
        v = t["scent"]
        out.append(f"notebook 3 reconstruction >= 36 dB: {v['test_psnr'][0]:.2f} dB -> "
                   f"{'met' if v['test_psnr'][0] >= 36 else 'NOT met'}")
        for s in (2, 4):
            d = v[f"x{s}_model"][0] - v[f"x{s}_bicubic"][0]
            out.append(f"notebook 3 x{s} >= bicubic: {v[f'x{s}_model'][0]:.2f} vs {v[f'x{s}_bicubic'][0]:.2f} "
                       f"({d:+.2f} dB) -> {'met' if d >= 0 else 'NOT met'}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", "--variants", nargs="+", default=MAIN, dest="variants",
                   help="named experiments (ginr_common/experiments/; --list names them) or experiment files")
    p.add_argument("--profile", default="cpu", help="the profile of the notebook configs among --experiments")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=None, help="override the profile's steps (ablations at a smaller budget)")
    p.add_argument("--out", default=str(RESULTS / "quality"))
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="score on the held-out test photographs (default) or on the validation photographs "
                        "(for choosing designs); the columns keep their names")
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    if a.list:
        for k, what in experiments().items():
            print(f"{k:28s} {what}")
        return
    rows = [run(v, a.profile, s, a.steps, a.split) for v in a.variants for s in a.seeds]
    about = experiments()
    t = summarise(rows)
    pm = lambda x, f=".2f": f"{x[0]:{f}} ± {x[1]:{f}}"  # noqa: E731
    budget = (f"profile {a.profile}" if set(a.variants) & set(MAIN) else "each experiment's own budget") + \
        (f", {a.steps} steps" if a.steps else "")
    lines = [f"{budget}, seeds {a.seeds} (mean ± half the "
             "spread); " + ("test = astronaut + stereo motorcycle (held-out photographs). Reconstruction: 497 "
                            "test tiles 32x32. Renders: 46 HR test crops" if a.split == "test" else
                            "scored on the VALIDATION photographs (chelsea, grace_hopper; the 'test' columns are its tiles and "
                            "crops). Renders: its HR crops") +
             ", input = their 32x32 downsample, x2 = 64, x4 = 128 against the real "
             "crop. grid = error power at the patch period over its ring (bicubic's beside it). params = parameters; "
             "inference = 16 tiles encoded and rendered at x2, fastest of 3, and the resident memory it adds at its peak; "
             "both averaged over the seeds.", "",
             "| experiment | what | test PSNR | SSIM | x2 model | x2 bicubic | x4 model | x4 bicubic | grid x2 (bicubic) "
             "| train s | params | inference ms | peak MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, r in t.items():
        lines.append(f"| {v} | {about.get(v, v)} | {pm(r['test_psnr'])} | {pm(r['test_ssim'], '.3f')} | "
                     f"{pm(r['x2_model'])} | {r['x2_bicubic'][0]:.2f} | {pm(r['x4_model'])} | {r['x4_bicubic'][0]:.2f} "
                     f"| {r['x2_grid_model'][0]:.2f} ({r['x2_grid_bicubic'][0]:.2f}) | {r['train_seconds'][0]:.0f} "
                     f"| {r['params'][0] / 1e3:.0f}k | {r['infer_ms'][0]:.0f} | {r['peak_mb'][0]:.0f} |")
    g = targets(t) if a.split == "test" else []
    lines += ["", *[f"- {x}" for x in g]]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "quality.py", argv or sys.argv[1:], text, {"rows": rows, "summary": t, "targets": g})
    print(json.dumps(g, indent=1))
    return rows


if __name__ == "__main__":
    main()
