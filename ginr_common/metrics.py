"""Image metrics (a leaf: imports nothing from the package).

Every metric takes images (B, C, H, W) in [0, 1]; predictions are clamped to [0, 1] first.
"""
import torch


def psnr(pred, target):
    """Per-image PSNR (B,) in dB of predictions clamped to [0, 1] against targets in [0, 1]
    (data range 1; the mean squared error is floored at 1e-12, i.e. at most 120 dB)."""
    mse = (pred.clamp(0, 1) - target).flatten(1).pow(2).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def masked_psnr(pred, target, mask):
    """Per-image PSNR (B,) over the pixels where ``mask`` (B, H*W) is True only."""
    return psnr_of_errors((pred.clamp(0, 1) - target).pow(2), mask)


def psnr_of_errors(sq_err, mask):
    """Per-image PSNR (B,) of squared errors (B, C, H, W), averaged over the channels and the
    pixels where ``mask`` (B, H*W) is True (the mean floored at 1e-12)."""
    err = sq_err.mean(1).flatten(1)
    mse = (err * mask).sum(1) / mask.sum(1).clamp_min(1)
    return -10 * torch.log10(mse.clamp_min(1e-12))


def ssim(pred, target):
    """Per-image SSIM (B,) of images (B, C, H, W) or volumes (B, C, D, H, W), predictions clamped
    to [0, 1], in float64: ``ssim_torch``, scikit-image's ``structural_similarity`` with its
    defaults (window 7, data range 1)."""
    return ssim_torch(pred.clamp(0, 1).double(), target.double()).cpu()


def ssim_torch(pred, target, win_size=7):
    """Per-image SSIM (B,) of images (B, C, H, W) or volumes (B, C, D, H, W) as scikit-image's
    ``structural_similarity`` computes it with its defaults (a uniform window of ``win_size``
    pixels a side, the sample covariance, data range 1, the mean over the channels and the pixels
    a whole window covers), in torch and differentiable, so that it can be trained on. Unlike
    ``ssim`` it does not clamp ``pred``; needs at least ``win_size`` pixels a side."""
    if pred.dim() not in (4, 5) or pred.shape != target.shape or min(pred.shape[2:]) < win_size:
        raise ValueError(f"ssim_torch takes two images (B, C, H, W) or volumes (B, C, D, H, W) of the same shape, "
                         f"at least {win_size} pixels a side, got {tuple(pred.shape)} and {tuple(target.shape)}")
    pool = torch.nn.functional.avg_pool2d if pred.dim() == 4 else torch.nn.functional.avg_pool3d
    c1, c2, n = 0.01 ** 2, 0.03 ** 2, win_size ** (pred.dim() - 2)
    mean = lambda x: pool(x, win_size, stride=1)  # noqa: E731
    mx, my = mean(pred), mean(target)
    vx, vy = (mean(pred * pred) - mx * mx) * n / (n - 1), (mean(target * target) - my * my) * n / (n - 1)
    cxy = (mean(pred * target) - mx * my) * n / (n - 1)
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def total_variation(images):
    """Per-image anisotropic total variation (B,): mean absolute difference between horizontal
    and vertical neighbours. Speckle raises it above the truth's, blur lowers it."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def chroma(images):
    """The colour of RGB images (B, 3, H, W) without their brightness (B, 2, H, W): B - Y and R - Y,
    Y the BT.601 luma. Its ``total_variation`` measures colour grain."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"chroma takes RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
    r, g, b = images.clamp(0, 1).unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([b - y, r - y], 1)


def grid_artifact(pred, target, period):
    """How much of the error sits at the spatial period ``period`` (in pixels of ``pred``: the
    patch grid's period at this resolution): power of the error spectrum at the frequencies
    k/period (k = 1, ...) along each axis and diagonally, over the mean power at the same radii
    in other directions. About 1: no pattern at that period; much above 1: a checkerboard."""
    err = (pred.clamp(0, 1) - target).double()
    H, W = err.shape[-2:]
    power = torch.fft.fft2(err - err.mean((-2, -1), keepdim=True)).abs().pow(2).mean((0, 1))
    fy, fx = torch.fft.fftfreq(H, dtype=torch.float64)[:, None], torch.fft.fftfreq(W, dtype=torch.float64)[None]
    radius = (fy ** 2 + fx ** 2).sqrt()
    peaks = torch.zeros_like(power, dtype=torch.bool)
    for k in range(1, int(period // 2) + 1):
        f = k / period
        if f > 0.5:
            break
        for a, b in ((f, 0), (0, f), (f, f)):
            peaks |= (((fy.abs() - a).abs() < 0.5 / H) & ((fx.abs() - b).abs() < 0.5 / W))
    if not peaks.any():
        return 1.0
    ratios = []
    for r in radius[peaks].unique():
        ring = ((radius - r).abs() < 1.0 / max(H, W)) & ~peaks
        if ring.any():
            ratios.append(power[peaks & ((radius - r).abs() < 1e-9)].mean() / power[ring].mean())
    return float(torch.stack(ratios).max()) if ratios else 1.0
