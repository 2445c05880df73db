"""Quality of the notebook models and their ablations on the held-out test photographs.

    python benchmarks/quality.py                                   # the three notebook models, cpu profile, seeds 0 1
    python benchmarks/quality.py --variants sf sf/global sf/lps --steps 400 --seeds 0 1 --out X
    python benchmarks/quality.py --variants gf gf/no-filter --steps 500 --seeds 0 --split val   # choose designs
    python benchmarks/quality.py --list                            # the variants

Each variant is a notebook configuration with one change (see VARIANTS). Each (variant, seed) is
trained in checkpoints/<config>-<hash of its settings> (a finished run is reused, a partial one
resumed), and its best.pt (selected on the validation photographs) is evaluated on the test
photographs: reconstruction of the 32x32 test tiles (PSNR, SSIM), and renders of the 32x32
downsamples of the HR test crops at 64 (x2) and 128 (x4) against the real crop, bicubic
upsampling of the same input beside it, with the grid-artifact ratio (``metrics.grid_artifact``).
Prints mean and spread over the random seeds, and the quality targets; writes results/<out>.md/.json.
"""
import argparse
import dataclasses
import json
import statistics
import sys

from _util import RESULTS, write_results

from ginr_common.configs import get_config, run_name
from ginr_common.decoders import LAINRConfig
from ginr_common.evaluate import evaluate_checkpoint
from ginr_common.train import CHECKPOINTS, fit


def _dec(**kw):
    return lambda c: setattr(c.model, "decoder", dataclasses.replace(c.model.decoder, **kw))


def _set(**kw):
    def f(c):
        for k, v in kw.items():
            obj, name = (c.model, k[6:]) if k.startswith("model_") else (c.options, k) if hasattr(c.options, k) \
                else (c, k)
            setattr(obj, name, v)
    return f


def _first(change):
    """Notebook 1's ablations run at the settings they were measured with: 2x2 patches, 256 input-grid
    and 512 HR pixels per image and step, 1500 steps."""
    def f(c):
        c.model.patch_size, c.options.lr_queries, c.options.sr_queries, c.steps = 2, 256, 512, 1500
        change(c)
    return f


def _latent_only(change):
    """The ablations of the latent decoder run without the pixel filter (its colour comes from the
    LPs and patch tokens alone), as they were first measured."""
    def f(c):
        c.model.pixel_filter = 0
        change(c)
    return _first(f)


