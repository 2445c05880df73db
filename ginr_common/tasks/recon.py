"""Reconstruction: encode an image, decode it at its own pixel centres (jittered when
``options.jitter``; a random subset of ``options.lr_queries`` of them when set), MSE.

With ``cfg.sr_scales = (low, high)`` the model also learns to render at other resolutions: the
inputs are antialiased downsamples (to the model's input size) of high-resolution training
crops, and 1 - ``options.lr_weight`` of the loss is on ``options.sr_queries`` random pixels of
the real crop resized to input_size * s, s drawn uniformly from [low, high] each step, each
query with its cell size. With ``options.degrade`` the inputs are random degradations of the
crops instead (``degradations.random_degradation``: bicubic, bilinear or box downsampling, noise,
and blur on a share ``options.degrade_blur``), so the model learns to invert how an input may
have been made.

Validation: PSNR at native resolution. Evaluation: the test split at native resolution, and
renders at larger sizes against the real high-resolution photograph beside bicubic upsampling
of the same input (eval.json, sr.png); with ``degradations=True``, the renders' gain over bicubic
for inputs made by each of ``degradations.EVALUATED``."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ginr_common.baselines import BASELINE, upsample
from ginr_common.data import resize
from ginr_common.degradations import EVALUATED, degrade, random_degradation
from ginr_common.fourier import make_grid
from ginr_common.metrics import grid_artifact, psnr, ssim
from ginr_common.model import GINRConfig
from ginr_common.tasks.base import Task
from ginr_common.viz import sr_figure, volume_figure


@dataclass
class ReconOptions:
    """The options of reconstruction and super-resolution (defaults: notebook 1's cpu model)."""
    lr_queries: int | None = 128   # pixels of the input grid supervised per step (a random subset; None: all)
    sr_queries: int = 256          # with sr_scales: HR pixels supervised per image and step (a random subset)
    lr_weight: float = 0.5         # with HR queries: the share of the loss on the input grid (the rest on HR pixels)
    jitter: float = 0.0            # std (in input pixels) of a fresh Gaussian offset per batch of the input-grid queries
    degrade: bool = False          # with sr_scales: inputs are random degradations of the HR crops (blur, bicubic,
                                   # bilinear or box downsampling, noise) instead of their antialiased bicubic downsample,
                                   # which stays the input grid's target; the sr task then validates on the mix
    degrade_blur: float = 0.0      # with degrade: the share of the inputs blurred before downsampling (a model trained
                                   # on blurred inputs sharpens soft inputs, and paints texture onto soft photographs)

    def check(self, cfg):
        """Raise ValueError when an option is out of range (``cfg``: the TrainConfig holding them)."""
        if self.lr_queries is not None and self.lr_queries < 1:
            raise ValueError(f"options.lr_queries must be >= 1 or None (all pixels), got {self.lr_queries}")
        if self.sr_queries < 1 or not 0 <= self.lr_weight <= 1 or self.jitter < 0:
            raise ValueError(f"options need sr_queries >= 1, lr_weight in [0, 1] and jitter >= 0, got "
                             f"{self.sr_queries}, {self.lr_weight} and {self.jitter}")
        if not 0 <= self.degrade_blur <= 1:
            raise ValueError(f"options.degrade_blur is the share of the degraded inputs blurred, in [0, 1], got "
                             f"{self.degrade_blur}")
        if self.degrade and (not cfg.sr_scales or len(cfg.model.input_size) != 2):
            raise ValueError("options.degrade makes the inputs from high-resolution crops: it needs sr_scales and 2-D "
                             f"images, got sr_scales={cfg.sr_scales} and input_size={cfg.model.input_size}")

    def for_steps(self, steps, new_steps):
        """The options for a run of ``new_steps`` instead of ``steps`` (none depends on the length)."""
        return self


class ReconstructionTask(Task):
    name = "recon"
    model_config, options_class = GINRConfig, ReconOptions

    def batch(self, train_set, step):
        cfg, opt = self.cfg, self.cfg.options
        images, g, _ = self.images(train_set, step)
        size = cfg.model.input_size
        hr = None
        if cfg.sr_scales:
            hr, images = images, resize(images, size)
        # the input grid's target is the antialiased downsample; a degraded input (blurred, noisy, box-averaged)
        # still asks for it, so the input grid and the HR pixels at scale 1 never ask for two different images
        target = images.flatten(2).transpose(1, 2)
        if hr is not None and opt.degrade:
            images = random_degradation(hr, size, g, opt.degrade_blur)
        B, grid = images.shape[0], make_grid(size)
        if opt.lr_queries:
            sel = torch.randperm(grid.shape[0], generator=g)[:opt.lr_queries]
            grid, target = grid[sel], target[:, sel]
        queries = grid.expand(B, -1, -1)
        if opt.jitter:  # one offset for the whole batch, in input pixels; the target is unchanged
            queries = queries + torch.randn(grid.shape[-1], generator=g) * opt.jitter / torch.tensor(size)
        cells = (1 / torch.tensor(size, dtype=torch.float32)).expand(B, grid.shape[0], -1)
        if hr is not None:
            lo, hi = cfg.sr_scales
            s = lo + (hi - lo) * float(torch.rand((), generator=g))
            hr_size = tuple(max(n, round(n * s)) for n in size)
            hr = hr if hr.shape[2:] == hr_size else resize(hr, hr_size)
            sel = torch.randperm(math.prod(hr_size), generator=g)[:opt.sr_queries]
            queries = torch.cat([queries, make_grid(hr_size)[sel].expand(B, -1, -1)], 1)
            target = torch.cat([target, hr.flatten(2).transpose(1, 2)[:, sel]], 1)
            hr_cells = (1 / torch.tensor(hr_size, dtype=torch.float32)).expand(B, len(sel), -1)
            cells = torch.cat([cells, hr_cells], 1)
        return {"images": images, "queries": queries, "cells": cells, "target": target}

    def loss(self, net, batch):
        """MSE on the input grid's queries; with HR queries, ``options.lr_weight`` of the loss on the
        input grid and the rest on the HR pixels."""
        n_lr = self.cfg.options.lr_queries or math.prod(self.cfg.model.input_size)
        pred = net(batch["images"], batch["queries"], batch["cells"]).float()
        target = batch["target"]
        loss = F.mse_loss(pred[:, :n_lr], target[:, :n_lr])
        if pred.shape[1] > n_lr:
            w = self.cfg.options.lr_weight
            loss = w * loss + (1 - w) * F.mse_loss(pred[:, n_lr:], target[:, n_lr:])
        return loss, psnr(pred[:, :n_lr].detach(), target[:, :n_lr]).mean()

    def validate(self, model, datasets):
        return evaluate_reconstruction(model, datasets["val"], with_ssim=False)["psnr"]

    def evaluate(self, model, datasets, progress=True, sr_pairs=None, sizes=None, degradations=False):
        """Test-split reconstruction + renders at ``sizes`` (default: 2x and 4x the input, up to the HR
        crops' size) of the HR test crops ``sr_pairs`` (lr, hr) -> (results, predictions {"lr",
        "renders"}). ``degradations`` (images): also the renders of inputs made from the HR crops by
        each of ``degradations.EVALUATED``, against bicubic upsampling of the same inputs
        (results["degradations"][name][size] = {"model", "bicubic", "gain"} in dB)."""
        results = {"input_size": int(model.config.input_size[-1]),
                   "test": evaluate_reconstruction(model, datasets["test"], progress=progress)}
        predictions = {}
        if sr_pairs is not None:
            lr, hr = sr_pairs
            sizes = sizes or tuple(f * lr.shape[-1] for f in (2, 4) if f * lr.shape[-1] <= hr.shape[-1])
            results["super_resolution"], renders = evaluate_sr(model, lr, hr, sizes)
            results["super_resolution_note"] = (
                f"{len(lr)} HR test crops {hr.shape[-1]}x{hr.shape[-1]} from the test photographs, input = antialiased "
                f"{lr.shape[-1]}x{lr.shape[-1]} downsample; baseline: bicubic upsampling of the same input"
                if lr.dim() == 4 else
                f"{len(lr)} HR test crops of {hr.shape[-1]}^3 voxels from the test volume, input = their "
                f"{lr.shape[-1]}^3 average-pooled downsample; baseline: trilinear upsampling of the same input")
            predictions = {"lr": lr, "renders": renders}
            if degradations and lr.dim() == 4:
                results["degradations"] = evaluate_degradations(model, hr, lr.shape[2:], sizes)
        return results, predictions

    def figures(self, model, results, predictions):
        if "renders" not in predictions:
            return {}
        if predictions["lr"].dim() == 5:
            return {"sr.png": volume_figure(predictions["lr"], predictions["renders"],
                                            title=f"{model.config.name}: renders of a held-out volume")}
        return {"sr.png": sr_figure(predictions["lr"], predictions["renders"],
                                    title=f"{model.config.name}: renders of held-out photographs")}


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
def evaluate_degradations(model, hr, size, sizes, seed=0):
    """{name: {str(size): {"model": dB, "bicubic": dB, "gain": dB}}}: renders at ``sizes`` of inputs of
    ``size`` made from the HR images ``hr`` by each of ``degradations.EVALUATED`` (noise drawn from a
    generator seeded with ``seed``), against bicubic upsampling of the same inputs."""
    out = {}
    for name, spec in EVALUATED.items():
        lr = degrade(hr, size, generator=torch.Generator().manual_seed(seed), **spec)
        res, _ = evaluate_sr(model, lr, hr, sizes, with_ssim=False)
        out[name] = {s: {"model": r["model"]["psnr"], "bicubic": r["bicubic"]["psnr"],
                         "gain": r["model"]["psnr"] - r["bicubic"]["psnr"]} for s, r in res.items()}
    return out


@torch.no_grad()
def evaluate_sr(model, lr, hr, sizes=(64, 128), batch_size=16, with_ssim=True):
    """({size: {"model": {psnr, ssim, grid}, baseline: {...}}}, renders) of the inputs ``lr``
    (B, C, *S) rendered at each size (an int: that many pixels along every axis) against the real
    HR image or volume (resized for sizes below its resolution); the baseline is
    ``baselines.upsample`` (bicubic for images, trilinear for volumes, named so). ``grid``
    (images) is ``metrics.grid_artifact`` of the error at the patch grid's period (about 1 for
    bicubic; far above bicubic's: a checkerboard). Sizes above the HR resolution have no ground
    truth: they are rendered (renders[size] = (baseline, model, None)) but get no numbers;
    ``hr=None`` (e.g. CIFAR-10) renders every size without numbers. Volumes are rendered in
    chunks of queries (``config.query_chunk``), so memory stays bounded at any size."""
    model.eval()
    dev = next(model.parameters()).device
    d = lr.dim() - 2
    res, renders = {}, {}
    for s in sizes:
        size = (s,) * d
        gt = None if hr is None or s > hr.shape[-1] else hr if s == hr.shape[-1] else resize(hr, size)
        ys = [model.render(lr[i:i + batch_size].to(dev), size).float().cpu() for i in range(0, len(lr), batch_size)]
        y, b = torch.cat(ys), upsample(lr, size)
        renders[s] = (b, y, gt)
        if gt is None:
            continue
        period = getattr(model.config, "patch_size", 1) * s / lr.shape[-1]
        res[str(s)] = {name: {"psnr": float(psnr(p, gt).mean()),
                              **({"ssim": float(ssim(p, gt).mean())} if with_ssim else {}),
                              **({"grid": grid_artifact(p, gt, period)} if with_ssim and d == 2 else {})}
                       for name, p in (("model", y), (BASELINE[d], b))}
    return res, renders
