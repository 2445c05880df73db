"""Checks on what users pass in (a leaf): clear errors instead of silent NaN or wrong answers."""
import math
from numbers import Integral, Real

import numpy as np
import torch


def check_finite(x, name):
    """Raise ValueError naming ``name`` when ``x`` holds NaN or infinity."""
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite: it holds {bad} NaN or infinite value(s) of {x.numel()}")


def as_unit_range(x, name, dtype):
    """``x`` cast to ``dtype`` (any float dtype, e.g. float64, is accepted) after checking that it is
    a finite floating-point tensor with values in [0, 1] (the image convention)."""
    if not torch.is_tensor(x) or not (x.is_floating_point() or x.dtype == torch.uint8):
        raise TypeError(f"{name} must be a float tensor with values in [0, 1], got "
                        f"{type(x).__name__ if not torch.is_tensor(x) else x.dtype}")
    if x.dtype == torch.uint8:
        raise TypeError(f"{name} is uint8 (0..255): pass {name}.float() / 255, values in [0, 1]")
    check_finite(x, name)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        hint = " (an 8-bit image? divide by 255)" if hi > 2 else ""
        raise ValueError(f"{name} must hold values in [0, 1], got values in [{lo:.4g}, {hi:.4g}]{hint}")
    return x.to(dtype)


def as_coords(coords, d, name, dtype):
    """Query coordinates cast to ``dtype`` after checking they are finite and end in ``d`` dims.
    Coordinates outside [0, 1] are allowed: they extrapolate beyond the image's pixel centres."""
    if not torch.is_tensor(coords) or not coords.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (..., {d}), got "
                        f"{type(coords).__name__ if not torch.is_tensor(coords) else coords.dtype}")
    check_finite(coords, name)
    return coords.to(dtype)


def as_image(image, channels, name="image"):
    """One image as a float tensor (channels, H, W) in [0, 1]. Accepts a (C, H, W) or (H, W) tensor
    (float in [0, 1] or uint8), a NumPy array (H, W, C) or (H, W) (the NumPy / PIL layout; uint8
    0..255 or float in [0, 1]) and a PIL image. Four channels (RGBA) lose the alpha channel; one
    channel (grayscale) is repeated to ``channels``; anything else raises ValueError."""
    if torch.is_tensor(image):
        if image.dim() == 3 and image.shape[0] not in (1, 3, 4) and image.shape[-1] in (1, 3, 4):
            raise ValueError(f"{name} must be (C, H, W), got {tuple(image.shape)}, which looks channels-last: "
                             f"pass {name}.permute(2, 0, 1)")
        x = image[None] if image.dim() == 2 else image
    else:
        try:
            arr = np.asarray(image)
        except Exception as e:   # noqa: BLE001  (what the object raises is its own)
            raise TypeError(f"{name} must be a (C, H, W) tensor, an (H, W, C) NumPy array or a PIL image, got "
                            f"{type(image).__name__}") from e
        if arr.dtype == object or arr.ndim not in (2, 3):
            raise TypeError(f"{name} must be a (C, H, W) tensor, an (H, W[, C]) NumPy array or a PIL image, got "
                            f"{type(image).__name__} of shape {arr.shape}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        x = torch.from_numpy(np.array(arr))          # a copy: arrays may be read-only
        x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    if x.dim() != 3:
        raise ValueError(f"{name} must be (C, H, W) or (H, W), got shape {tuple(image.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif not x.is_floating_point():
        raise TypeError(f"{name} must hold floats in [0, 1] or uint8 values 0..255, got {x.dtype}")
    C = x.shape[0]
    if C == 4 and channels == 3:
        x = x[:3]                           # RGBA: the alpha channel is dropped
    elif C == 1 and channels > 1:
        x = x.expand(channels, -1, -1)      # grayscale: one channel repeated
    elif C != channels:
        raise ValueError(f"{name} has {C} channels; this model reads {channels} (RGB, RGBA or grayscale "
                         f"images are converted), got shape {tuple(x.shape)}")
    return x


def as_scale(scale, name="scale"):
    """A finite scale factor > 0 as a float."""
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (e.g. 2 or 3.7), got {scale!r}")
    return float(scale)


def as_size(size, d, name="size"):
    """An output size: an int (the same on every axis) or ``d`` ints, each >= 1, as a tuple."""
    given = size
    size = (size,) * d if isinstance(size, Integral) else size
    try:
        size = tuple(size)
    except TypeError:
        size = (size,)
    if len(size) != d or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"{name} must be {d} integers >= 1 (or one int for every axis), got {given!r}")
    return tuple(int(s) for s in size)
