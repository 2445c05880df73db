"""What the flow's estimate mu is built on: a guide (a classical interpolation of the
observations) and the grid refiner, residual convolutions that correct the guide in context on
the base grid and are read at any coordinate. Values in [-1, 1]."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ginr_common.baselines import interpolate_sparse
from ginr_common.curves import take_rows


def normalised_convolution(coords, values, queries, size, sigma, chunk=4096):
    """The normalised convolution of observations (coords (B, N, d) in [0, 1], values (B, N, C))
    with a Gaussian of ``sigma`` pixels of the ``size`` grid, at queries (B, Q, d) -> (estimate
    (B, Q, C), density (B, Q, 1): the sum of the Gaussian weights). Where no observation is
    within reach (density < 1e-6) the estimate is the nearest observation."""
    unit = torch.tensor(size, dtype=queries.dtype, device=queries.device)
    out, dens = [], []
    for i in range(0, queries.shape[1], chunk):
        dist2 = ((coords[:, None] - queries[:, i:i + chunk, None]) * unit).pow(2).sum(-1)     # (B, q, N)
        w = torch.exp(-dist2 / (2 * sigma ** 2))
        density = w.sum(-1, keepdim=True)
        nearest = take_rows(values, dist2.argmin(-1))
        out.append(torch.where(density < 1e-6, nearest, (w @ values) / density.clamp_min(1e-6)))
        dens.append(density)
    return torch.cat(out, 1), torch.cat(dens, 1)


def guide(kind, coords, values, queries, size, sigma, chunk=4096):
    """The guide at queries (B, Q, d) -> (B, Q, C), values in [-1, 1]: ``"normconv"`` (see
    ``normalised_convolution``) or ``"linear"`` (piecewise-linear interpolation over the
    observations' Delaunay triangles: scipy per image on the CPU, a constant of the model)."""
    if kind == "linear":
        return 2 * interpolate_sparse(coords, (values + 1) / 2, queries).to(queries) - 1
    return normalised_convolution(coords, values, queries, size, sigma, chunk)[0]


def rasterise(coords, values, size):
    """Observations (B, N, d) in [0, 1] / (B, N, C) -> (mask (B, 1, *size), the mean observed
    value per cell (B, C, *size), zero where nothing was observed): each observation falls in the
    cell that contains it."""
    B, N, d = coords.shape
    s = torch.tensor(size, device=coords.device)
    cell = (coords * s).long().clamp(min=0).minimum(s - 1)
    flat = torch.zeros_like(cell[..., 0])
    for a in range(d):
        flat = flat * size[a] + cell[..., a]
    n = math.prod(size)
    count = torch.zeros(B, n, device=coords.device, dtype=values.dtype).scatter_add_(1, flat, torch.ones_like(
        flat, dtype=values.dtype))
    total = torch.zeros(B, n, values.shape[-1], device=coords.device, dtype=values.dtype).scatter_add_(
        1, flat[..., None].expand_as(values), values)
    mean = total / count.clamp_min(1)[..., None]
    return (count > 0).to(values.dtype).view(B, 1, *size), mean.transpose(1, 2).reshape(B, -1, *size)


def read_grid(feats, coords):
    """Multilinear read of a feature map (B, F, *S) at coordinates (B, Q, d) in [0, 1] (pixel
    centres, border values outside) -> (B, Q, F)."""
    d = coords.shape[-1]
    g = (2 * coords - 1).flip(-1).view(coords.shape[0], coords.shape[1], *([1] * (d - 1)), d)
    out = F.grid_sample(feats, g.to(feats.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out.flatten(2).transpose(1, 2)


class GridRefiner(nn.Module):
    """Residual convolution blocks over the base grid: input (B, 2C+1, *S) = the guide at every
    cell, a mask of the observed cells and their observed values (zero elsewhere), all in
    [-1, 1] -> (features (B, width, *S), a correction of the guide (B, C, *S), zero at
    initialisation; ``outputs`` > C: more maps after it). Dilations cycle 1, 2, 4, so six blocks
    see about 30 cells."""

    def __init__(self, d, channels, width, blocks, outputs=None):
        super().__init__()
        conv = (nn.Conv2d, nn.Conv3d)[d - 2]
        self.inp = conv(2 * channels + 1, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GELU(), conv(width, width, 3, padding=r, dilation=r), nn.GELU(),
                          conv(width, width, 3, padding=1))
            for r in (1, 2, 4) * (blocks // 3) + (1, 2, 4)[:blocks % 3])
        self.out = conv(width, outputs or channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = self.inp(x)
        for blk in self.blocks:
            h = h + blk(h)
        h = F.gelu(h)
        return h, self.out(h)
