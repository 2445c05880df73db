"""Build the shipped weights of the notebook models.

    python -m ginr_common.release --names standard_fourier --seed 0
    python -m ginr_common.release --names gaussian_fourier scent flow_sparse

For each name: train (or reuse, or resume) its cpu-profile run in checkpoints/<name>-<hash>,
evaluate the run's best.pt on the held-out test photographs, and write
ginr_common/weights/<name>/ with model.safetensors, config.json and manifest.json. The manifest
records the training command, the training configuration, the data's identity (with its sha256),
the commit of the code, the measured numbers, and a ``check``: a quick evaluation that
``tests/test_pretrained.py`` repeats on the shipped weights.
"""
import argparse
import json
import subprocess
import sys
import time

import torch

from ginr_common.baselines import bicubic, interpolate_sparse
from ginr_common.checkpoints import PRETRAINED, WEIGHTS, load_checkpoint, load_pretrained, save_pretrained
from ginr_common.configs import config_json, get_config, run_name
from ginr_common.data import load_dataset, load_sr_pairs
from ginr_common.evaluate import evaluate_checkpoint
from ginr_common.metrics import psnr
from ginr_common.tasks.recon import evaluate_reconstruction
from ginr_common.tasks.sparse_flow import evaluate_sparse, observe
from ginr_common.viz import image_row
from ginr_common.train import CHECKPOINTS, fit

CHECK_TILES = 8          # flow models: test tiles of the quick check


def check(model, datasets):
    """The quick evaluation stored in a manifest and repeated by the tests: reconstruction models,
    PSNR on the whole test split; flow models, PSNR on the unobserved pixels of ``CHECK_TILES``
    test tiles (the estimate, one sample and the mean of 4 in antithetic pairs, Euler 8 steps, seed 0)."""
    test = datasets["test"]
    if hasattr(model, "sample"):
        pick = torch.linspace(0, len(test) - 1, CHECK_TILES).long()
        images = torch.stack([test[int(i)][0] for i in pick])
        r = evaluate_sparse(model, images, ks=(1, 4), steps=8)
        return {"protocol": f"sparse: {CHECK_TILES} test tiles, Euler 8 steps, seed 0, antithetic pairs, PSNR on "
                            "unobserved pixels",
                "psnr": {k: r[k]["psnr_unobserved"] for k in ("estimate", "sample", "mean_4")}}
    return {"protocol": "reconstruction of the test split at 32x32",
            "psnr": {"test": evaluate_reconstruction(model, test, with_ssim=False)["psnr"]}}


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def release(name, seed=0, profile="cpu"):
    cfg = get_config(name, profile)
    cfg.seed = seed
    ck = CHECKPOINTS / run_name(cfg, "photos")
    t0 = time.time()
    metrics = fit(cfg, "photos", out=ck, resume=True)
    model, ckpt = load_checkpoint(ck / "best.pt")
    done = ck / "eval.json"      # the default evaluation of this best.pt, when already run
    results = json.loads(done.read_text()) if done.exists() and done.stat().st_mtime > (ck / "best.pt").stat().st_mtime \
        else None
    if results is None or results.get("step") != ckpt["train_state"].get("step"):
        results, _ = evaluate_checkpoint(ck / "best.pt", "photos", progress=False)
    model.eval()
    manifest = {
        "name": name,
        "training_command": f"python -m ginr_common.train --config {name} --profile {profile} --seed {seed}",
        "release_command": f"python -m ginr_common.release --names {name} --seed {seed}",
        "profile": profile, "seed": seed, "commit": commit(), "data": ckpt.get("data"),
        "best_step": ckpt["train_state"].get("step"), "train_seconds": metrics.get("train_seconds"),
        "train_config": config_json(cfg), "results": results,
        "check": check(model, load_dataset("photos")),
        "seconds_to_build": round(time.time() - t0),
    }
    return save_pretrained(model, WEIGHTS / name, manifest)


def teaser(path, crop=9, tile=300):
    """The README's figure from the shipped models: a held-out 32x32 input rendered at 128 by
    standard_fourier beside bicubic and the real crop; flow_sparse's mean of 16 samples from 20% of a
    held-out tile beside linear interpolation and the tile."""
    lr, hr = (x[crop:crop + 1] for x in load_sr_pairs("test"))
    with torch.no_grad():
        sr = load_pretrained("standard_fourier").render(lr, (128, 128)).clamp(0, 1)
    bic = bicubic(lr, (128, 128))
    x = load_dataset("photos")["test"][tile][0][None]
    flow = load_pretrained("flow_sparse")
    oc, ov, grid, unobserved = observe(x, flow.config.observe_frac)
    img = lambda v: v.transpose(1, 2).reshape(1, 3, 32, 32)  # noqa: E731
    mean, _ = flow.posterior(oc, ov, grid, k=16, steps=8, generator=torch.Generator().manual_seed(0))
    lin = interpolate_sparse(oc, ov, grid, "linear")
    db = lambda p, t: f"{float(psnr(p, t)):.1f} dB"  # noqa: E731
    fig = image_row([lr[0], bic[0], sr[0], hr[0], (x * (~unobserved).reshape(1, 1, 32, 32))[0], img(lin)[0],
                     img(mean)[0], x[0]],
                    ["input 32x32", f"bicubic x4, {db(bic, hr)}", f"notebook 1 x4, {db(sr, hr)}", "real 128x128",
                     "20% observed", f"linear interp., {db(img(lin), x)}", f"notebook 4, mean of 16, {db(img(mean), x)}",
                     "real tile"], size=1.9)
    fig.savefig(path, dpi=130, pil_kwargs={"quality": 85})
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", nargs="+", default=list(PRETRAINED), choices=list(PRETRAINED))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--teaser", default=None, help="only write the README's figure from the shipped models to this path")
    a = p.parse_args(argv)
    if a.teaser:
        print(teaser(a.teaser), file=sys.stderr)
        return
    for name in a.names:
        out = release(name, a.seed, a.profile)
        print(f"{name}: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
