"""Sparse field reconstruction (notebook 4): the flow model against interpolation on held-out photographs.

    python benchmarks/sparse_quality.py                       # cpu profile, seeds 0 1: 32 test tiles, k = 16, 8 steps
    python benchmarks/sparse_quality.py --experiments flow_sparse flow/no-mixer --seeds 0
    python benchmarks/sparse_quality.py --profile smoke --seeds 0 --n-images 8 --k 2 --steps 4 --n-hr 2

Each (experiment, seed) trains flow_sparse (at --profile) or an experiment file (its ablations under
ginr_common/experiments/flow/, each stating what it changes) in checkpoints/<name>-<hash of its settings> (a finished run is reused, a partial one resumed) and
evaluates its best.pt (selected on the validation photographs; its sampling temperatures calibrated there
too unless --uncalibrated) on tiles of the test photographs
with the fixed evaluation masks (20% observed, seed 42): PSNR and SSIM on the full image, PSNR on
the unobserved pixels, the total-variation ratios to the truth (of the image and of its colour,
``metrics.chroma``), for the model's one-shot estimate,
one sample and the means of 4 and k samples, free and holding the observed pixels; nearest and
linear interpolation (scipy griddata) on the same masks. Zero-shot: the mean of 4 samples at 64,
96, 128 against the real crop, beside bicubic upsampling of the linear interpolation. How one
sample changes as the solver refines (8, 16, 32 steps of the exponential solver and of Euler; the
same noise). Times one 128x128 sample (16 steps; best of 3 in a separate process) with its peak memory. Prints mean and spread over the training seeds and
the targets; writes results/<out>.md and .json.
"""
import argparse
import os
import statistics
import subprocess
import sys

import torch
from _util import RESULTS, peak_rss_rise, track_live_memory, write_results

from ginr_common.checkpoints import load_checkpoint
from ginr_common.configs import experiments, get_config, load_experiment, run_name
from ginr_common.data import load_dataset
from ginr_common.evaluate import evaluate_checkpoint
from ginr_common.flow.sampler import SOLVERS
from ginr_common.fourier import make_grid
from ginr_common.tasks.sparse_flow import one_sample_by_steps
from ginr_common.train import CHECKPOINTS, fit


TIME_128 = """import sys, time, torch
from ginr_common.checkpoints import load_checkpoint
from ginr_common.fourier import make_grid
model, _ = load_checkpoint(sys.argv[1])
oc, ov, q = make_grid((32, 32))[None, ::5], torch.rand(1, 205, 3), make_grid((128, 128))[None]
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    model.sample(oc, ov, q, steps=16, generator=torch.Generator().manual_seed(0))
    best = min(best, time.perf_counter() - t0)
print(best)"""


STEPS = (8, 16, 32)


def test_tiles(n):
    """The evaluation's test tiles (``SparseFlowTask.evaluate``: n spread over the test split)."""
    test = load_dataset("photos")["test"]
    return torch.stack([test[int(i)][0] for i in torch.linspace(0, len(test) - 1, min(n, len(test))).long()])


