"""Build, check and report the shipped weights of the notebook models.

    python -m ginr_common.release --names standard_fourier --seed 0     # train or reuse, evaluate, write
    python -m ginr_common.release --verify                              # re-measure every shipped number
    python -m ginr_common.release --readme                              # rewrite the README's results block
    python -m ginr_common.release --names flow_sparse --reevaluate      # re-measure with today's evaluation

For each name: train (or reuse, or resume) its cpu-profile run in checkpoints/<name>-<hash>,
evaluate the run's best.pt on the held-out test photographs, and write
ginr_common/weights/<name>/ with model.safetensors, config.json and manifest.json. The manifest
records the training command, the training configuration, the data's identity (with its sha256),
the commit of the code, the sha256 of each weights file (checked at every load), the evaluation's
options and every number it measured (``results``). ``--verify`` evaluates the shipped weights
again with those options and compares every number with the manifest's (``TOLERANCE``); the
README's results block is generated from the manifests (``readme_block``) and a test keeps the
two equal. ``--reevaluate`` evaluates the shipped weights (untouched) with the current evaluation
code and its default options (``--solver`` for a flow model) and records those results in the
manifest with the commit that measured them (``evaluation_commit``).
"""
import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from ginr_common._io import write_json, write_text
from ginr_common.baselines import bicubic, interpolate_sparse
from ginr_common.checkpoints import (PRETRAINED, WEIGHTS, flat, load_checkpoint, load_pretrained, pretrained_manifest,
                                     save_pretrained)
from ginr_common.configs import config_json, default_data, get_config, run_name
from ginr_common.data import load_dataset, load_sr_pairs
from ginr_common.evaluate import evaluate_model
from ginr_common.flow.sampler import SOLVERS
from ginr_common.metrics import psnr
from ginr_common.tasks.sparse_flow import observe
from ginr_common.viz import image_row
from ginr_common.train import CHECKPOINTS, fit

README = Path(__file__).resolve().parents[1] / "README.md"
EVAL_OPTIONS = ("n_images", "k", "steps", "solver")   # the flow evaluation's options, as its results record them
# how far a re-measured number may lie from the manifest's: dB (PSNR) absolute, SSIM absolute, ratios
# (total variation, grid artifact) relative; timings are not compared, counts and settings must be equal
TOLERANCE = {"psnr": 0.05, "ssim": 0.002, "ratio": 0.01}


def eval_options(results):
    """The options of the evaluation that produced ``results`` (what ``evaluate_model`` takes)."""
    return {**{k: results[k] for k in EVAL_OPTIONS if k in results}, **({"degradations": True} if "degradations" in
                                                                         results else {})}


def measure(model, name, options):
    """The shipped evaluation of ``model`` (the task of config ``name``) with ``options``: its results."""
    return evaluate_model(model, name, progress=False, **options)[0]


def compare(measured, recorded):
    """The numbers of ``recorded`` (a manifest's results) that ``measured`` does not reproduce within
    ``TOLERANCE``: a list of "key: recorded -> measured" lines (empty when all agree)."""
    got, want = flat(measured), flat(recorded)
    bad = []
    for key, w in want.items():
        leaf = key.rsplit(".", 1)[-1]
        if key in ("checkpoint", "step", "data") or leaf.startswith("seconds"):
            continue       # where the weights came from, and timings: not re-measurable
        if key not in got:
            bad.append(f"{key}: {w} recorded, not measured")
            continue
        g = got[key]
        if isinstance(w, float):
            if leaf.startswith("psnr"):
                ok = abs(g - w) <= TOLERANCE["psnr"]
            elif leaf == "ssim":
                ok = abs(g - w) <= TOLERANCE["ssim"]
            else:
                ok = abs(g - w) <= TOLERANCE["ratio"] * abs(w)
            if not ok or not math.isfinite(g):
                bad.append(f"{key}: {w:.4f} recorded, {g:.4f} measured")
        elif g != w:
            bad.append(f"{key}: {w!r} recorded, {g!r} measured")
    return bad


