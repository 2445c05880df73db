"""What the notebooks share, so that each one shows only what is its own: the settings read from
the environment, the shipped model's recorded numbers, and training from scratch."""
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ginr_common.baselines import bicubic
from ginr_common.checkpoints import PRETRAINED, describe_pretrained, load_checkpoint, pretrained_manifest
from ginr_common.configs import config_json, default_data, default_profile, run_name
from ginr_common.data import resize
from ginr_common.evaluate import evaluate_model
from ginr_common.metrics import psnr
from ginr_common.model import render_image
from ginr_common.train import CHECKPOINTS, fit
from ginr_common.viz import LiveCurves, image_row, recon_summary, sparse_summary, training_curves


def settings():
    """(profile, train) from the environment, printed: GINR_PROFILE (smoke | cpu | long | full; default:
    full on CUDA, cpu otherwise) and whether the notebook trains its model from scratch at its end
    (GINR_TRAIN=1; the smoke profile, which CI runs, always does). Figures at 120 dpi."""
    profile = default_profile()
    train = os.environ.get("GINR_TRAIN", "1" if profile == "smoke" else "0") == "1"
    plt.rcParams["figure.dpi"] = 120
    print(f"profile {profile}; train from scratch: {train}")
    return profile, train


def shipped(name):
    """The shipped model ``name``: its description and the table of numbers its manifest records
    (which ``python -m ginr_common.release --verify`` measures again), as text."""
    results = pretrained_manifest(name)["results"]
    table = sparse_summary(results) if "free" in results else recon_summary(results)
    return f"{describe_pretrained(name)}\n{table}"


def results(name):
    """A committed results file of the benchmarks (``benchmarks/results/<name>.json``: the command that
    made it and its rows and summary), for drawing, without training anything."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file (benchmarks/results/ in a clone of the repository)")
    return json.loads(path.read_text())


def train_from_scratch(cfg, train=True, data=None, **evaluation):
    """Train the TrainConfig ``cfg`` in checkpoints/<name>-<hash of the settings>/ (a finished run
    is reused, a partial one resumed), with live curves, then evaluate its best checkpoint there
    (``evaluation``: options of the task's evaluation; a flow's sampling temperatures are calibrated on the
    validation split first) and print the table. Returns (metrics,
    results), or prints how to train and returns None when ``train`` is False."""
    name = cfg.model.name
    if not train:
        m = pretrained_manifest(name) if name in PRETRAINED else None
        made = (f"the shipped weights trained {m['train_seconds'] / 60:.0f} minutes on 2 CPU cores with the "
                f"{m['profile']} profile; " if m else "")
        print(f"Set TRAIN = True in the first cell (or GINR_TRAIN=1) to train this model from scratch: {made}"
              "the full profile is for a GPU.")
        return None
    print(config_json(cfg))
    data = data or default_data(cfg)
    run = CHECKPOINTS / run_name(cfg, data)
    metrics = fit(cfg, data, out=run, resume=True, on_step=LiveCurves(every=max(cfg.steps // 8, 1), title=name))
    training_curves(metrics["history"], f"{name}: best validation {metrics['best_val_psnr']:.2f} dB")
    model, _ = load_checkpoint(run / "best.pt")
    results, _ = evaluate_model(model, cfg, run, data, progress=False, calibrate=True, **evaluation)
    print(sparse_summary(results) if "free" in results else recon_summary(results))
    return metrics, results


@torch.no_grad()
def render_comparison(model, image, scale, truth=None):
    """``image`` (C, H, W) rendered by ``model`` at ``scale`` (``render_image``) beside bicubic
    upsampling, and ``truth`` (a larger image of the same view, resized to the render's size) with
    both PSNRs in the titles: a figure."""
    ours = render_image(model, image, scale=scale)
    ref = bicubic(image[None], tuple(ours.shape[1:]))[0]
    images, titles = [image, ref, ours], [f"input {tuple(image.shape[1:])}", f"bicubic x{scale}", f"model x{scale}"]
    if truth is not None:
        truth = resize(truth[None], tuple(ours.shape[1:]))[0]
        titles[1:] = [f"{t}: {float(psnr(x[None], truth[None])):.1f} dB" for t, x in zip(titles[1:], (ref, ours))]
        images, titles = images + [truth], titles + ["real image"]
    return image_row(images, titles, size=2.6)