def summary(vals):
    return (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(vals, nd=2):
    m, s = summary(vals)
    return f"{m:.{nd}f} ± {s:.{nd}f}" if len(vals) > 1 else f"{m:.{nd}f}"


def main(argv=None):
    if argv is None:
        track_live_memory()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--experiments", "--variants", nargs="+", default=["flow_sparse"], dest="variants",
                   help="flow_sparse (at --profile) and named experiments of it (flow/*: python -m ginr_common.train "
                        "--list-experiments) or experiment files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-images", type=int, default=32)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--solver", default="exponential", choices=SOLVERS)
    p.add_argument("--n-hr", type=int, default=8, help="HR test crops for the zero-shot rows")
    p.add_argument("--uncalibrated", action="store_true",
                   help="sample at temperature 1 (the model's own draws) instead of the temperatures calibrated on the "
                        "validation photographs (tasks.sparse_flow.calibrate), as the shipped weights are")
    p.add_argument("--out", default="sparse_quality")
    a = p.parse_args(argv)

    runs = {}
    for v in a.variants:
        for seed in a.seeds:
            cfg = _cfg(a.profile, v, seed)
            ck = CHECKPOINTS / run_name(cfg, "photos")
            m = fit(cfg, "photos", out=ck, resume=True)
            res, _ = evaluate_checkpoint(ck / "best.pt", "photos", calibrate=not a.uncalibrated, n_images=a.n_images,
                                         k=a.k, steps=a.steps, solver=a.solver, n_hr=a.n_hr, sizes=(64, 96, 128),
                                         independent=True)
            model, _ = load_checkpoint(ck / "best.pt")
            model.temperature.copy_(torch.tensor(res["temperature"]))
            tiles = test_tiles(a.n_images)
            res["by_steps"] = {sv: one_sample_by_steps(model, tiles, STEPS, sv) for sv in (a.solver, "euler")}
            runs[(v, seed)] = (res, m)

    ck0 = CHECKPOINTS / run_name(_cfg(a.profile, a.variants[0], a.seeds[0]), "photos") / "best.pt"
    model, _ = load_checkpoint(ck0)
    oc, ov = make_grid((32, 32))[None, ::5], torch.rand(1, 205, 3)
    q = make_grid((128, 128))[None]
    sample = lambda: model.sample(oc, ov, q, steps=16, generator=torch.Generator().manual_seed(0))  # noqa: E731
    mem128 = peak_rss_rise(sample) / 2**20
    # the time in a separate process with the ordinary allocator (this one serves every block by mmap so
    # that its resident memory tracks live memory, which slows allocation-heavy code)
    t128 = float(subprocess.run([sys.executable, "-c", TIME_128, str(ck0)], capture_output=True, text=True, check=True,
                                env={k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}).stdout)

    mean_k = f"mean_{a.k}"
    lines = [f"profile {a.profile}, seeds {a.seeds}: {a.n_images} test tiles (fixed masks, 20% observed), "
             f"{a.solver} {a.steps} steps, k = {a.k}. Mean ± spread over the training seeds. Sampling temperatures "
             "(brightness, colour): " + ", ".join(f"seed {s} {tuple(runs[(a.variants[0], s)][0]['temperature'])}"
                                                  for s in a.seeds)
             + ("" if a.uncalibrated else " (calibrated on the validation photographs)") + ".", ""]
    rows = []
    for v in a.variants:
        rs = [runs[(v, s)][0] for s in a.seeds]
        secs = [runs[(v, s)][1]["train_seconds"] for s in a.seeds]
        lines += [f"### {v}: {experiments().get(v, 'flow_sparse, ' + a.profile + ' profile')} (training {statistics.mean(secs):.0f} s)", "",
                  "| method | known pixels | PSNR | PSNR unobserved | SSIM | TV / truth | chroma TV / truth | s per image |",
                  "|---|---|---|---|---|---|---|---|"]
        for mode in ("free", "hold_known"):
            for name in rs[0][mode]:
                vals = {key: [r[mode][name][key] for r in rs]
                        for key in ("psnr", "psnr_unobserved", "ssim", "tv_ratio", "chroma_tv_ratio")}
                sec = rs[0][mode][name].get("seconds_per_image")
                rows.append({"variant": v, "mode": mode, "method": name, **{k: summary(x) for k, x in vals.items()}})
                lines.append(f"| {name} | {'held' if mode == 'hold_known' else 'free'} | {fmt(vals['psnr'])} | "
                             f"{fmt(vals['psnr_unobserved'])} | {fmt(vals['ssim'], 3)} | {fmt(vals['tv_ratio'])} | "
                             f"{fmt(vals['chroma_tv_ratio'])} | "
                             f"{'' if sec is None else f'{sec:.3f}'} |")
        lines += ["", f"Zero-shot ({rs[0]['zero_shot_note']}):", "",
                  "| size | mean of 4 | one sample | linear+bicubic | sample TV / truth |", "|---|---|---|---|---|"]
        for s in rs[0]["zero_shot"]:
            z = [r["zero_shot"][s] for r in rs]
            mk = next(k for k in z[0] if k.startswith("mean_"))
            lines.append(f"| {s} | {fmt([x[mk]['psnr'] for x in z])} | {fmt([x['sample']['psnr'] for x in z])} | "
                         f"{fmt([x['linear+bicubic']['psnr'] for x in z])} | "
                         f"{fmt([x['sample']['tv_ratio'] for x in z])} |")
        lines += ["", "One sample as the solver refines (the same noise; PSNR on the unobserved pixels, TV / truth, "
                  "chroma TV / truth; the mean of an antithetic pair's two draws):", "",
                  "| solver | " + " | ".join(f"{n} steps" for n in STEPS) + " |", "|---|" + "---|" * len(STEPS)]
        for sv in rs[0]["by_steps"]:
            cell = lambda n: " / ".join(fmt([r["by_steps"][sv][n][key] for r in rs])   # noqa: E731
                                        for key in ("psnr_unobserved", "tv_ratio", "chroma_tv_ratio"))
            lines.append(f"| {sv} | " + " | ".join(cell(n) for n in STEPS) + " |")
        lines.append("")

    rs = [runs[(a.variants[0], s)][0] for s in a.seeds]
    free, lin = [r["free"] for r in rs], statistics.mean(r["free"]["linear"]["psnr_unobserved"] for r in rs)
    mk = statistics.mean(f[mean_k]["psnr_unobserved"] for f in free)
    full, ss = statistics.mean(f[mean_k]["psnr"] for f in free), statistics.mean(f[mean_k]["ssim"] for f in free)
    tv = statistics.mean(f["sample"]["tv_ratio"] for f in free)
    one = statistics.mean(f["sample"]["psnr_unobserved"] for f in free)
    zs = {s: (statistics.mean(r["zero_shot"][s]["mean_4"]["psnr"] for r in rs if "mean_4" in r["zero_shot"][s]),
              statistics.mean(r["zero_shot"][s]["linear+bicubic"]["psnr"] for r in rs))
          for s in rs[0]["zero_shot"]} if all("mean_4" in rs[0]["zero_shot"][s] for s in rs[0]["zero_shot"]) else {}
    ok = lambda c: "met" if c else "NOT met"  # noqa: E731
    by = {n: {key: statistics.mean(r["by_steps"][a.solver][n][key] for r in rs)
              for key in ("psnr_unobserved", "tv_ratio", "chroma_tv_ratio")} for n in STEPS}
    drift = max(abs(by[n]["psnr_unobserved"] - by[8]["psnr_unobserved"]) for n in STEPS)
    tv_drift = max(abs(by[n]["tv_ratio"] - by[8]["tv_ratio"]) for n in STEPS)
    chroma_tv = statistics.mean(f["sample"]["chroma_tv_ratio"] for f in free)
    goals = [f"posterior mean (k={a.k}), unobserved pixels >= linear + 1.5 dB: {mk:.2f} vs {lin:.2f} "
             f"({mk - lin:+.2f} dB) -> {ok(mk >= lin + 1.5)}",
             f"posterior mean, SSIM > 0.85: {ss:.3f} (full image {full:.2f} dB) -> {ok(ss > 0.85)}",
             f"one sample at 16 and 32 {a.solver} steps within 0.3 dB and 0.05 TV of 8: PSNR unobserved "
             + " / ".join(f"{by[n]['psnr_unobserved']:.2f}" for n in STEPS) + ", TV "
             + " / ".join(f"{by[n]['tv_ratio']:.3f}" for n in STEPS) + f" -> {ok(drift <= 0.3 and tv_drift <= 0.05)}",
             f"one sample's chroma total variation <= 1.3x the truth's: {chroma_tv:.2f} -> {ok(chroma_tv <= 1.3)}",
             f"one sample: total variation / the truth's in [0.8, 1.25]: {tv:.2f} -> {ok(0.8 <= tv <= 1.25)}",
             f"one sample, unobserved pixels >= linear - 2.5 dB: {one:.2f} vs {lin:.2f} ({one - lin:+.2f} dB) -> "
             f"{ok(one >= lin - 2.5)}"]
    goals += [f"zero-shot {s} (mean of 4) >= linear + bicubic + 0.3 dB: {m_:.2f} vs {b:.2f} ({m_ - b:+.2f} dB) -> "
              f"{ok(m_ >= b + 0.3)}" for s, (m_, b) in zs.items()]
    tv128 = statistics.mean(r["zero_shot"]["128"]["sample"]["tv_ratio"] for r in rs) if "128" in rs[0]["zero_shot"] \
        else float("nan")
    goals.append(f"one 128x128 sample's total variation / the truth's in [0.8, 1.25]: {tv128:.2f} -> "
                 f"{ok(0.8 <= tv128 <= 1.25)}")
    goals.append(f"one 128x128 sample, 16 steps: {t128:.2f} s (target < 5 s), peak memory rise {mem128:.0f} MB -> "
                 f"{ok(t128 < 5)}")
    lines += ["Targets (first variant, mean over the training seeds):", "", *[f"- {g}" for g in goals]]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(RESULTS / a.out, "sparse_quality.py", argv or sys.argv[1:], text,
                  {"rows": rows, "zero_shot": {f"{v}/{s}": runs[(v, s)][0]["zero_shot"] for v, s in runs},
                   "by_steps": {f"{v}/{s}": runs[(v, s)][0]["by_steps"] for v, s in runs},
                   "goals": goals, "sample_128_s": t128, "sample_128_peak_mb": mem128})


def _cfg(profile, variant, seed):
    cfg = get_config("flow_sparse", profile) if variant == "flow_sparse" else load_experiment(variant)
    cfg.seed = seed
    return cfg


if __name__ == "__main__":
    main()
