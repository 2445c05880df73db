"""The encoders. Of a grid (images, volumes): the patch tokenizer for any number of spatial dims
and the Mamba-GINR encoder (patch tokens + Fourier encoding of patch centres -> interleaved LPs ->
BiMamba stack -> LP latents). Of scattered points (a fraction of an image's pixels, any
coordinates): ``PointEncoder`` (point tokens along a space-filling curve -> the same LPs and stack)."""
import math
from dataclasses import dataclass

import torch
from torch import nn

from ginr_common.curves import curve_index, take_rows
from ginr_common.fourier import FourierFeatures, make_grid
from ginr_common.mamba import BiMambaStack
from ginr_common.transformer import TransformerStack
from ginr_common.tokens import ImplicitSequentialBias, cell_pooling, lp_homes, lp_lattice


SEQUENCE_ORDERS = ("raster", "curve")


def sequence_order(points, order="raster"):
    """The order (N,) in which the encoder reads points (N, d) in [0, 1] given in raster order:
    ``raster`` keeps it; ``curve`` follows the space-filling curve (``curves.curve_index``), which
    visits every dyadic block of the grid in one run, so that with LPs at equal spacing each LP sits
    beside the patch tokens of its own lattice cell (16 LPs over 8x8 tokens: an LP, then its 2x2
    tokens)."""
    if order == "raster":
        return torch.arange(len(points))
    return curve_index(points[None])[0].argsort()


def _as_tuple(x, n, name):
    t = (x,) * n if isinstance(x, int) else tuple(x)
    if len(t) != n or any(int(v) < 1 for v in t):
        raise ValueError(f"{name} must be a positive int or {n} positive ints, got {x}")
    return t


