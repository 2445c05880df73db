"""Checks on what users pass in (a leaf): clear errors instead of silent NaN or wrong answers."""
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
