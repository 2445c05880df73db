"""Flow matching for sparse field reconstruction: observe a fraction of an image's pixels (values
and coordinates) and sample the whole continuous field at any coordinates.

The model, in the order a sample is drawn:

1. **Encode the observations** (once per set of samples): each observed pixel is a token (its value and
   Fourier features of its coordinate); the tokens, ordered along a space-filling curve, with
   learnable position tokens (LPs) interleaved, pass through a BiMamba stack.
2. **Condition every query** (once per set of samples): a query reads its ``neighbours`` nearest
   observations (their encoded tokens, values and offsets in base-grid pixels, in the manner of
   LIIF's local reading) and its cell size (the pixel footprint of the render). Beside the
   learned features it gets a *guide*: the normalised convolution of the observations (a Gaussian
   of ``guide_sigma`` base pixels) or (``guide="linear"``) their piecewise-linear interpolation,
   and the observation density there. With ``grid_blocks`` > 0 a *grid refiner* sees the guide
   in context: the observations rasterised on the base grid (the guide at every cell, a mask
   of the observed cells and their values) pass through residual convolution blocks, and each
   query reads the resulting feature map where it lies (bilinearly). A linear head on top gives
   ``mu``, the model's own one-shot estimate of the field (trained by MSE, a residual over the
   guide).
3. **A bridge from the estimate**: the flow starts at x0 = mu + ``noise_scale`` * z, z a noise
   field, and carries it to the field x1 along x_t = (1 - t) x0 + t x1. The network predicts x1
   from x_t, preconditioned as in EDM (``scalings``): x1_hat = mu + c_skip (x_t - mu) + c_out F,
   and the velocity is (x1_hat - x_t) / (1 - t). With ``local_spread`` the refiner also predicts the
   spread a of x1 - mu at every query (trained by its Gaussian likelihood): the noise is then
   ``noise_scale`` * a * z and the preconditioning assumes a spread ``residual_std`` * a, so samples
   vary where the estimate is unsure and stay flat where it is sure.
4. **A joint velocity field**: at every step the queries, with their conditioning, their noisy
   values x_t and the time, are ordered along a Hilbert curve of their coordinates (the
   transposed curve on every other layer) and mixed by BiMamba blocks, so the velocity at one
   query depends on the noisy values at the others and a sample is spatially coherent.

Noise is a field of the coordinate: a Gaussian process with a squared-exponential kernel of
``noise_length`` base pixels, drawn as ``noise_features`` random Fourier features fixed by the
generator, so renders at 32, 64, 96 and 128 with one generator are samples of one field, with
no grid blocks. Values live in [-1, 1] inside the model, [0, 1] outside.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ginr_common.baselines import interpolate_sparse
from ginr_common.fourier import FourierFeatures, make_grid
from ginr_common.inputs import as_coords, as_unit_range
from ginr_common.mamba import BiMambaStack, EncoderBlock, BiMamba
from ginr_common.tokens import ImplicitSequentialBias


@dataclass
class FlowConfig:
    name: str = "flow_sparse"
    input_size: tuple = (32, 32)   # the base grid: observations are pixels of an image this size
    in_channels: int = 3
    observe_frac: float = 0.2
    dim: int = 64                  # observation encoder width
    depth: int = 2                 # observation encoder BiMamba blocks
    num_lp: int = 32
    d_state: int = 16
    coord_freqs: int = 8
    max_freq: float = 16.0         # top frequency of the coordinate features
    hidden: int = 64               # query width
    neighbours: int = 8            # observations each query reads
    mixer_depth: int = 2           # BiMamba blocks over the queries at every step
    guide: str = "normconv"        # the guide mu corrects: "normconv" (normalised convolution) or "linear"
                                   # (piecewise-linear interpolation over the observations' Delaunay triangles)
    guide_sigma: float = 1.0       # normalised-convolution guide (and the density feature): Gaussian width, base pixels
    noise_scale: float = 0.15      # x0 = mu + noise_scale * z (values in [-1, 1])
    residual_std: float = 0.15     # assumed spread of x1 - mu, for the preconditioning of predict()
    noise_length: float = 0.5      # correlation length of the noise field, base pixels
    noise_features: int = 512
    mu_weight: float = 1.0         # weight of the MSE on mu in the training loss
    neighbour_filter: bool = False  # mu also adds sum_j w_j (v_j - guide) over the nearest observations, the
                                    # weights predicted per query and neighbour (a learned, content-aware kernel)
    grid_blocks: int = 0           # residual 3x3 convolution blocks of the grid refiner (0: none)
    grid_width: int = 64           # channels of the grid refiner
    local_spread: bool = False     # the bridge's noise and the preconditioning scale per query by a spread the grid
                                   # refiner predicts (trained by the Gaussian likelihood of x1 - mu): samples vary
                                   # where the estimate is unsure and stay flat where it is sure (needs grid_blocks)
    chunk: int = 4096              # queries per chunk when reading the observations

    def __post_init__(self):
        self.input_size = tuple(self.input_size)
        if not 0 < self.observe_frac < 1:
            raise ValueError(f"observe_frac must be in (0, 1), got {self.observe_frac}")
        for k in ("neighbours", "noise_features", "hidden", "dim"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.guide not in ("normconv", "linear"):
            raise ValueError(f"guide must be 'normconv' or 'linear', got {self.guide!r}")
        if self.grid_blocks < 0 or self.grid_width < 1:
            raise ValueError(f"grid_blocks must be >= 0 and grid_width >= 1, got {self.grid_blocks} and "
                             f"{self.grid_width}")
        if self.grid_blocks and len(self.input_size) not in (2, 3):
            raise ValueError(f"the grid refiner (grid_blocks > 0) needs a 2-d or 3-d input_size, got "
                             f"{self.input_size}")
        if self.local_spread and not self.grid_blocks:
            raise ValueError("local_spread needs the grid refiner (grid_blocks > 0), got grid_blocks=0")
        if self.mixer_depth < 0:
            raise ValueError(f"mixer_depth must be >= 0 (0: no mixing of the queries), got {self.mixer_depth}")


# ---------------------------------------------------------------------- space-filling curves
def curve_index(coords, transpose=False, bits=16):
    """Position of each coordinate (B, Q, d) in [0, 1] along a space-filling curve -> (B, Q)
    long: the Hilbert curve for d = 2 (axes swapped with ``transpose``), the Morton (Z) curve
    otherwise. Nearby coordinates get nearby indices, whatever the set of coordinates."""
    n = 1 << bits
    q = (coords.clamp(0, 1) * n).long().clamp(max=n - 1)     # the cell of a 2^bits grid
    if transpose:
        q = q.flip(-1)
    if q.shape[-1] != 2:
        idx = torch.zeros(q.shape[:-1], dtype=torch.long, device=q.device)
        for b in range(bits):
            for a in range(q.shape[-1]):
                idx |= ((q[..., a] >> b) & 1) << (b * q.shape[-1] + a)
        return idx
    y, x = q[..., 0], q[..., 1]
    d = torch.zeros_like(x)
    s = n // 2
    while s > 0:
        rx, ry = (x & s) > 0, (y & s) > 0
        d += s * s * ((3 * rx.long()) ^ ry.long())
        flip = (~ry) & rx
        x, y = torch.where(flip, n - 1 - x, x), torch.where(flip, n - 1 - y, y)
        x, y = torch.where(~ry, y, x), torch.where(~ry, x, y)
        s //= 2
    return d


def curve_orders(coords, n):
    """``n`` (order, inverse) pairs of (B, Q) indices, alternating the curve and its transpose."""
    out = []
    for i in range(min(n, 2)):
        order = curve_index(coords, transpose=bool(i % 2)).argsort(dim=1)
        out.append((order, order.argsort(dim=1)))
    return [out[i % len(out)] for i in range(n)]


def _rows(x, idx):
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))


# ---------------------------------------------------------------------- the noise field
def coordinate_noise(coords, size, channels, generator=None, length=0.5, features=512):
    """z at coords (B, Q, d): per image a draw of a Gaussian process with a squared-exponential
    kernel of ``length`` pixels of the ``size`` grid (random Fourier features; marginally close
    to N(0, 1)). The field is fixed by the generator, so every resolution reads the same field."""
    B, d = coords.shape[0], coords.shape[-1]
    w = torch.randn(B, features, d, generator=generator) / length
    b = torch.rand(B, features, generator=generator) * 2 * math.pi
    a = torch.randn(B, features, channels, generator=generator)
    w, b, a = (t.to(coords.device, torch.float32) for t in (w, b, a))
    u = coords.float() * torch.tensor(size, device=coords.device, dtype=torch.float32)
    phase = torch.einsum("bqd,bfd->bqf", u, w) + b[:, None]
    return (math.sqrt(2 / features) * torch.cos(phase) @ a).to(coords.dtype)


def timestep_embedding(t, dim):
    """Sinusoidal embedding of t in [0, 1] (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    ang = 1000 * t[:, None] * freqs
    return torch.cat([ang.sin(), ang.cos()], -1)


def default_cell(query_coords, size):
    """The pixel footprint of a set of queries (B, d): per axis, the smallest gap between
    distinct coordinate values (1 / S for an S-pixel grid), at most one base pixel and at least
    an eighth of one."""
    base = 1 / torch.tensor(size, dtype=query_coords.dtype, device=query_coords.device)
    cells = []
    for a in range(query_coords.shape[-1]):
        v = query_coords[..., a].sort(dim=1).values
        gap = v.diff(dim=1)
        gap = torch.where(gap > 1e-7, gap, torch.full_like(gap, math.inf)).amin(1) if gap.shape[1] else \
            torch.full(v.shape[:1], math.inf, dtype=v.dtype, device=v.device)
        cells.append(gap)
    cell = torch.stack(cells, -1)
    return torch.minimum(torch.maximum(cell, base / 8), base.expand_as(cell))


# ---------------------------------------------------------------------- the grid refiner
class GridRefiner(nn.Module):
    """Residual convolution blocks over the base grid: input (B, 2C+1, *S) = the guide at every
    cell, a mask of the observed cells and their observed values (zero elsewhere), all in
    [-1, 1] -> (features (B, width, *S), a correction of the guide (B, C, *S), zero at
    initialisation; ``outputs`` > C: more maps after it). Dilations cycle 1, 2, 4, so six blocks see about 30 cells."""

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


class SparseFieldFlow(nn.Module):
    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = c = config
        d, C, H = len(c.input_size), c.in_channels, c.hidden
        self.ff = FourierFeatures(d, c.coord_freqs, max_freq=c.max_freq)
        self.obs_embed = nn.Linear(self.ff.out_dim + C, c.dim)
        self.lp = ImplicitSequentialBias(c.num_lp, c.dim, None, type="equidistant")
        self.stack = BiMambaStack(c.dim, c.depth, d_state=c.d_state)
        self.offset_ff = FourierFeatures(d, 4, max_freq=4.0)
        # reading the nearest observations: features and a logit per neighbour
        self.read = nn.Sequential(nn.Linear(c.dim + C + self.offset_ff.out_dim + 2 * d, H), nn.GELU(),
                                  nn.Linear(H, H + 1))
        self.refiner = GridRefiner(d, C, c.grid_width, c.grid_blocks, C * (1 + c.local_spread)) \
            if c.grid_blocks else None
        G = c.grid_width if c.grid_blocks else 0
        self.cond = nn.Sequential(nn.Linear(H + 2 * C + 1 + d + G, H), nn.GELU(), nn.Linear(H, H))
        self.mu_head = nn.Linear(H, C)
        nn.init.zeros_(self.mu_head.weight)
        nn.init.zeros_(self.mu_head.bias)
        self.nbr_filter = None
        if c.neighbour_filter:   # weight of each neighbour from its own reading and the pooled one
            self.nbr_filter = nn.Sequential(nn.Linear(2 * H, H), nn.GELU(), nn.Linear(H, 1))
            nn.init.zeros_(self.nbr_filter[-1].weight)
            nn.init.zeros_(self.nbr_filter[-1].bias)
        self.x_embed = nn.Linear(2 * C, H)
        self.t_embed = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H))
        self.t_proj = nn.ModuleList(nn.Linear(H, H) for _ in range(c.mixer_depth))
        self.mixer = nn.ModuleList(EncoderBlock(H, BiMamba(H, d_state=c.d_state)) for _ in range(c.mixer_depth))
        self.head = nn.Sequential(nn.LayerNorm(H), nn.Linear(H, C))

    # ------------------------------------------------------------------ checks
    def _check(self, coords, values=None, what="coords"):
        d, C = len(self.config.input_size), self.config.in_channels
        if not torch.is_tensor(coords) or coords.dim() != 3 or coords.shape[-1] != d:
            shape = tuple(coords.shape) if torch.is_tensor(coords) else type(coords).__name__
            raise ValueError(f"{what} must be (B, N, {d}) pixel-centre coordinates in [0, 1], got {shape}")
        if coords.shape[0] == 0 or coords.shape[1] == 0:
            raise ValueError(f"{what} must hold at least one image and one point, got shape {tuple(coords.shape)}")
        if values is not None and (not torch.is_tensor(values) or values.shape != (*coords.shape[:2], C)):
            raise ValueError(f"values must be (B, N, {C}) matching {what} {tuple(coords.shape)}, got "
                             f"{tuple(values.shape) if torch.is_tensor(values) else type(values).__name__}")
        return as_coords(coords, d, what, self.obs_embed.weight.dtype)

    @staticmethod
    def _check_batches(obs_coords, query_coords):
        if obs_coords.shape[0] != query_coords.shape[0]:
            raise ValueError(f"obs_coords and query_coords must hold the same number of images, got "
                             f"{obs_coords.shape[0]} and {query_coords.shape[0]} (shapes {tuple(obs_coords.shape)} "
                             f"and {tuple(query_coords.shape)})")

    def _observations(self, obs_coords, obs_values):
        """Checked observations: (coordinates (B, N, d), values (B, N, C) in [-1, 1])."""
        obs_coords = self._check(obs_coords, obs_values, "obs_coords")
        return obs_coords, 2 * as_unit_range(obs_values, "obs_values", obs_coords.dtype) - 1

    # ------------------------------------------------------------------ 1. encode the observations
    def encode(self, obs_coords, obs_values):
        """Observations (B, N, d) coordinates and (B, N, C) values in [0, 1] -> memory: a dict of
        their coordinates, values in [-1, 1] and encoded tokens (B, N, dim)."""
        obs_coords, values = self._observations(obs_coords, obs_values)
        if obs_coords.shape[1] < self.config.neighbours:
            raise ValueError(f"need at least neighbours={self.config.neighbours} observations, got "
                             f"{obs_coords.shape[1]}")
        order = curve_index(obs_coords).argsort(dim=1)
        coords, values = _rows(obs_coords, order), _rows(values, order)
        tokens = self.obs_embed(torch.cat([self.ff(coords), values], -1))
        enc = self.stack(self.lp.add_lp(tokens))
        _, tok_idx, _ = self.lp.indices(tokens.shape[1])
        memory = {"coords": coords, "values": values, "tokens": enc[:, tok_idx]}
        if self.refiner is not None:
            memory.update(self.refine(memory))
        return memory

    def refine(self, memory):
        """The grid refiner over the observations in ``memory`` (their coordinates and values in
        [-1, 1]) -> {"grid": its feature map (B, grid_width, *S), "correction": its correction of
        the guide (B, C, *S)} and with ``local_spread`` "log_spread" (B, C, *S)."""
        coords, values, size = memory["coords"], memory["values"], self.config.input_size
        grid = make_grid(size).to(coords).expand(coords.shape[0], -1, -1)
        guide = self.guide(memory, grid).transpose(1, 2).reshape(coords.shape[0], -1, *size)
        mask, observed = rasterise(coords, values, size)
        feats, out = self.refiner(torch.cat([guide, mask, observed], 1))
        C = self.config.in_channels
        return {"grid": feats, "correction": out[:, :C], **({"log_spread": out[:, C:]} if out.shape[1] > C else {})}

    def spread(self, memory, query_coords):
        """The relative spread of x1 - mu at the queries (B, Q, C) (1 at initialisation; the
        residual's spread is ``residual_std`` times it), or None without ``local_spread``."""
        if "log_spread" not in memory:
            return None
        return read_grid(memory["log_spread"], query_coords).clamp(-5, 3).exp()

    # ------------------------------------------------------------------ 2. condition the queries
    def guide(self, memory, query_coords):
        """The guide at query_coords (B, Q, d) -> (B, Q, C) in [-1, 1]: the normalised convolution
        of the observations (no observation within reach: the nearest one), or their piecewise-
        linear interpolation (``guide="linear"``: scipy's Delaunay interpolation per image on the
        CPU, a constant of the model)."""
        c = self.config
        if c.guide == "linear":
            return 2 * interpolate_sparse(memory["coords"], (memory["values"] + 1) / 2, query_coords).to(
                query_coords) - 1
        size = torch.tensor(c.input_size, dtype=query_coords.dtype, device=query_coords.device)
        out = []
        for i in range(0, query_coords.shape[1], c.chunk):
            delta = (memory["coords"][:, None] - query_coords[:, i:i + c.chunk, None]) * size
            dist2 = delta.pow(2).sum(-1)
            w = torch.exp(-dist2 / (2 * c.guide_sigma ** 2))
            density = w.sum(-1, keepdim=True)
            nearest = _rows(memory["values"], dist2.argmin(-1))
            out.append(torch.where(density < 1e-6, nearest, (w @ memory["values"]) / density.clamp_min(1e-6)))
        return torch.cat(out, 1)

    def condition(self, memory, query_coords, cell=None):
        """Per-query conditioning (B, Q, hidden), the estimate mu (B, Q, C) and the guide (B, Q, C),
        values in [-1, 1]. ``cell`` (B, d) or (d,): the render's pixel size (default: read from
        the queries, see ``default_cell``)."""
        c = self.config
        query_coords = self._check(query_coords, what="query_coords")
        self._check_batches(memory["coords"], query_coords)
        size = torch.tensor(c.input_size, dtype=query_coords.dtype, device=query_coords.device)
        if cell is None:
            cell = default_cell(query_coords, c.input_size)
        cell = torch.as_tensor(cell, dtype=query_coords.dtype, device=query_coords.device)
        cell = cell.expand(query_coords.shape[0], -1)[:, None] * size        # base pixels
        feats, filt = [], []
        guide_all = self.guide(memory, query_coords)
        grid_all = read_grid(memory["grid"], query_coords) if "grid" in memory else None
        for i in range(0, query_coords.shape[1], c.chunk):
            q = query_coords[:, i:i + c.chunk]
            delta = (memory["coords"][:, None] - q[:, :, None]) * size          # (B, q, N, d) base pixels
            dist2 = delta.pow(2).sum(-1)
            w = torch.exp(-dist2 / (2 * c.guide_sigma ** 2))
            density = w.sum(-1, keepdim=True)
            d2, j = dist2.topk(c.neighbours, dim=-1, largest=False)             # (B, q, k)
            nearest = lambda x: x.gather(1, j.flatten(1)[..., None].expand(-1, -1, x.shape[-1])  # noqa: E731
                                         ).view(*j.shape, x.shape[-1])
            vals = nearest(memory["values"])
            guide = guide_all[:, i:i + c.chunk]
            off = delta.gather(2, j[..., None].expand(-1, -1, -1, delta.shape[-1]))
            cellq = cell.expand(-1, q.shape[1], -1)[:, :, None].expand_as(off)
            r = self.read(torch.cat([nearest(memory["tokens"]), vals, self.offset_ff(off / 4), off, cellq], -1))
            hj, logit = r[..., :-1], r[..., -1:]
            h = (logit.softmax(2) * hj).sum(2)
            extra = [] if grid_all is None else [grid_all[:, i:i + c.chunk]]
            feats.append(self.cond(torch.cat([h, guide, vals[:, :, 0], density.log1p(),
                                              cell.expand(-1, q.shape[1], -1), *extra], -1)))
            if self.nbr_filter is not None:   # zero DC: the weights move mu off the guide only by detail
                wj = self.nbr_filter(torch.cat([hj, h[:, :, None].expand_as(hj)], -1))        # (B, q, k, 1)
                filt.append((wj * (vals - guide[:, :, None])).sum(2))
        cond, guide = torch.cat(feats, 1), guide_all
        mu = guide + self.mu_head(cond) + (torch.cat(filt, 1) if filt else 0)
        if "correction" in memory:   # the refiner's correction of the guide, read where each query lies
            mu = mu + read_grid(memory["correction"], query_coords)
        return cond, mu, guide

    # ------------------------------------------------------------------ 4. the joint velocity
    def scalings(self, t, spread=None):
        """(c_in, c_skip, c_out) at times t (B, 1, 1): if x1 - mu were N(0, r^2) (r =
        ``residual_std``), E[x1 - mu | x_t] = c_skip (x_t - mu) and c_out is its posterior spread;
        c_in makes x_t - mu unit-variance (the preconditioning of EDM, for this bridge). ``spread``
        (B, Q, C) scales r and the noise per query (``local_spread``)."""
        r, s = self.config.residual_std, self.config.noise_scale
        if spread is not None:
            r, s = r * spread, s * spread
        var = (t * r) ** 2 + ((1 - t) * s) ** 2
        return var.rsqrt(), t * r ** 2 / var, r * s * (1 - t) / var.sqrt()

    def network(self, cond, mu, x_t, t, orders, spread=None):
        """The raw network output F (B, Q, C): the queries, with their conditioning, the scaled
        noisy values and the time, mixed along ``orders``."""
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).expand(x_t.shape[0])
        c_in, _, _ = self.scalings(t[:, None, None], spread)
        temb = self.t_embed(timestep_embedding(t, self.config.hidden))
        h = cond + self.x_embed(torch.cat([x_t, c_in * (x_t - mu)], -1))
        for blk, proj, (order, inverse) in zip(self.mixer, self.t_proj, orders):
            h = _rows(blk(_rows(h + proj(temb)[:, None], order)), inverse)
        return self.head(h)

    def predict(self, cond, mu, x_t, t, orders, spread=None):
        """The model's estimate of the field x1 (B, Q, C) from the conditioning (B, Q, hidden), the
        estimate mu and the noisy values x_t (B, Q, C) at time t (B,) or scalar:
        mu + c_skip (x_t - mu) + c_out F, the queries mixed along ``orders``
        (``curve_orders(query_coords, mixer_depth)``); ``spread``: see ``scalings``."""
        t_ = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).expand(x_t.shape[0])[:, None, None]
        _, c_skip, c_out = self.scalings(t_, spread)
        return mu + c_skip * (x_t - mu) + c_out * self.network(cond, mu, x_t, t, orders, spread)

    def velocity(self, cond, mu, x_t, t, orders, spread=None):
        """The velocity (x1_hat - x_t) / (1 - t) of the straight path through x_t (t < 1)."""
        t_ = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).reshape(-1, 1, 1)
        return (self.predict(cond, mu, x_t, t, orders, spread) - x_t) / (1 - t_).clamp_min(1e-4)

    def forward(self, obs_coords, obs_values, query_coords, cell, z, t, targets):
        """Training pass: (F, its target (x1 - mu - c_skip (x_t - mu)) / c_out, mu, x1, the spread
        (``spread``; None without ``local_spread``)), values in [-1, 1]. With ``t`` None, the grid
        refiner's estimate alone (the guide and its correction, without the observation encoder
        and the flow): (None, None, that estimate, x1, the spread)."""
        x1 = 2 * targets - 1
        if t is None:
            if self.refiner is None:
                raise ValueError("the refiner's estimate alone (t=None) needs grid_blocks > 0")
            coords, values = self._observations(obs_coords, obs_values)
            memory = {"coords": coords, "values": values}
            query_coords = self._check(query_coords, what="query_coords")
            self._check_batches(coords, query_coords)
            memory.update(self.refine(memory))
            mu = self.guide(memory, query_coords) + read_grid(memory["correction"], query_coords)
            return None, None, mu, x1, self.spread(memory, query_coords)
        memory = self.encode(obs_coords, obs_values)
        cond, mu, _ = self.condition(memory, query_coords, cell)
        spread = self.spread(memory, query_coords)
        a = None if spread is None else spread.detach()
        t = t.to(x1.dtype)
        t_ = t[:, None, None]
        m = mu.detach()
        x_t = (1 - t_) * (m + self.config.noise_scale * (1 if a is None else a) * z) + t_ * x1
        _, c_skip, c_out = self.scalings(t_, a)
        out = self.network(cond, m, x_t, t, curve_orders(query_coords, self.config.mixer_depth), a)
        return out, (x1 - m - c_skip * (x_t - m)) / c_out.clamp_min(1e-3), mu, x1, spread

    # ------------------------------------------------------------------ noise, sampling
    def noise(self, coords, generator=None):
        """z at coords (B, Q, d): the model's noise field, fixed by the generator."""
        c = self.config
        return coordinate_noise(coords, c.input_size, c.in_channels, generator, c.noise_length, c.noise_features)

    @torch.no_grad()
    def estimate(self, obs_coords, obs_values, query_coords, cell=None):
        """The one-shot estimate mu (B, Q, C) in [0, 1] (the flow's starting point, no noise)."""
        _, mu, _ = self.condition(self.encode(obs_coords, obs_values), query_coords, cell)
        return ((mu + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def sample(self, obs_coords, obs_values, query_coords, steps=8, solver="euler", generator=None,
               hold_known=False, cell=None, z=None, context=None):
        """Integrate dx/dt = v from t=0 (x0 = mu + noise_scale * z) to 1 -> values (B, Q, C) in
        [0, 1] at query_coords (any coordinates). ``z``: the noise field at the queries (B, Q, C)
        (default: drawn with ``generator``, see ``noise``). ``hold_known``: queries at observed
        coordinates follow the straight path to their observed value at every step and end
        exactly on it. ``context``: ``self.context(...)`` of the same arguments, to reuse
        between samples (default: computed here)."""
        if solver not in ("euler", "heun"):
            raise ValueError(f"solver must be 'euler' or 'heun', got {solver!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if context is None:
            context = self.context(obs_coords, obs_values, query_coords, cell, hold_known)
        cond, mu, spread, orders, known = (context[k] for k in ("cond", "mu", "spread", "orders", "known"))
        if z is None:
            z = self.noise(context["query_coords"], generator)
        elif z.shape != mu.shape:
            raise ValueError(f"z must be the noise at the queries, {tuple(mu.shape)}, got {tuple(z.shape)}")
        x0 = mu + self.config.noise_scale * (1 if spread is None else spread) * z.to(mu)
        x, dt = x0, 1.0 / steps

        def hold(x, t):
            return x if known is None else torch.where(known[..., None], (1 - t) * x0 + t * context["x1_known"], x)

        for i in range(steps):
            t = i * dt
            x = hold(x, t)
            v = self.velocity(cond, mu, x, t, orders, spread)
            if solver == "heun" and i < steps - 1:     # the last step is Euler: v is undefined at t = 1
                x_e = hold(x + dt * v, t + dt)
                v = 0.5 * (v + self.velocity(cond, mu, x_e, t + dt, orders, spread))
            x = x + dt * v
        x = hold(x, 1.0)
        return ((x + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def context(self, obs_coords, obs_values, query_coords, cell=None, hold_known=False):
        """What every sample of these observations and queries shares (the encoded observations
        read by the queries: conditioning, estimate, spread, curve orders; with ``hold_known`` the
        queries at observed coordinates and their values): computed once, not per sample or step."""
        query_coords = self._check(query_coords, what="query_coords")
        memory = self.encode(obs_coords, obs_values)
        cond, mu, _ = self.condition(memory, query_coords, cell)
        out = {"query_coords": query_coords, "cond": cond, "mu": mu, "spread": self.spread(memory, query_coords),
               "orders": curve_orders(query_coords, self.config.mixer_depth), "known": None}
        if hold_known:
            oc, ov = self._observations(obs_coords, obs_values)
            dist, j = torch.cdist(query_coords, oc).min(-1)
            out["known"], out["x1_known"] = dist < 1e-6, _rows(ov.to(mu.dtype), j)
        return out

    @torch.no_grad()
    def samples(self, obs_coords, obs_values, query_coords, k=16, generator=None, antithetic=True, progress=False,
                **kw):
        """k samples (k, B, Q, C). ``antithetic``: in pairs with the noise fields z and -z (-z is as
        likely as z), so every sample is still a draw of the model while a pair's mean cancels
        the part of the samples that is odd in the noise: the mean of k samples is a
        lower-variance estimate of the model's posterior mean than k independent draws give.
        ``progress``: a progress bar over the samples; ``kw``: options of ``sample``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ctx = self.context(obs_coords, obs_values, query_coords, kw.get("cell"), kw.get("hold_known", False))
        out, z = [], None
        for i in tqdm(range(k), desc="samples", disable=not progress, leave=False):
            z = -z if antithetic and i % 2 else self.noise(ctx["query_coords"], generator)
            out.append(self.sample(obs_coords, obs_values, query_coords, z=z, context=ctx, **kw))
        return torch.stack(out)

    @torch.no_grad()
    def posterior(self, obs_coords, obs_values, query_coords, k=16, generator=None, antithetic=True, **kw):
        """(mean, std) over k samples (``samples``), each (B, Q, C); std is zero for k = 1."""
        xs = self.samples(obs_coords, obs_values, query_coords, k, generator, antithetic, **kw)
        return xs.mean(0), (xs.std(0) if k > 1 else torch.zeros_like(xs[0]))


def flow_matching_loss(model, batch, mu_weight=1.0):
    """Bridge flow matching in the preconditioned x1-prediction form: the MSE of the network's
    output F against (x1 - mu - c_skip (x_t - mu)) / c_out (the flow-matching loss on the
    velocity, weighted per time so every t carries equal weight), plus ``mu_weight`` x the MSE of
    the one-shot estimate mu in units of the residual's spread (divided by residual_std^2).
    ``model`` is the module to call (DDP-wrapped or not); ``batch`` holds obs_coords, obs_values,
    query_coords, cell, z, t, targets; a batch without t and z trains the grid refiner's estimate
    alone (the estimate's term only). With ``local_spread`` also the Gaussian negative log-likelihood
    of x1 - mu (mu held fixed) under the predicted spread. Returns (loss, mu in [0, 1] for a
    progress PSNR)."""
    out, target, mu, x1, spread = model(batch["obs_coords"], batch["obs_values"], batch["query_coords"],
                                        batch["cell"], batch.get("z"), batch.get("t"), batch["targets"])
    r = getattr(model, "module", model).config.residual_std
    loss = mu_weight * F.mse_loss(mu, x1) / r ** 2
    if spread is not None:
        sigma = r * spread
        loss = loss + (sigma.log() + 0.5 * ((x1 - mu.detach()) / sigma) ** 2).mean() - math.log(r) - 0.5
    if out is not None:
        loss = loss + F.mse_loss(out, target)
    return loss, ((mu.detach() + 1) / 2).clamp(0, 1)
