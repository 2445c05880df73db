"""How a low-resolution input is made from a high-resolution image: one of the classical
downsamplings (antialiased bicubic, antialiased bilinear, box averaging), after an optional Gaussian
blur and with optional Gaussian noise, as in the first order of Real-ESRGAN's degradation model.

    degrade(hr, size, kind="bicubic", blur=0.0, noise=0.0, generator=None)  -> (B, C, *size)
    random_degradation(hr, size, generator, blur_share=0.0)                   -> a random one per image
    EVALUATED: the degradations an evaluation measures separately (name -> degrade's arguments)

``blur`` is the Gaussian's standard deviation in pixels of the output (so it means the same at every
scale); ``noise`` the noise's standard deviation in [0, 1] units. Images only (B, C, H, W) in [0, 1].
Super-resolution trained on random degradations (``ReconOptions.degrade``) learns to invert all of
them, not only the antialiased bicubic downsample the toolkit's data sets make.
"""
import math

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from ginr_common.data import resize

KINDS = ("bicubic", "bilinear", "box")
EVALUATED = {"bicubic": dict(kind="bicubic"), "bilinear": dict(kind="bilinear"), "box": dict(kind="box"),
             "blur + box": dict(kind="box", blur=0.6), "box + noise": dict(kind="box", noise=0.01)}
# random_degradation's draws: each kind's share (most of them the two a user's image usually is: a bicubic
# downsample or a camera's box averages), the ranges of the blur's and the noise's std, and the share of the
# images noise is added to (the blurred share is the caller's: training's ``options.degrade_blur``)
KIND_SHARES = {"bicubic": 0.4, "bilinear": 0.2, "box": 0.4}
BLUR, NOISE = (0.2, 0.6), (0.0, 0.01)
P_NOISE = 0.15


def degrade(hr, size, kind="bicubic", blur=0.0, noise=0.0, generator=None):
    """``hr`` (B, C, H, W) in [0, 1] blurred by a Gaussian of std ``blur`` output pixels, downsampled to
    ``size`` by ``kind`` ("bicubic": antialiased, as the data sets' inputs are made; "bilinear":
    antialiased; "box": the average of each output pixel's footprint), plus Gaussian noise of std
    ``noise`` (drawn from ``generator``), clamped to [0, 1]."""
    if hr.dim() != 4:
        raise ValueError(f"degrade takes images (B, C, H, W), got shape {tuple(hr.shape)}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if blur < 0 or noise < 0:
        raise ValueError(f"blur and noise must be >= 0, got {blur} and {noise}")
    size = tuple(size)
    x = hr
    if blur > 0:
        sigma = blur * hr.shape[-1] / size[-1]                  # in input pixels
        k = 2 * math.ceil(3 * sigma) + 1
        x = gaussian_blur(x, [k, k], [sigma, sigma])
    if kind == "bicubic":
        x = resize(x, size)
    elif kind == "bilinear":
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    else:
        x = F.interpolate(x, size=size, mode="area")
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1)


def random_degradation(hr, size, generator, blur_share=0.0):
    """A random degradation per image, drawn from ``generator``: a kind from KINDS in the shares
    KIND_SHARES, a blur of std U(BLUR) output pixels on a share ``blur_share`` of the images, noise
    of std U(NOISE) on P_NOISE."""
    if not 0 <= blur_share <= 1:
        raise ValueError(f"blur_share is the share of the images blurred, in [0, 1], got {blur_share}")
    B = len(hr)
    kinds = torch.multinomial(torch.tensor([KIND_SHARES[k] for k in KINDS]), B, replacement=True,
                              generator=generator).tolist()
    u = torch.rand(B, 4, generator=generator).tolist()
    out = []
    for i in range(B):
        blur = BLUR[0] + (BLUR[1] - BLUR[0]) * u[i][1] if u[i][0] < blur_share else 0.0
        noise = NOISE[0] + (NOISE[1] - NOISE[0]) * u[i][3] if u[i][2] < P_NOISE else 0.0
        out.append(degrade(hr[i:i + 1], size, KINDS[kinds[i]], blur, noise, generator))
    return torch.cat(out)


__all__ = ["degrade", "random_degradation", "KINDS", "EVALUATED"]
