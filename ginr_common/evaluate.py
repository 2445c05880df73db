"""Metrics and the evaluation CLI.

    python -m ginr_common.evaluate --checkpoint checkpoints/standard_fourier/best.pt [--data photos]

Reconstruction: mean per-image PSNR (predictions clamped to [0, 1], data range 1) and SSIM
(scikit-image) on the test split at native resolution. Super-resolution on the embedded photos'
HR test crops: the model and bicubic upsampling of the same 32x32 input, against the real
high-resolution image, at x2 and x4 (and any --sizes). Writes eval.json and sr.png.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from tqdm.auto import tqdm


def psnr(pred, target):
    """Per-image PSNR (B,) in dB of predictions clamped to [0, 1] against targets in [0, 1]."""
    mse = (pred.clamp(0, 1) - target).flatten(1).pow(2).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def ssim(pred, target):
    """Per-image SSIM (B,) of (B, C, H, W) images, scikit-image's implementation, data range 1."""
    p, t = pred.clamp(0, 1).double().cpu().numpy(), target.double().cpu().numpy()
    return torch.tensor([structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=7)
                         for a, b in zip(p, t)])


def bicubic(images, size):
    """Bicubic upsampling with the pixel-centre convention (align_corners=False), clamped."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


@torch.no_grad()
def evaluate_reconstruction(model, dataset, batch_size=64, with_ssim=True, progress=False):
    """Mean per-image PSNR (and SSIM) of model.render at native resolution over a dataset."""
    model.eval()
    dev = next(model.parameters()).device
    ps, ss = [], []
    for i in tqdm(range(0, len(dataset), batch_size), desc="eval", disable=not progress, leave=False):
        x = torch.stack([dataset[j][0] for j in range(i, min(i + batch_size, len(dataset)))]).to(dev)
        y = model.render(x, x.shape[2:]).float()
        ps.append(psnr(y, x).cpu())
        if with_ssim:
            ss.append(ssim(y, x))
    out = {"psnr": float(torch.cat(ps).mean()), "n": len(dataset)}
    if with_ssim:
        out["ssim"] = float(torch.cat(ss).mean())
    return out


@torch.no_grad()
def evaluate_sr(model, lr, hr, sizes=(64, 128), batch_size=16):
    """{size: {"model": {psnr, ssim}, "bicubic": {psnr, ssim}}} against the real HR image
    (resized with antialiasing where size is below its native resolution)."""
    from ginr_common.data import _resize

    model.eval()
    dev = next(model.parameters()).device
    res, renders = {}, {}
    for s in sizes:
        gt = hr if s == hr.shape[-1] else _resize(hr, (s, s))
        ys = [model.render(lr[i:i + batch_size].to(dev), (s, s)).float().cpu() for i in range(0, len(lr), batch_size)]
        y, b = torch.cat(ys), bicubic(lr, (s, s))
        res[str(s)] = {name: {"psnr": float(psnr(p, gt).mean()), "ssim": float(ssim(p, gt).mean())}
                       for name, p in (("model", y), ("bicubic", b))}
        renders[s] = (b, y, gt)
    return res, renders


def sr_figure(path, lr, renders, n=4, title=""):
    """Rows: images; columns: input, then bicubic / model / ground truth at each size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(renders)
    cols = 1 + 3 * len(sizes)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.7 * n), squeeze=False)
    show = lambda ax, im, t: (ax.imshow(im.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest"),  # noqa: E731
                              ax.set_title(t, fontsize=7), ax.axis("off"))
    for r in range(n):
        show(axes[r, 0], lr[r], f"input {lr.shape[-1]}")
        for k, s in enumerate(sizes):
            b, y, gt = renders[s]
            show(axes[r, 1 + 3 * k], b[r], f"bicubic {s}\n{float(psnr(b[r:r+1], gt[r:r+1])):.1f} dB")
            show(axes[r, 2 + 3 * k], y[r], f"model {s}\n{float(psnr(y[r:r+1], gt[r:r+1])):.1f} dB")
            show(axes[r, 3 + 3 * k], gt[r], f"ground truth {s}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_checkpoint(checkpoint, data="photos", sizes=(64, 128), out=None, progress=True):
    """Test-split reconstruction + super-resolution of a checkpoint; writes eval.json and sr.png."""
    from ginr_common.data import load_dataset, load_sr_pairs
    from ginr_common.model import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint, map_location="cpu")
    out = Path(out or Path(checkpoint).parent)
    results = {"checkpoint": str(checkpoint), "step": ckpt["train_state"].get("step"), "data": data,
               "test": evaluate_reconstruction(model, load_dataset(data)["test"], progress=progress)}
    lr, hr = load_sr_pairs("test")
    results["super_resolution"], renders = evaluate_sr(model, lr, hr, sizes)
    results["super_resolution_note"] = (f"{len(lr)} HR test crops {hr.shape[-1]}x{hr.shape[-1]} from the embedded "
                                        f"photos' test photographs, input = antialiased 32x32 downsample")
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    sr_figure(out / "sr.png", lr, renders, title=f"{model.config.name}: super-resolution on held-out photographs")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="photos", choices=["photos", "cifar10"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--out", default=None, help="folder for eval.json and sr.png (default: the checkpoint's)")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    np.random.seed(0)
    res = evaluate_checkpoint(a.checkpoint, a.data, tuple(a.sizes), a.out)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