GLOBAL_LAINR = LAINRConfig(hidden=128, n_blocks=2, heads=2, features="fourier", n_freqs=16, max_freq=32)
VARIANTS = {   # name: (config, change, what it tests)
    "sf": ("standard_fourier", None, "notebook 1: local decoder over LPs + patch tokens and its 8x8 pixel filter, "
           "multi-scale training"),
    "sf/lps": ("standard_fourier", _latent_only(_dec(sources=("lps",))),
               "local decoder reading the 4 nearest LPs only"),
    "sf/tokens": ("standard_fourier", _latent_only(_dec(sources=("tokens",))),
                  "local decoder reading the 4 nearest patch tokens only"),
    "sf/global": ("standard_fourier", _latent_only(_set(model_decoder=GLOBAL_LAINR)),
                  "the reference design's global cross-attention decoder (LAINR), same training"),
    "sf/global+tokens": ("standard_fourier",
                         _latent_only(_set(model_decoder=dataclasses.replace(GLOBAL_LAINR, local_tokens=True))),
                         "global cross-attention to the LPs plus the 4 nearest patch tokens"),
    "sf/single-scale": ("standard_fourier", _latent_only(_set(sr_scales=(), lr_queries=None)),
                        "trained on the 32x32 tiles at their own pixel centres only"),
    "sf/pixel-tokens": ("standard_fourier", _latent_only(_set(model_pixel_tokens=True)),
                        "patch tokens plus a projection of each patch's own pixels"),
    "sf/lp16": ("standard_fourier", _latent_only(_set(model_num_lp=16)), "16 LPs (4x4 lattice) instead of 64"),
    "sf/lp256": ("standard_fourier", _latent_only(_set(model_num_lp=256)), "256 LPs (16x16 lattice)"),
    "sf/transformer": ("standard_fourier", _latent_only(_set(model_mixer="transformer")),
                       "a self-attention encoder of the same width and depth instead of BiMamba"),
    # the notebook 2 ablations below were measured without the moving average (ema=0), as pinned here
    "gf": ("gaussian_fourier", None, "notebook 2: correction on top of bicubic with the 8x8 pixel filter, x1-x4, "
           "moving average of the weights"),
    "gf/no-skip": ("gaussian_fourier", _set(ema=0.0, model_input_skip=False), "without the bicubic input skip"),
    "gf/no-filter": ("gaussian_fourier", _set(ema=0.0, model_pixel_filter=0, lr_weight=0.5),
                     "without the pixel filter, half the loss on the input grid (the earlier notebook 2)"),
    "gf/filter4": ("gaussian_fourier", _set(ema=0.0, model_pixel_filter=4), "a 4x4 pixel filter instead of 8x8"),
    "gf/latent-only": ("gaussian_fourier", _set(ema=0.0, model_pixel_filter=0), "no pixel filter: the residual from the "
                       "LPs and patch tokens alone"),
    "gf/latent-only+pixel-tokens": ("gaussian_fourier", _set(ema=0.0, model_pixel_filter=0, model_pixel_tokens=True),
                                    "no pixel filter; each patch token adds a projection of its own pixels"),
    "gf/hr-only": ("gaussian_fourier", _set(ema=0.0, lr_weight=0.0), "all of the loss on the HR pixels"),
    "gf/queries-1024": ("gaussian_fourier", _set(ema=0.0, sr_queries=1024), "1024 HR pixels per image and step (512)"),
    "gf/no-ema": ("gaussian_fourier", _set(ema=0.0), "the trained weights themselves, no moving average"),
    "sf/previous": ("standard_fourier", _first(lambda c: None),
                    "2x2 patches, 256 + 512 pixels per image and step, 1500 steps (the previous notebook 1)"),
    "sf/patch-4": ("standard_fourier", _first(_set(model_patch_size=4)),
                   "4x4 patches: 64 tokens + 64 LPs through the encoder instead of 256 + 64"),
    "sf/patch-4+q256": ("standard_fourier", _first(_set(model_patch_size=4, sr_queries=256)),
                        "4x4 patches and 256 HR pixels per image and step (512)"),
    "sf/patch-4+q256+3000": ("standard_fourier", _first(_set(model_patch_size=4, sr_queries=256, steps=3000)),
                             "4x4 patches, 256 HR pixels per image and step, 3000 steps (the same ~10 minutes)"),
    "sf/patch-4+q128+256+3000": ("standard_fourier", _first(_set(model_patch_size=4, lr_queries=128, sr_queries=256,
                                                                 steps=3000)),
                                 "4x4 patches, 128 input-grid + 256 HR pixels per image and step, 3000 steps"),
    "sf/no-filter": ("standard_fourier", _first(_set(model_pixel_filter=0)),
                     "without the pixel filter: the colour from the LPs and patch tokens alone"),
    "scent": ("scent", None, "notebook 3: SCENT cross-attention + locality bias + the 4 nearest patch tokens, a "
                             "residual over bicubic + 8x8 pixel filter, moving average of the weights"),
    "scent/no-tokens": ("scent", _dec(local_tokens=False), "SCENT reading the LPs only (global attention)"),
    "scent/previous": ("scent", _set(task="recon", model_input_skip=False, model_pixel_filter=0, ema=0.0),
                       "the previous release: the image decoded from scratch (no residual over bicubic, no pixel filter), the last "
                       "weights (no moving average), selected on reconstruction"),
}
MAIN = ["sf", "gf", "scent"]


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