def verify(name):
    """Re-measure the shipped model ``name`` with its manifest's evaluation options; the lines
    where the manifest's results are not reproduced (empty: every number holds)."""
    results = pretrained_manifest(name)["results"]
    return compare(measure(load_pretrained(name), name, eval_options(results)), results)


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def release(name, seed=0, profile="cpu"):
    cfg = get_config(name, profile)
    cfg.seed = seed
    data = default_data(cfg)
    ck = CHECKPOINTS / run_name(cfg, data)
    t0 = time.time()
    metrics = fit(cfg, data, out=ck, resume=True)
    model, ckpt = load_checkpoint(ck / "best.pt")
    # image super-resolution is also measured on inputs made by each degradation (ginr_common.degradations)
    options = {"degradations": True} if cfg.sr_scales and len(cfg.model.input_size) == 2 and cfg.task != "sparse_flow" \
        else {}
    # evaluated here, every time: an eval.json beside the checkpoint may come from other options; a flow model's
    # sampling temperatures are calibrated on the validation split first and shipped with its weights
    record = {"checkpoint": str(ck / "best.pt"), "step": ckpt["train_state"].get("step"), "data": data}
    results, _ = evaluate_model(model, cfg, ck, data, False, record, calibrate=True, **options)
    calibration = results.pop("calibration", None)
    model.eval()
    manifest = {
        "name": name,
        "training_command": f"python -m ginr_common.train --config {name} --profile {profile} --seed {seed}",
        "release_command": f"python -m ginr_common.release --names {name} --seed {seed} --profile {profile}",
        "profile": profile, "seed": seed, "commit": commit(), "data": ckpt.get("data"),
        "best_step": ckpt["train_state"].get("step"), "train_seconds": metrics.get("train_seconds"),
        "train_config": config_json(cfg), **({"calibration": calibration} if calibration else {}), "results": results,
        "seconds_to_build": round(time.time() - t0),
    }
    return save_pretrained(model, WEIGHTS / name, manifest)


def reevaluate(name, **changes):
    """Evaluate the shipped weights of ``name`` (unchanged) again with the current evaluation, the
    manifest's options updated by ``changes``, and record the results in its manifest (with
    ``evaluation_commit``). Returns the manifest's path."""
    manifest = pretrained_manifest(name)
    old = manifest["results"]
    results = measure(load_pretrained(name), name, {**eval_options(old), **changes})
    manifest["results"] = {**{k: old[k] for k in ("checkpoint", "step", "data") if k in old}, **results}
    manifest["evaluation_commit"] = commit()
    return write_json(manifest, WEIGHTS / name / "manifest.json")


NOTEBOOKS = {"standard_fourier": ("01", "01_standard_fourier.ipynb", "standard Fourier features + ResidualBlocks"),
             "lp_latent": ("01", "01_standard_fourier.ipynb", "the LP latent alone (the reference design's GINR)"),
             "gaussian_fourier": ("02", "02_gaussian_fourier.ipynb", "Gaussian Fourier features, super-resolution"),
             "scent": ("03", "03_scent_decoder.ipynb", "SCENT-style decoder"),
             "flow_sparse": ("04", "04_flow_matching_sparse.ipynb", "flow matching from 20% of the pixels"),
             "volume": ("05", "05_volumes.ipynb", "3-D volumes: MRI at any resolution")}
BLOCK = re.compile(r"(<!-- results: generated .*? -->\n)(.*?)(<!-- /results -->)", re.S)


def _gain(x, word=("above", "below")):
    return f"{abs(x):.2f} dB {word[0] if x >= 0 else word[1]}"


