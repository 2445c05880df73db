"""Evaluate a checkpoint of any task on the test split; writes eval.json and a figure.

    python -m ginr_common.evaluate --checkpoint checkpoints/<run>/best.pt [--data photos] [--sizes 64 128]
    python -m ginr_common.evaluate --checkpoint checkpoints/<flow run>/best.pt [--k 4 --steps 50]

Reconstruction and super-resolution models: mean per-image PSNR and SSIM (predictions clamped to
[0, 1], data range 1, scikit-image's SSIM) on the test split at native resolution, and renders of
the held-out photographs' HR test crops at --sizes against the real HR image beside bicubic
upsampling of the same input (sr.png). Flow models: one sample and the posterior mean of --k
samples against nearest and linear interpolation, and zero-shot renders (sparse.png).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ginr_common.checkpoints import load_checkpoint
from ginr_common.configs import train_config_from_checkpoint
from ginr_common.data import load_dataset, load_sr_pairs
from ginr_common.tasks import make_task


def evaluate_checkpoint(checkpoint, data="photos", out=None, progress=True, **options):
    """Load ``checkpoint``, run its task's evaluation (options: see the task's ``evaluate``) and
    write the results beside it (or in ``out``). Returns (results, task)."""
    torch.manual_seed(0)
    np.random.seed(0)
    model, ckpt = load_checkpoint(checkpoint, map_location="cpu")
    task = make_task(train_config_from_checkpoint(ckpt))
    out = Path(out or Path(checkpoint).parent)
    out.mkdir(parents=True, exist_ok=True)
    sr_pairs = load_sr_pairs("test")   # the held-out photographs' HR crops, whatever the training data
    results = task.evaluate(model, load_dataset(data), out, progress=progress, sr_pairs=sr_pairs, **options)
    results = {"checkpoint": str(checkpoint), "step": ckpt["train_state"].get("step"), "data": data, **results}
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    return results, task


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="photos", choices=["photos", "cifar10"])
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="render sizes (default 64 128; flow models: 64 96 128)")
    p.add_argument("--out", default=None, help="folder for eval.json and the figure (default: the checkpoint's)")
    p.add_argument("--n-images", type=int, default=64, help="flow models: test images at the input size")
    p.add_argument("--k", type=int, default=4, help="flow models: samples per image (posterior mean)")
    p.add_argument("--steps", type=int, default=50, help="flow models: Heun steps")
    a = p.parse_args(argv)
    options = {"sizes": tuple(a.sizes)} if a.sizes else {}
    if train_config_from_checkpoint(load_checkpoint(a.checkpoint)[1]).task == "sparse_flow":
        options.update(n_images=a.n_images, k=a.k, steps=a.steps)
    results, _ = evaluate_checkpoint(a.checkpoint, a.data, a.out, **options)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
