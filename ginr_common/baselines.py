"""Classical baselines, all on the pixel-centre convention of ``fourier.make_grid`` (a leaf).

- ``bicubic``: bicubic upsampling of an image to a size (align_corners=False), clamped.
- ``upsample``: the classical baseline of a render: bicubic for images, trilinear for volumes.
- ``sample_bicubic``: the same bicubic kernel read at arbitrary coordinates.
- ``sample_upsample``: ``upsample`` read at arbitrary coordinates (bicubic or trilinear).
- ``interpolate_sparse``: scattered-data interpolation (scipy's griddata) of observed pixels.
"""
import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import griddata


def bicubic(images, size):
    """Bicubic resize of (B, C, H, W) to ``size`` with the pixel-centre convention, clamped to [0, 1]."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


BASELINE = {2: "bicubic", 3: "trilinear"}     # the classical baseline of a render, by dimension


def upsample(images, size):
    """The classical baseline of a render at ``size``: bicubic (images (B, C, H, W)) or trilinear
    (volumes (B, C, D, H, W)) interpolation, pixel-centre convention, clamped to [0, 1]."""
    if images.dim() == 5:
        return F.interpolate(images, size=tuple(size), mode="trilinear", align_corners=False).clamp(0, 1)
    return bicubic(images, tuple(size))


def sample_bicubic(images, coords):
    """Bicubic interpolation of images (B, C, H, W) at pixel-centre coordinates (B, Q, 2) in axis
    order (y, x) -> (B, Q, C); the same kernel and convention as ``bicubic``."""
    if images.dim() != 4 or coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(f"sample_bicubic works on 2-D images (B, C, H, W) with (B, Q, 2) coords, got "
                         f"{tuple(images.shape)} and {tuple(coords.shape)}")
    grid = (coords.flip(-1) * 2 - 1)[:, :, None]          # grid_sample wants (x, y) in [-1, 1]
    out = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


def sample_upsample(images, coords):
    """The classical baseline (``upsample``) read at pixel-centre coordinates (B, Q, d) -> (B, Q, C):
    bicubic for images (``sample_bicubic``), trilinear for volumes (B, C, D, H, W), border values
    outside."""
    if images.dim() == 5 and coords.dim() == 3 and coords.shape[-1] == 3:
        grid = (coords.flip(-1) * 2 - 1)[:, :, None, None]     # (x, y, z) in [-1, 1]
        out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        return out[..., 0, 0].transpose(1, 2)
    return sample_bicubic(images, coords)


def interpolate_sparse(obs_coords, obs_values, query_coords, method="linear"):
    """Scattered-data interpolation per image: obs (B, N, d) / (B, N, C), queries (B, Q, d) ->
    (B, Q, C) clamped to [0, 1]. ``nearest`` or ``linear`` (outside the observations' convex hull,
    where linear is undefined, nearest fills in)."""
    if method not in ("nearest", "linear"):
        raise ValueError(f"method must be 'nearest' or 'linear', got {method!r}")
    if obs_coords.shape[0] != query_coords.shape[0] or obs_values.shape[:2] != obs_coords.shape[:2]:
        raise ValueError(f"obs_coords (B, N, d), obs_values (B, N, C) and query_coords (B, Q, d) must agree in B and "
                         f"N, got {tuple(obs_coords.shape)}, {tuple(obs_values.shape)} and {tuple(query_coords.shape)}")
    out = []
    for i, (oc, ov, qc) in enumerate(zip(obs_coords.double().cpu().numpy(), obs_values.double().cpu().numpy(),
                                         query_coords.double().cpu().numpy())):
        if method == "linear" and np.linalg.matrix_rank(oc[1:] - oc[:1]) < oc.shape[1]:
            raise ValueError(f"obs_coords: linear interpolation needs observations that span the {oc.shape[1]}-D "
                             f"domain (at least {oc.shape[1] + 1} not on one line or plane); those of image {i} "
                             f"lie at {len(np.unique(oc, axis=0))} distinct point(s) of rank "
                             f"{np.linalg.matrix_rank(oc[1:] - oc[:1])}")
        v = griddata(oc, ov, qc, method=method)
        if method == "linear":
            hole = np.isnan(v).any(-1)
            v[hole] = griddata(oc, ov, qc[hole], method="nearest")
        out.append(torch.from_numpy(v).float())
    return torch.stack(out).clamp(0, 1)