def readme_block(manifests=None):
    """The README's results paragraph and table, from the shipped models' manifests."""
    man = manifests or {name: pretrained_manifest(name) for name in PRETRAINED}
    rows, gains = [], []
    for name, m in man.items():
        num, nb, what = NOTEBOOKS[name]
        r = m["results"]
        link = f"[{num}](notebooks/{nb}) {what}"
        trained = f"{m['train_seconds'] / 60:.0f} min, {m['profile']} profile (kept: step {m['best_step']})"
        if "super_resolution" in r and "trilinear" in r["super_resolution"]["64"]:
            sr = r["super_resolution"]["64"]
            vol = (sr["model"]["psnr"], sr["trilinear"]["psnr"])
            rows.append(f"| {link} | `{name}` | reconstruction of unseen 32^3 MRI tiles: {r['test']['psnr']:.2f} dB; "
                        f"render x2 (64^3): {vol[0]:.2f} dB | trilinear x2: {vol[1]:.2f} dB | {trained} |")
        elif "super_resolution" in r:
            sr = r["super_resolution"]
            mod, bic = ([sr[s][k]["psnr"] for s in ("64", "128")] for k in ("model", "bicubic"))
            if name == "lp_latent":     # the latent alone: what it holds, not a rival of bicubic
                c = json.loads(m["train_config"])["model"]
                size = c["num_lp"] * c["dim"] / (math.prod(c["input_size"]) * c["in_channels"])
                latent = (f"the LP latent alone ({c['num_lp']} LPs of {c['dim']} numbers, {size:.2f}x the pixels' "
                          f"size) reconstructs unseen 32x32 tiles at {r['test']['psnr']:.2f} dB")
            else:
                gains.append((num, mod[0] - bic[0], mod[1] - bic[1]))
            rows.append(f"| {link} | `{name}` | reconstruction of unseen 32x32 tiles: {r['test']['psnr']:.2f} dB; render "
                        f"x2 / x4: {mod[0]:.2f} / {mod[1]:.2f} dB | bicubic x2 / x4: {bic[0]:.2f} / {bic[1]:.2f} dB | "
                        f"{trained} |")
        else:
            f, z = r["free"], r["zero_shot"]
            k = r["k"]
            rows.append(f"| {link} | `{name}` | unobserved pixels ({r['n_images']} tiles), mean of {k} samples / one "
                        f"sample: {f[f'mean_{k}']['psnr_unobserved']:.2f} / {f['sample']['psnr_unobserved']:.2f} dB; "
                        f"zero-shot 64 / 128 (mean of 4): {z['64']['mean_4']['psnr']:.2f} / "
                        f"{z['128']['mean_4']['psnr']:.2f} dB | linear interpolation: "
                        f"{f['linear']['psnr_unobserved']:.2f} dB; linear + bicubic 64 / 128: "
                        f"{z['64']['linear+bicubic']['psnr']:.2f} / {z['128']['linear+bicubic']['psnr']:.2f} dB | "
                        f"{trained} |")
            flow = (f[f"mean_{k}"]["psnr_unobserved"] - f["linear"]["psnr_unobserved"],
                    f["sample"]["psnr_unobserved"] - f["linear"]["psnr_unobserved"], f["sample"]["tv_ratio"], k)
    text = ["With the shipped weights, on the held-out test photographs: "
            + "; ".join(f"notebook {int(n)} renders {_gain(a)} bicubic at x2 and {_gain(b)} it at x4" for n, a, b in gains)]
    if "lp_latent" in man:
        text.append(latent)
    if "volume" in man:
        text.append(f"notebook 5 renders held-out MRI slabs at x2 {_gain(vol[0] - vol[1])} trilinear interpolation")
    if "flow_sparse" in man:
        text.append(f"notebook 4's mean of {flow[3]} samples is {_gain(flow[0])} linear interpolation on the "
                    f"unobserved pixels, one sample {_gain(flow[1])} it with a total variation {flow[2]:.2f}x the "
                    "truth's (a sample keeps texture that the mean averages away).")
    table = ["| notebook | model | headline (held-out photographs and MRI) | baseline | training (2 CPU cores) |",
             "|---|---|---|---|---|", *rows]
    return "; ".join(text) + "\n\n" + "\n".join(table) + "\n"