def run(variant, profile, seed, steps, split="test"):
    config, change, _ = VARIANTS[variant]
    cfg = get_config(config, profile)
    cfg.seed = seed
    if steps:
        cfg.steps = steps
        cfg.val_every = cfg.ckpt_every = max(1, steps // 4)
    if change:
        change(cfg)
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
            **{f"x{int(s) // 32}_grid_{k}": sr[s][k]["grid"] for s in sr for k in ("model", "bicubic")}}


KEYS = ["test_psnr", "test_ssim", "x2_model", "x2_bicubic", "x4_model", "x4_bicubic", "x2_grid_model",
        "x2_grid_bicubic", "train_seconds"]


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
    if "sf" in t:
        v = t["sf"]
        out.append(f"notebook 1 reconstruction >= 32 dB: {v['test_psnr'][0]:.2f} dB -> "
                   f"{'met' if v['test_psnr'][0] >= 32 else 'NOT met'}")
        d = v["x2_model"][0] - v["x2_bicubic"][0]
        out.append(f"notebook 1 render 32 -> 64 >= bicubic - 1.5 dB: {v['x2_model'][0]:.2f} vs {v['x2_bicubic'][0]:.2f}"
                   f" ({d:+.2f} dB) -> {'met' if d >= -1.5 else 'NOT met'}; grid artifact {v['x2_grid_model'][0]:.2f}"
                   f" (bicubic {v['x2_grid_bicubic'][0]:.2f})")
    if "gf" in t:
        v = t["gf"]
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
    p.add_argument("--variants", nargs="+", default=MAIN, choices=sorted(VARIANTS))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=None, help="override the profile's steps (ablations at a smaller budget)")
    p.add_argument("--out", default=str(RESULTS / "quality"))
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="score on the held-out test photographs (default) or on the validation photographs "
                        "(for choosing designs); the columns keep their names")
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    if a.list:
        for k, (c, _, what) in VARIANTS.items():
            print(f"{k:18s} {c:17s} {what}")
        return
    rows = [run(v, a.profile, s, a.steps, a.split) for v in a.variants for s in a.seeds]
    t = summarise(rows)
    pm = lambda x, f=".2f": f"{x[0]:{f}} ± {x[1]:{f}}"  # noqa: E731
    lines = [f"profile {a.profile}{f', {a.steps} steps' if a.steps else ''}, seeds {a.seeds} (mean ± half the "
             "spread); " + ("test = astronaut + stereo motorcycle (held-out photographs). Reconstruction: 497 "
                            "test tiles 32x32. Renders: 46 HR test crops" if a.split == "test" else
                            "scored on the VALIDATION photographs (chelsea, grace_hopper; the 'test' columns are its tiles and "
                            "crops). Renders: its HR crops") +
             ", input = their 32x32 downsample, x2 = 64, x4 = 128 against the real "
             "crop. grid = error power at the patch period over its ring (bicubic's beside it).", "",
             "| variant | what | test PSNR | SSIM | x2 model | x2 bicubic | x4 model | x4 bicubic | grid x2 (bicubic) "
             "| train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for v, r in t.items():
        lines.append(f"| {v} | {VARIANTS[v][2]} | {pm(r['test_psnr'])} | {pm(r['test_ssim'], '.3f')} | "
                     f"{pm(r['x2_model'])} | {r['x2_bicubic'][0]:.2f} | {pm(r['x4_model'])} | {r['x4_bicubic'][0]:.2f} "
                     f"| {r['x2_grid_model'][0]:.2f} ({r['x2_grid_bicubic'][0]:.2f}) | {r['train_seconds'][0]:.0f} |")
    g = targets(t) if a.split == "test" else []
    lines += ["", *[f"- {x}" for x in g]]
    text = "\n".join(lines)
    print("\n" + text)
    write_results(a.out, "quality.py", argv or sys.argv[1:], text, {"rows": rows, "summary": t, "targets": g})
    print(json.dumps(g, indent=1))
    return rows


if __name__ == "__main__":
    main()
