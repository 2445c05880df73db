"""Evaluate a checkpoint of any task on the test split; writes eval.json and a figure.

    python -m ginr_common.evaluate --checkpoint checkpoints/<run>/best.pt [--data photos] [--sizes 64 128]
    python -m ginr_common.evaluate --checkpoint checkpoints/<flow run>/best.pt [--k 16 --steps 8 --solver exponential]

Reconstruction and super-resolution models: mean per-image PSNR and SSIM (predictions clamped to
[0, 1], data range 1, scikit-image's SSIM) on the test split at native resolution, and renders of
the held-out photographs' HR test crops at --sizes against the real HR image beside bicubic
upsampling of the same input (sr.png). Flow models: the model's estimate, one sample and the means
of 4 and --k samples against nearest and linear interpolation (sparse.png), and zero-shot renders
at 64, 96, 128 against linear interpolation upsampled bicubically (zero_shot.png).
"""
import argparse
import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ginr_common._io import write_json
from ginr_common.checkpoints import load_checkpoint
from ginr_common.configs import default_data, get_config, train_config_from_checkpoint
from ginr_common.data import load_dataset, load_sr_pairs
from ginr_common.flow.sampler import SOLVERS
from ginr_common.tasks import make_task


def evaluate_model(model, config, out=None, data=None, progress=True, record=None, calibrate=False, **options):
    """Run the evaluation of the task of ``config`` (a config name, trained with its cpu profile,
    or a TrainConfig) on ``model`` (options: see the task's ``evaluate``). Returns (results,
    predictions). With ``out``, writes there eval.json (the results after the entries of
    ``record``) and the task's figures. ``calibrate``: first set what the model takes from the
    validation split (``Task.calibrate``: a flow's sampling temperatures), recorded under
    ``calibration`` in the results."""
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = get_config(config, "cpu") if isinstance(config, str) else config
    data = data or default_data(cfg)
    task = make_task(cfg)
    m = cfg.model
    datasets = data if isinstance(data, dict) else load_dataset(data, size=m.input_size, channels=m.in_channels)
    # the test split's HR crops (a folder without large images has none); CIFAR-10: the held-out photographs'
    sr_pairs = datasets["test_sr"] if "test_sr" in datasets else load_sr_pairs("test")
    sr_pairs = sr_pairs if len(sr_pairs[0]) else None
    calibration = task.calibrate(model.eval(), datasets) if calibrate else None
    results, predictions = task.evaluate(model.eval(), datasets, progress=progress, sr_pairs=sr_pairs, **options)
    results = {**(record or {}), **({"calibration": dataclasses.asdict(calibration)} if calibration else {}), **results}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(results, out / "eval.json")
        for name, fig in task.figures(model, results, predictions).items():
            fig.savefig(out / name, dpi=150)
            plt.close(fig)
    return results, predictions


def evaluate_checkpoint(checkpoint, data=None, out=None, progress=True, calibrate=False, **options):
    """Load ``checkpoint``, run its task's evaluation (options: see the task's ``evaluate``) and
    write the results and figures beside it (or in ``out``). Returns (results, predictions)."""
    model, ckpt = load_checkpoint(checkpoint, map_location="cpu")
    out = Path(out or Path(checkpoint).parent)
    cfg = train_config_from_checkpoint(ckpt)
    data = data or default_data(cfg)
    record = {"checkpoint": str(checkpoint), "step": ckpt["train_state"].get("step"), "data": data}
    return evaluate_model(model, cfg, out, data, progress, record, calibrate, **options)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=None, help="photos, cifar10, mni152 or a folder of images or volumes (as for "
                                                "training; default: mni152 for a 3-D model, else photos)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="render sizes (default 2x and 4x the input; flow models: 64 128)")
    p.add_argument("--degradations", action="store_true",
                   help="image models: also the renders' gain over bicubic for inputs made by each degradation of "
                        "ginr_common.degradations.EVALUATED (bilinear, box, blur, noise)")
    p.add_argument("--out", default=None, help="folder for eval.json and the figure (default: the checkpoint's)")
    p.add_argument("--n-images", type=int, default=32, help="flow models: test tiles at the input size")
    p.add_argument("--k", type=int, default=16, help="flow models: samples per image (posterior mean)")
    p.add_argument("--steps", type=int, default=8, help="flow models: ODE steps")
    p.add_argument("--solver", default="exponential", choices=SOLVERS,
                   help="flow models: ODE solver (see ginr_common.flow.sampler)")
    p.add_argument("--n-hr", type=int, default=8, help="flow models: HR test crops for the zero-shot renders")
    p.add_argument("--calibrate", action="store_true", help="flow models: first calibrate the sampling temperatures "
                   "on the validation split (ginr_common.tasks.sparse_flow.calibrate; the checkpoint is untouched)")
    a = p.parse_args(argv)
    options = {"sizes": tuple(a.sizes)} if a.sizes else {}
    if train_config_from_checkpoint(load_checkpoint(a.checkpoint)[1]).task == "sparse_flow":
        options.update(n_images=a.n_images, k=a.k, steps=a.steps, solver=a.solver, n_hr=a.n_hr)
    elif a.degradations:
        options["degradations"] = True
    results, _ = evaluate_checkpoint(a.checkpoint, a.data, a.out, calibrate=a.calibrate, **options)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
