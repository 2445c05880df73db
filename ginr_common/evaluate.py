"""Metrics and the evaluation CLI.

    python -m ginr_common.evaluate --checkpoint checkpoints/standard_fourier/best.pt [--data photos]
    python -m ginr_common.evaluate --checkpoint checkpoints/flow_sparse/best.pt [--k 4 --steps 50]

Reconstruction: mean per-image PSNR (predictions clamped to [0, 1], data range 1) and SSIM
(scikit-image) on the test split at native resolution. Super-resolution on the embedded photos'
HR test crops: the model and bicubic upsampling of the same 32x32 input, against the real
high-resolution image, at x2 and x4 (and any --sizes). Writes eval.json and sr.png.
Flow (sparse-field) checkpoints: ``evaluate_sparse_checkpoint`` (eval.json).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from tqdm.auto import tqdm

from ginr_common.fourier import make_grid


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
def evaluate_sr(model, lr, hr, sizes=(64, 128), batch_size=16, with_ssim=True):
    """({size: {"model": {psnr, ssim}, "bicubic": {psnr, ssim}}}, renders) against the real HR
    image (downsampled with antialiasing for sizes below its native resolution). Sizes above the
    HR resolution have no ground truth: they are rendered (renders[size] = (bicubic, model, None))
    but get no numbers; ``hr=None`` (e.g. CIFAR-10) renders every size without numbers."""
    from ginr_common.data import _resize

    model.eval()
    dev = next(model.parameters()).device
    res, renders = {}, {}
    for s in sizes:
        gt = None if hr is None or s > hr.shape[-1] else hr if s == hr.shape[-1] else _resize(hr, (s, s))
        ys = [model.render(lr[i:i + batch_size].to(dev), (s, s)).float().cpu() for i in range(0, len(lr), batch_size)]
        y, b = torch.cat(ys), bicubic(lr, (s, s))
        renders[s] = (b, y, gt)
        if gt is None:
            continue
        res[str(s)] = {name: {"psnr": float(psnr(p, gt).mean()),
                              **({"ssim": float(ssim(p, gt).mean())} if with_ssim else {})}
                       for name, p in (("model", y), ("bicubic", b))}
    return res, renders


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
    import matplotlib.pyplot as plt

    from ginr_common.viz import sr_figure

    fig = sr_figure(lr, renders, title=f"{model.config.name}: super-resolution on held-out photographs")
    fig.savefig(out / "sr.png", dpi=110)
    plt.close(fig)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="photos", choices=["photos", "cifar10"])
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="render sizes (default 64 128; flow models: 64 96 128)")
    p.add_argument("--out", default=None, help="folder for eval.json (and sr.png) (default: the checkpoint's)")
    p.add_argument("--n-images", type=int, default=64, help="flow models: test images at 32x32")
    p.add_argument("--k", type=int, default=4, help="flow models: samples per image (posterior mean)")
    p.add_argument("--steps", type=int, default=50, help="flow models: Heun steps")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    np.random.seed(0)
    from ginr_common.flow import SparseFieldFlow
    from ginr_common.model import load_checkpoint

    if isinstance(load_checkpoint(a.checkpoint)[0], SparseFieldFlow):
        res, _ = evaluate_sparse_checkpoint(a.checkpoint, a.data, a.n_images, a.k, a.steps,
                                            tuple(a.sizes or (64, 96, 128)), out=a.out)
    else:
        res = evaluate_checkpoint(a.checkpoint, a.data, tuple(a.sizes or (64, 128)), a.out)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------- sparse fields (flow)
def interpolate_sparse(obs_coords, obs_values, query_coords, method="linear"):
    """Scattered-data interpolation (scipy's griddata, per image): ``nearest`` or ``linear``
    (outside the observations' convex hull, where linear is undefined, nearest fills in)."""
    from scipy.interpolate import griddata

    if method not in ("nearest", "linear"):
        raise ValueError(f"method must be 'nearest' or 'linear', got {method!r}")
    out = []
    for oc, ov, qc in zip(obs_coords.double().cpu().numpy(), obs_values.double().cpu().numpy(),
                          query_coords.double().cpu().numpy()):
        v = griddata(oc, ov, qc, method=method)
        if method == "linear":
            hole = np.isnan(v).any(-1)
            v[hole] = griddata(oc, ov, qc[hole], method="nearest")
        out.append(torch.from_numpy(v).float())
    return torch.stack(out).clamp(0, 1)


def _sparse_scores(pred, images, unobserved, with_ssim):
    """pred, images (B, C, H, W); unobserved (B, H*W) bool -> {psnr, psnr_unobserved[, ssim]}."""
    err = (pred.clamp(0, 1) - images).pow(2).mean(1).flatten(1)                     # (B, H*W)
    mse_u = (err * unobserved).sum(1) / unobserved.sum(1)
    out = {"psnr": float(psnr(pred, images).mean()),
           "psnr_unobserved": float((-10 * torch.log10(mse_u.clamp_min(1e-12))).mean())}
    if with_ssim:
        out["ssim"] = float(ssim(pred, images).mean())
    return out


@torch.no_grad()
def evaluate_sparse(model, images, k=8, steps=50, solver="heun", hold_known=False, seed=0, baselines=False,
                    with_ssim=False, batch_size=64):
    """Sparse-field reconstruction of ``images`` (B, C, H, W) at the model's input size from the
    evaluation masks (``sparse_masks`` seed 42, per image index): the model's first sample, the
    mean of ``k`` samples, and with ``baselines`` nearest and linear interpolation on the same
    masks. Each: PSNR on the full image, PSNR on the unobserved pixels only (, SSIM).
    Returns {method: scores, ...} and the predictions under "images"."""
    from ginr_common.data import sparse_masks, take_rows

    model.eval()
    B, C, H, W = images.shape
    grid = make_grid((H, W))
    obs, _ = sparse_masks(range(B), H * W, model.config.observe_frac, seed=42)
    values = images.flatten(2).transpose(1, 2)
    oc, ov = take_rows(grid.expand(B, -1, -1), obs), take_rows(values, obs)
    unobserved = torch.ones(B, H * W, dtype=torch.bool).scatter_(1, obs, False)
    as_img = lambda v: v.transpose(1, 2).reshape(B, C, H, W)  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(k):
        parts = [model.sample(oc[i:i + batch_size], ov[i:i + batch_size], grid.expand(len(oc[i:i + batch_size]), -1, -1),
                              steps=steps, solver=solver, generator=g, hold_known=hold_known)
                 for i in range(0, B, batch_size)]
        samples.append(as_img(torch.cat(parts)))
    preds = {"model_sample": samples[0]}
    if k > 1:
        stacked = torch.stack(samples)
        preds["model_mean"], preds["model_std"] = stacked.mean(0), stacked.std(0)
    if baselines:
        for m in ("nearest", "linear"):
            preds[m] = as_img(interpolate_sparse(oc, ov, grid.expand(B, -1, -1), m))
    res = {name: _sparse_scores(p, images, unobserved, with_ssim) for name, p in preds.items() if name != "model_std"}
    res["images"] = {**preds, "observed": as_img(values * (~unobserved)[..., None])}
    return res


@torch.no_grad()
def evaluate_sparse_zero_shot(model, lr, hr, sizes=(64, 96, 128), k=4, steps=50, seed=0):
    """Observe 20% of each 32x32 input (evaluation masks), sample at each size and compare with
    the real HR crop resized to that size; baseline: bicubic upsampling of the linearly
    interpolated 32x32. {size: {"model_mean": psnr/ssim, "linear+bicubic": ...}}, renders."""
    from ginr_common.data import _resize, sparse_masks, take_rows

    model.eval()
    B, C, h, w = lr.shape
    obs, _ = sparse_masks(range(B), h * w, model.config.observe_frac, seed=42)
    grid = make_grid((h, w))
    oc, ov = take_rows(grid.expand(B, -1, -1), obs), take_rows(lr.flatten(2).transpose(1, 2), obs)
    lin = interpolate_sparse(oc, ov, grid.expand(B, -1, -1), "linear").transpose(1, 2).reshape(B, C, h, w)
    res, renders = {}, {}
    for s in sizes:
        q = make_grid((s, s)).expand(B, -1, -1)
        g = torch.Generator().manual_seed(seed)   # the same noise field at every size
        mean, _ = model.posterior(oc, ov, q, k=k, generator=g, steps=steps)
        y = mean.transpose(1, 2).reshape(B, C, s, s)
        b = bicubic(lin, (s, s))
        gt = hr if s == hr.shape[-1] else _resize(hr, (s, s))
        res[str(s)] = {n: {"psnr": float(psnr(p, gt).mean()), "ssim": float(ssim(p, gt).mean())}
                       for n, p in (("model_mean", y), ("linear+bicubic", b))}
        renders[s] = (b, y, gt)
    return res, renders


def evaluate_sparse_checkpoint(checkpoint, data="photos", n_images=64, k=4, steps=50, sizes=(64, 96, 128),
                               n_hr=8, k_hr=1, out=None):
    """The flow model's full evaluation; writes eval.json beside the checkpoint (or in ``out``):
    at 32x32 on the first ``n_images`` test images, with and without holding known pixels,
    against nearest and linear interpolation; zero-shot at ``sizes`` on ``n_hr`` HR test crops.
    Returns (results, {"sparse": predictions at 32, "zero_shot": renders})."""
    from ginr_common.data import load_dataset, load_sr_pairs
    from ginr_common.model import load_checkpoint

    model, ckpt = load_checkpoint(checkpoint, map_location="cpu")
    test = load_dataset(data)["test"]
    images = torch.stack([test[i][0] for i in range(min(n_images, len(test)))])
    results = {"checkpoint": str(checkpoint), "step": ckpt["train_state"].get("step"), "data": data,
               "n_images": len(images), "k": k, "steps": steps, "solver": "heun"}
    preds = {}
    for hold in (False, True):
        r = evaluate_sparse(model, images, k=k, steps=steps, hold_known=hold, baselines=not hold, with_ssim=True)
        preds[hold] = r.pop("images")
        results["hold_known" if hold else "free"] = r
    lr, hr = load_sr_pairs("test")
    pick = torch.linspace(0, len(lr) - 1, min(n_hr, len(lr))).long()
    results["zero_shot"], renders = evaluate_sparse_zero_shot(model, lr[pick], hr[pick], sizes, k=k_hr, steps=steps)
    results["zero_shot_note"] = (f"{len(pick)} HR test crops; 20% of the 32x32 downsample observed; model: mean of "
                                 f"{k_hr} sample(s); baseline: bicubic upsampling of the linear interpolation")
    out = Path(out or Path(checkpoint).parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    return results, {"sparse": preds[False], "zero_shot": renders, "lr": lr[pick]}