def write_readme(path=README):
    """Rewrite the generated results block of the README from the manifests; returns the path."""
    text = Path(path).read_text()
    if not BLOCK.search(text):
        raise ValueError(f"{path} has no generated results block (<!-- results: generated ... --> ... "
                         "<!-- /results -->)")
    write_text(path, BLOCK.sub(lambda m: m.group(1) + readme_block() + m.group(3), text))
    return path


def teaser(path, crop=9, tile=300):
    """The README's figure from the shipped models: a held-out 32x32 input rendered at 128 by
    standard_fourier beside bicubic and the real crop; flow_sparse's mean of 16 samples from 20% of a
    held-out tile beside linear interpolation and the tile."""
    lr, hr = (x[crop:crop + 1] for x in load_sr_pairs("test"))
    with torch.no_grad():
        sr = load_pretrained("standard_fourier").render(lr, hr.shape[2:]).clamp(0, 1)
    bic = bicubic(lr, hr.shape[2:])
    x = load_dataset("photos")["test"][tile][0][None]
    flow = load_pretrained("flow_sparse")
    oc, ov, grid, unobserved = observe(x, flow.config.observe_frac)
    img = lambda v: v.transpose(1, 2).reshape(x.shape)  # noqa: E731
    mean, _ = flow.posterior(oc, ov, grid, k=16, steps=8, generator=torch.Generator().manual_seed(0))
    lin = interpolate_sparse(oc, ov, grid, "linear")
    db = lambda p, t: f"{float(psnr(p, t)):.1f} dB"  # noqa: E731
    size = lambda t: "x".join(map(str, t.shape[2:]))  # noqa: E731
    scale = hr.shape[-1] // lr.shape[-1]
    fig = image_row([lr[0], bic[0], sr[0], hr[0], (x * (~unobserved).reshape(1, 1, *x.shape[2:]))[0], img(lin)[0],
                     img(mean)[0], x[0]],
                    [f"input {size(lr)}", f"bicubic x{scale}, {db(bic, hr)}", f"notebook 1 x{scale}, {db(sr, hr)}",
                     f"real {size(hr)}", f"{flow.config.observe_frac:.0%} observed", f"linear interp., {db(img(lin), x)}",
                     f"notebook 4, mean of 16, {db(img(mean), x)}", "real tile"], size=1.9)
    fig.savefig(path, dpi=130, pil_kwargs={"quality": 85})
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", nargs="+", default=list(PRETRAINED), choices=list(PRETRAINED))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--teaser", default=None, help="only write the README's figure from the shipped models to this path")
    p.add_argument("--verify", action="store_true",
                   help="re-measure the shipped models of --names against their manifests (exit 1 on a difference)")
    p.add_argument("--readme", action="store_true", help="only rewrite the README's results block from the manifests")
    p.add_argument("--reevaluate", action="store_true",
                   help="evaluate the shipped weights of --names again with the current evaluation; rewrite their "
                        "manifests' results (the weights are untouched)")
    p.add_argument("--solver", default=None, choices=SOLVERS, help="with --reevaluate, flow models: the ODE solver")
    a = p.parse_args(argv)
    if a.teaser:
        print(teaser(a.teaser), file=sys.stderr)
        return
    if a.readme:
        print(write_readme(), file=sys.stderr)
        return
    if a.reevaluate:
        for name in a.names:
            changes = {"solver": a.solver} if a.solver and "solver" in pretrained_manifest(name)["results"] else {}
            print(f"{name}: {reevaluate(name, **changes)}", file=sys.stderr)
        return
    if a.verify:
        failed = False
        for name in a.names:
            t0 = time.time()
            bad = verify(name)
            failed |= bool(bad)
            print(f"{name}: " + ("every number of the manifest reproduced" if not bad else
                                 "NOT reproduced:\n  " + "\n  ".join(bad)) + f" ({time.time() - t0:.0f} s)")
        sys.exit(1 if failed else 0)
    for name in a.names:
        out = release(name, a.seed, a.profile)
        print(f"{name}: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