class PatchTokenizer(nn.Module):
    """(B, C, *S) -> tokens (B, N, C * prod(p)) and patch-centre coordinates (N, d) in [0, 1]
    (pixel-centre convention, axis order). ``forward`` embeds tokens to ``dim`` and adds their
    position: a projection of a fixed Fourier (sinusoidal) encoding of the patch centres, kept as a
    buffer (``position="fourier"``), a learned vector per patch (``"learned"``), or none."""

    def __init__(self, input_size, patch_size, in_channels, *, dim, n_freqs=8, position="fourier"):
        super().__init__()
        if position not in ("fourier", "learned", "none"):
            raise ValueError(f"position must be 'fourier', 'learned' or 'none', got {position!r}")
        nd = len(input_size) if not isinstance(input_size, int) else 2
        self.input_size = _as_tuple(input_size, nd, "input_size")
        self.patch_size = _as_tuple(patch_size, nd, "patch_size")
        bad = [(s, p) for s, p in zip(self.input_size, self.patch_size) if s % p]
        if bad:
            raise ValueError(f"input size {self.input_size} is not divisible by patch size {self.patch_size}")
        self.in_channels, self.dim = in_channels, dim
        self.grid = tuple(s // p for s, p in zip(self.input_size, self.patch_size))
        self.num_patches = math.prod(self.grid)
        self.patch_dim = in_channels * math.prod(self.patch_size)
        self.register_buffer("centres", make_grid(self.grid))
        ff = FourierFeatures(nd, n_freqs, max_freq=max(self.grid))  # top frequency: the patch grid's Nyquist
        self.register_buffer("pos_enc", ff(self.centres))
        self.embed = nn.Linear(self.patch_dim, dim)
        self.position = position
        self.pos_proj = nn.Linear(ff.out_dim, dim) if position == "fourier" else None
        self.pos_learned = nn.Parameter(torch.randn(self.num_patches, dim) * 0.02) if position == "learned" else None

    def patchify(self, x):
        """(B, C, *S) -> (B, N, C * prod(p)); channel-major within a patch, patches in raster order."""
        nd = len(self.input_size)
        if x.dim() != nd + 2 or tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(f"expected input (B, {self.in_channels}, {', '.join(map(str, self.input_size))}), "
                             f"got {tuple(x.shape)}")
        B = x.shape[0]
        shape = [B, self.in_channels]
        for g, p in zip(self.grid, self.patch_size):
            shape += [g, p]
        x = x.reshape(shape)
        # axes: 0 B, 1 C, then (grid_i, patch_i) pairs at 2 + 2i, 3 + 2i
        order = [0] + [2 + 2 * i for i in range(nd)] + [1] + [3 + 2 * i for i in range(nd)]
        return x.permute(order).reshape(B, self.num_patches, self.patch_dim)

    def forward(self, x):
        tokens = self.embed(self.patchify(x))
        if self.position == "fourier":
            return tokens + self.pos_proj(self.pos_enc.to(x.dtype))
        return tokens + self.pos_learned.to(x.dtype) if self.position == "learned" else tokens


class MambaEncoder(nn.Module):
    """Images (B, C, H, W) or volumes (B, C, D, H, W) -> LP latents (B, num_lp, dim)."""

    def __init__(self, input_size=(32, 32), in_channels=3, patch_size=2, *, dim=256, depth=6, num_lp=64,
                 lp_type="equidistant", n_group=2, lp_init="sinusoidal", n_freqs=8, combine="mean",
                 d_state=16, d_conv=4, expand=2, scan_backend="auto", mixer="bimamba", order="raster",
                 lp_content=False, position="fourier"):
        super().__init__()
        if mixer not in ("bimamba", "transformer"):
            raise ValueError(f"mixer must be 'bimamba' or 'transformer' (the baseline), got {mixer!r}")
        if order not in SEQUENCE_ORDERS:
            raise ValueError(f"order must be one of {SEQUENCE_ORDERS}, got {order!r}")
        if position == "rope" and mixer != "transformer":
            raise ValueError("position='rope' rotates the transformer's queries and keys: it needs mixer='transformer', "
                             f"got mixer={mixer!r}")
        self.tokenizer = PatchTokenizer(input_size, patch_size, in_channels, dim=dim, n_freqs=n_freqs,
                                        position="none" if position == "rope" else position)
        self.lp = ImplicitSequentialBias(num_lp, dim, self.tokenizer.num_patches, type=lp_type, n_group=n_group,
                                         init=lp_init)
        if mixer == "transformer":
            self.stack = TransformerStack(dim, depth, rope=position == "rope")
        else:
            self.stack = BiMambaStack(dim, depth, combine=combine, d_state=d_state, d_conv=d_conv,
                                      expand=expand, scan_backend=scan_backend)

        self.lattice = lp_lattice(self.tokenizer.grid, num_lp)
        self.order = order
        # the sequence order of the patch tokens and of the LPs (by their homes), and the inverse of each: plain
        # index tensors, not buffers (a moving average of the weights averages buffers, and would round these)
        for name, points in (("token", self.tokenizer.centres), ("lp", lp_homes(self.lattice))):
            seq = sequence_order(points, order)
            setattr(self, f"{name}_order", seq)
            setattr(self, f"{name}_inverse", seq.argsort())
        # lp_content: each LP also starts from a projection of the mean of its lattice cell's patch embeddings
        self.lp_content = nn.Linear(dim, dim) if lp_content else None
        if lp_content:
            pool = cell_pooling(self.tokenizer.centres, self.tokenizer.grid, self.lattice)
            self.register_buffer("lp_pool", pool[self.lp_order][:, self.token_order], persistent=False)

    def forward(self, x, with_tokens=False):
        """(B, C, *S) -> LP latents (B, M, dim), LP i the one whose home is ``lp_coords[i]``; with
        ``with_tokens`` also the encoded patch tokens (B, N, dim) in raster order of the patch grid
        (pixel-aligned features), whatever order the sequence reads them in."""
        curve = self.order != "raster"
        tokens = self.tokenizer(x)
        tokens = tokens[:, self.token_order.to(x.device)] if curve else tokens
        content = self.lp_content(self.lp_pool.to(tokens.dtype) @ tokens) if self.lp_content is not None else None
        encoded = self.stack(self.lp.add_lp(tokens, content))
        lps = self.lp.extract_lp_tokens(encoded)
        lps = lps[:, self.lp_inverse.to(x.device)] if curve else lps
        if not with_tokens:
            return lps
        tokens = encoded[:, self.lp.token_indices]
        return lps, (tokens[:, self.token_inverse.to(x.device)] if curve else tokens)

    @property
    def lp_coords(self):
        """The home of each LP (M, d): the points of the lattice ``self.lattice`` in raster order
        (see ``tokens.lp_lattice``). Used by local decoders and the locality bias."""
        return lp_homes(self.lattice)


@dataclass
class EncodedPoints:
    """Scattered points after ``PointEncoder``, in the order of its space-filling curve."""
    coords: torch.Tensor    # (B, N, d) in [0, 1]
    values: torch.Tensor    # (B, N, C), as given
    tokens: torch.Tensor    # (B, N, dim): each point's token after the BiMamba stack


class PointEncoder(nn.Module):
    """Scattered points -> ``EncodedPoints``. Each point is a token (a Linear of its value and of
    Fourier features of its coordinate, up to ``max_freq``); the tokens, ordered along a
    space-filling curve of their coordinates (``curves.curve_index``: Hilbert in 2-D, Morton
    otherwise) with ``num_lp`` LPs interleaved, pass through a BiMamba stack. Any number of points
    per call; the order makes neighbours in space neighbours in the sequence."""

    def __init__(self, coord_dim, channels, *, dim, depth, num_lp, d_state=16, n_freqs=8, max_freq=16.0):
        super().__init__()
        self.ff = FourierFeatures(coord_dim, n_freqs, max_freq=max_freq)
        self.embed = nn.Linear(self.ff.out_dim + channels, dim)
        self.lp = ImplicitSequentialBias(num_lp, dim, None, type="equidistant")
        self.stack = BiMambaStack(dim, depth, d_state=d_state)

    def forward(self, coords, values):
        """coords (B, N, d) in [0, 1], values (B, N, C) -> EncodedPoints (reordered along the curve)."""
        order = curve_index(coords).argsort(dim=1)
        coords, values = take_rows(coords, order), take_rows(values, order)
        tokens = self.embed(torch.cat([self.ff(coords), values], -1))
        encoded = self.stack(self.lp.add_lp(tokens))
        _, token_idx, _ = self.lp.indices(tokens.shape[1])
        return EncodedPoints(coords, values, encoded[:, token_idx])
