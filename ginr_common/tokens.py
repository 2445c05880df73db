"""Learnable position tokens (LPs): the implicit sequential bias of Mamba-GINR.

M learnable tokens are interleaved into the N input tokens; after the sequence model only the
LP slots are read out, as the latent (B, M, D). Insertion and extraction use one index list,
``lp_indices`` (positions of the LPs in the interleaved sequence of length N + M), for every
placement type:
- ``equidistant``: LP i at floor(i * (N + M) / M)  -> ``L____L____...`` for N=40, M=10
- ``middle``: one contiguous block of M slots centred in the sequence
- ``n_group``: M / n groups of n consecutive LPs, group j starting at floor(j * (N + M) / (M / n))
- ``random``: M of the N + M slots drawn once (a fixed permutation, seed 0), the same for every input

Each LP also has a *home*: a point of an n-D lattice over the image (``lp_lattice`` picks its
shape from the tokenizer's grid, as isotropic as M allows), LP i at the i-th lattice point in
raster order. The sequence order of the LPs is the raster order of their homes for every
placement type, and the one index list serves insertion and extraction, so the LP read out as
latent i is the one inserted for home i.
"""
import math

import torch
from torch import nn

LP_TYPES = ("equidistant", "middle", "n_group", "random")


def lp_placement(input_len, num_lp, type="equidistant", n_group=2):
    """Sorted positions of the LPs in the interleaved sequence of length input_len + num_lp."""
    if num_lp < 1:
        raise ValueError(f"num_lp must be >= 1, got {num_lp}")
    if input_len < 0:
        raise ValueError(f"input_len must be >= 0, got {input_len}")
    if type not in LP_TYPES:
        raise ValueError(f"type must be one of {LP_TYPES}, got {type!r}")
    total = input_len + num_lp
    if type == "equidistant":
        return [i * total // num_lp for i in range(num_lp)]
    if type == "middle":
        start = (total - num_lp) // 2
        return list(range(start, start + num_lp))
    if type == "random":
        return sorted(torch.randperm(total, generator=torch.Generator().manual_seed(0))[:num_lp].tolist())
    if n_group < 1 or num_lp % n_group:
        raise ValueError(f"n_group must divide num_lp={num_lp}, got n_group={n_group}")
    groups = num_lp // n_group
    return [j * total // groups + k for j in range(groups) for k in range(n_group)]


def lp_lattice(grid, num_lp):
    """The lattice shape (g_1, ..., g_d) with prod = num_lp whose spacing is the most even over a
    token grid of shape ``grid`` (g_i proportional to grid_i where num_lp allows), e.g. 64 LPs
    on a 16x16 grid -> (8, 8), 128 -> (8, 16); a prime count gives a single row."""
    grid = tuple(int(g) for g in grid)
    if num_lp < 1 or not grid:
        raise ValueError(f"num_lp must be >= 1 and grid non-empty, got {num_lp}, {grid}")

    def factorizations(n, d):
        if d == 1:
            yield (n,)
            return
        for f in range(1, n + 1):
            if n % f == 0:
                for rest in factorizations(n // f, d - 1):
                    yield (f, *rest)

    def anisotropy(shape):   # spread of the spacing ratios grid_i / g_i, in log space
        r = [math.log(gr / g) for gr, g in zip(grid, shape)]
        return max(r) - min(r), shape

    return min(anisotropy(f) for f in factorizations(num_lp, len(grid)))[1]


def lp_homes(lattice):
    """Pixel-centre coordinates (M, d) of the lattice points in raster order (LP i -> row i)."""
    axes = [(torch.arange(g, dtype=torch.float32) + 0.5) / g for g in lattice]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lattice))


def cell_pooling(centres, grid, lattice):
    """The (M, N) matrix that averages, for each LP (its home on ``lattice``, raster order), the
    patch tokens (centres (N, d) on ``grid``) of its lattice cell; where there are more LPs than
    tokens, each LP takes the token whose patch holds its home. Rows sum to 1."""
    homes = lp_homes(lattice)
    if len(homes) <= len(centres):
        owner = _raster_cell(centres, lattice)                       # the LP cell of each token
        a = (owner[None, :] == torch.arange(len(homes))[:, None]).float()
    else:
        holder = _raster_cell(homes, grid)                           # the token cell of each LP's home
        a = (holder[:, None] == torch.arange(len(centres))[None, :]).float()
    return a / a.sum(1, keepdim=True).clamp_min(1)


def _raster_cell(points, shape):
    """The raster index of the cell of a grid of ``shape`` that holds each point (N, d) in [0, 1]."""
    idx = torch.zeros(len(points), dtype=torch.long)
    for axis, g in enumerate(shape):
        idx = idx * g + (points[:, axis] * g).floor().long().clamp(0, g - 1)
    return idx


def placement_string(input_len, num_lp, type="equidistant", n_group=2):
    """'L' for an LP slot, '_' for an input token."""
    s = ["_"] * (input_len + num_lp)
    for i in lp_placement(input_len, num_lp, type, n_group):
        s[i] = "L"
    return "".join(s)


def lp_diversity(lps):
    """1 - mean pairwise cosine similarity of the LP vectors (M, D) (the usual LP-collapse diagnostic: above 0.5 is healthy)."""
    x = nn.functional.normalize(lps.detach().float(), dim=-1)
    return float(1 - (x @ x.t()).mean())


def sinusoidal(positions, dim):
    """Transformer sinusoidal embedding of positions (L,) -> (L, dim): sin and cos of position /
    10000^(2k / dim), interleaved (sin in even columns). Integer positions give float32; real
    positions (times, for instance) keep their dtype and device."""
    pos = torch.as_tensor(positions)
    pos = (pos if pos.is_floating_point() else pos.float())[:, None]
    i = torch.arange(0, dim, 2, dtype=pos.dtype, device=pos.device)
    ang = pos / 10000 ** (i / dim)
    emb = torch.zeros(len(pos), dim, dtype=pos.dtype, device=pos.device)
    emb[:, 0::2] = torch.sin(ang)
    emb[:, 1::2] = torch.cos(ang)[:, : dim // 2]
    return emb


class ImplicitSequentialBias(nn.Module):
    """``add_lp`` (B, N, D) -> (B, N+M, D); ``extract_lp_tokens`` (B, N+M, D) -> (B, M, D).
    ``input_len=None`` accepts any N (the index list is then made per length)."""

    def __init__(self, num_lp, dim, input_len=None, *, type="equidistant", n_group=2, init="sinusoidal"):
        super().__init__()
        idx = lp_placement(input_len or 0, num_lp, type, n_group)  # validates
        if init not in ("sinusoidal", "normal"):
            raise ValueError(f"init must be 'sinusoidal' or 'normal', got {init!r}")
        self.num_lp, self.dim, self.input_len, self.type, self.n_group = num_lp, dim, input_len, type, n_group
        lps = sinusoidal(idx, dim) if init == "sinusoidal" else torch.randn(num_lp, dim) * 0.02
        self.lps = nn.Parameter(lps)
        self._index_cache = {}

    def indices(self, input_len):
        """(lp_indices, token_indices, perm) for an input of ``input_len`` tokens, where perm maps
        each position of the interleaved sequence to a row of cat([tokens, lps])."""
        key = (input_len, self.lps.device)
        if key not in self._index_cache:
            idx = torch.tensor(lp_placement(input_len, self.num_lp, self.type, self.n_group))
            is_lp = torch.zeros(input_len + self.num_lp, dtype=torch.bool)
            is_lp[idx] = True
            perm = torch.empty(len(is_lp), dtype=torch.long)
            perm[~is_lp] = torch.arange(input_len)
            perm[is_lp] = input_len + torch.arange(self.num_lp)
            dev = self.lps.device
            self._index_cache[key] = (idx.to(dev), (~is_lp).nonzero().flatten().to(dev), perm.to(dev))
        return self._index_cache[key]

    @property
    def lp_indices(self):
        return self.indices(self.input_len or 0)[0]

    @property
    def token_indices(self):
        return self.indices(self.input_len or 0)[1]

    def _check_len(self, n, what):
        if self.input_len is not None and n != self.input_len:
            raise ValueError(f"{what} (expected input_len={self.input_len}), got {n}")

    def add_lp(self, tokens, content=None):
        """(B, N, D) -> (B, N + M, D): the LPs interleaved; ``content`` (B, M, D), if given, is added
        to the LPs (what each LP starts from besides its learned vector)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens must be (B, N, dim={self.dim}), got {tuple(tokens.shape)}")
        self._check_len(tokens.shape[1], f"tokens must be (B, input_len={self.input_len}, {self.dim})")
        lps = self.lps.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        lps = lps if content is None else lps + content
        return torch.cat([tokens, lps], dim=1)[:, self.indices(tokens.shape[1])[2]]

    def extract_lp_tokens(self, encoded):
        if encoded.dim() != 3 or encoded.shape[1] <= self.num_lp:
            raise ValueError(f"encoded must be (B, N + num_lp, D) with N >= 1, got {tuple(encoded.shape)}")
        n = encoded.shape[1] - self.num_lp
        if self.input_len is not None and n != self.input_len:
            raise ValueError(f"encoded must be (B, input_len + num_lp = {self.input_len + self.num_lp}, D), "
                             f"got {tuple(encoded.shape)}")
        return encoded[:, self.indices(n)[0]]

    def visualize_placement(self, input_len=None):
        return placement_string(input_len or self.input_len or 0, self.num_lp, self.type, self.n_group)

    def extra_repr(self):
        return f"num_lp={self.num_lp}, dim={self.dim}, input_len={self.input_len}, type={self.type!r}"


class SequentialBiasVisualization:
    """``visualize_placement(seq_len, num_lp, type)`` where seq_len is the
    length of the interleaved sequence (LPs included); prints and returns the pattern."""

    @staticmethod
    def visualize_placement(seq_len, num_lp, type="equidistant", n_group=2):
        if seq_len < num_lp:
            raise ValueError(f"seq_len (LPs included) must be >= num_lp={num_lp}, got {seq_len}")
        s = placement_string(seq_len - num_lp, num_lp, type, n_group)
        print(s)
        return s


