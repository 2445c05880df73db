"""Coordinate grids and Fourier features. Every frequency is a buffer or a parameter, so a
checkpoint always reloads the exact frequencies it was trained with. Features are computed in
float32 (float64 for float64 coordinates) also under autocast: in bfloat16 a phase of a few
hundred radians loses its fractional part, and sin/cos become noise."""
import math

import torch
from torch import nn


def make_grid(size, device=None, dtype=torch.float32):
    """Pixel-centre coordinates (i + 0.5) / S for any number of dims, ordered like the tensor
    axes: ``make_grid((H, W))`` -> (H * W, 2) with rows (y, x), raster order."""
    size = (size,) if isinstance(size, int) else tuple(size)
    if not size or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be positive ints, got {size}")
    axes = [(torch.arange(s, device=device, dtype=dtype) + 0.5) / s for s in size]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(size))


class FourierFeatures(nn.Module):
    """Fixed log-spaced features: [sin(pi f_k c), cos(pi f_k c)] per coordinate axis, with
    f_k = 2^0 ... 2^(n_freqs-1) (``max_freq`` sets the top frequency instead)."""

    def __init__(self, in_dim, n_freqs, max_freq=None, include_input=True):
        super().__init__()
        if in_dim < 1 or n_freqs < 1:
            raise ValueError(f"in_dim and n_freqs must be >= 1, got {in_dim}, {n_freqs}")
        top = math.log2(max_freq) if max_freq else n_freqs - 1
        self.register_buffer("freqs", math.pi * 2.0 ** torch.linspace(0.0, top, n_freqs))
        self.in_dim, self.include_input = in_dim, include_input
        self.out_dim = 2 * in_dim * n_freqs + (in_dim if include_input else 0)

    def forward(self, coords):
        if coords.shape[-1] != self.in_dim:
            raise ValueError(f"coords must end in {self.in_dim} dims, got shape {tuple(coords.shape)}")
        with torch.autocast(coords.device.type, enabled=False):
            coords = _full_precision(coords)
            x = (coords[..., None] * self.freqs.to(coords.dtype)).flatten(-2)
            feats = [torch.sin(x), torch.cos(x)]
            return torch.cat(([coords] if self.include_input else []) + feats, dim=-1)


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features: B ~ N(0, sigma^2) of shape (n_features, in_dim),
    gamma(c) = [sin(2 pi c B^T), cos(2 pi c B^T)]; B is a parameter when ``learnable``."""

    def __init__(self, in_dim, n_features, sigma=10.0, learnable=False, generator=None):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        B = torch.randn(n_features, in_dim, generator=generator) * sigma
        if learnable:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)
        self.in_dim, self.out_dim = in_dim, 2 * n_features

    def forward(self, coords):
        if coords.shape[-1] != self.in_dim:
            raise ValueError(f"coords must end in {self.in_dim} dims, got shape {tuple(coords.shape)}")
        with torch.autocast(coords.device.type, enabled=False):
            coords = _full_precision(coords)
            x = 2 * math.pi * coords @ self.B.to(coords.dtype).t()
            return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


def _full_precision(coords):
    return coords if coords.dtype == torch.float64 else coords.float()
