"""Flow matching for sparse field reconstruction: observe a fraction of an image's pixels (values
and coordinates) and sample the whole continuous field at any coordinates.

- Observed pixels become tokens (value + Fourier features of the coordinate) in raster order,
  with LPs interleaved, through the BiMamba stack. The encoder sees only the observations: it runs
  once per sample (not per ODE step) and does not depend on how many queries are decoded.
- Each query (coordinate, noisy value x_t, time t) is decoded by cross-attention to the encoded
  LPs (and, with ``attend_obs``, the encoded observations), with adaptive-LayerNorm time
  conditioning in every block and a residual path for x_t. Queries never attend to each other.
- x_t = (1 - t) x0 + t x1, x0 ~ N(0, I), target velocity x1 - x0, t ~ U(0, 1); values live in
  [-1, 1] inside the model, [0, 1] outside.
- Noise is a function of the coordinate: one N(0, 1) value per cell of the base grid
  (``input_size``), read by nearest cell, so renders at 32, 64, 96, 128 with one generator are
  samples of the same field (each render's noise is exactly N(0, I) per pixel).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ginr_common.decoders import CrossAttention
from ginr_common.fourier import FourierFeatures
from ginr_common.inputs import as_coords, as_unit_range
from ginr_common.mamba import BiMambaStack
from ginr_common.tokens import ImplicitSequentialBias


@dataclass
class FlowConfig:
    name: str = "flow_sparse"
    input_size: tuple = (32, 32)
    in_channels: int = 3
    observe_frac: float = 0.2
    dim: int = 128
    depth: int = 4
    num_lp: int = 64
    d_state: int = 16
    coord_freqs: int = 16
    max_freq: float = 32.0     # top frequency of the coordinate features: the base grid's Nyquist rate
    hidden: int = 256
    n_blocks: int = 4
    heads: int = 4
    attend_obs: bool = True
    query_chunk: int = 16384

    def __post_init__(self):
        self.input_size = tuple(self.input_size)
        if not 0 < self.observe_frac < 1:
            raise ValueError(f"observe_frac must be in (0, 1), got {self.observe_frac}")


def cell_index(coords, size):
    """Raster index of the base-grid cell holding each coordinate: (B, Q, d) -> (B, Q) long."""
    s = torch.tensor(size, device=coords.device)
    cell = torch.minimum((coords * s).floor().long().clamp(min=0), s - 1)
    strides = torch.tensor([math.prod(size[i + 1:]) for i in range(len(size))], device=coords.device)
    return (cell * strides).sum(-1)


def coordinate_noise(coords, size, channels, generator=None):
    """x0 at coords (B, Q, d): one N(0, 1) value per channel and cell of the ``size`` grid, read by
    the nearest cell, so every resolution sees the same noise field for one generator state."""
    z = torch.randn(coords.shape[0], math.prod(size), channels, generator=generator).to(coords.device, coords.dtype)
    idx = cell_index(coords, size)
    return z.gather(1, idx[..., None].expand(-1, -1, channels))


def timestep_embedding(t, dim):
    """Sinusoidal embedding of t in [0, 1] (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    ang = 1000 * t[:, None] * freqs
    return torch.cat([ang.sin(), ang.cos()], -1)


class FlowBlock(nn.Module):
    """Cross-attention of the queries to the memory, then an MLP; both pre-norm, modulated by the
    time embedding (shift, scale, gate: adaptive LayerNorm, zero-initialised gates)."""

    def __init__(self, hidden, mem_dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.attn = CrossAttention(hidden, mem_dim, heads)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))
        self.mod = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, h, memory, temb):
        s1, b1, g1, s2, b2, g2 = self.mod(temb)[:, None].chunk(6, -1)
        a, _ = self.attn(self.norm1(h) * (1 + s1) + b1, memory)
        h = h + g1 * a
        return h + g2 * self.mlp(self.norm2(h) * (1 + s2) + b2)


class SparseFieldFlow(nn.Module):
    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = c = config
        d, C = len(c.input_size), c.in_channels
        self.ff = FourierFeatures(d, c.coord_freqs, max_freq=c.max_freq)
        self.obs_embed = nn.Linear(self.ff.out_dim + C, c.dim)
        self.lp = ImplicitSequentialBias(c.num_lp, c.dim, None, type="equidistant")
        self.stack = BiMambaStack(c.dim, c.depth, d_state=c.d_state)
        self.q_embed = nn.Linear(self.ff.out_dim + C, c.hidden)
        self.t_embed = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.blocks = nn.ModuleList(FlowBlock(c.hidden, c.dim, c.heads) for _ in range(c.n_blocks))
        self.head = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, C))
        self.skip = nn.Linear(C, C)   # the residual path of the query's own noisy value

    # ------------------------------------------------------------------ encoder
    def _check(self, coords, values=None, what="coords"):
        d, C = len(self.config.input_size), self.config.in_channels
        if not torch.is_tensor(coords) or coords.dim() != 3 or coords.shape[-1] != d:
            shape = tuple(coords.shape) if torch.is_tensor(coords) else type(coords).__name__
            raise ValueError(f"{what} must be (B, N, {d}) pixel-centre coordinates in [0, 1], got {shape}")
        if values is not None and values.shape != (*coords.shape[:2], C):
            raise ValueError(f"values must be (B, N, {C}) matching coords {tuple(coords.shape)}, got {tuple(values.shape)}")
        dtype = self.obs_embed.weight.dtype
        return as_coords(coords, d, what, dtype), values

    def encode(self, obs_coords, obs_values):
        """Observations (B, N, d) coordinates and (B, N, C) values in [0, 1] -> memory
        (B, M [+ N], dim): the encoded LPs (and the encoded observations with ``attend_obs``)."""
        obs_coords, _ = self._check(obs_coords, obs_values, "obs_coords")
        obs_values = as_unit_range(obs_values, "obs_values", obs_coords.dtype)
        order = cell_index(obs_coords, self.config.input_size).argsort(dim=1)  # raster order
        gather = lambda x: x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
        coords, values = gather(obs_coords), gather(obs_values)
        tokens = self.obs_embed(torch.cat([self.ff(coords), 2 * values - 1], -1))
        enc = self.stack(self.lp.add_lp(tokens))
        lp_idx, tok_idx, _ = self.lp.indices(tokens.shape[1])
        return torch.cat([enc[:, lp_idx], enc[:, tok_idx]], 1) if self.config.attend_obs else enc[:, lp_idx]

    # ------------------------------------------------------------------ decoder
    def velocity(self, memory, coords, x_t, t):
        """Velocity (B, Q, C) at queries coords (B, Q, d) with noisy values x_t (B, Q, C) at time
        t (B,) or scalar, in chunks of ``config.query_chunk`` queries."""
        coords, _ = self._check(coords, x_t, "query coords")
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).expand(x_t.shape[0])
        temb = self.t_embed(timestep_embedding(t, self.config.hidden))
        n = self.config.query_chunk
        out = []
        for i in range(0, coords.shape[1], n):
            c, x = coords[:, i:i + n], x_t[:, i:i + n]
            h = self.q_embed(torch.cat([self.ff(c), x], -1))
            for blk in self.blocks:
                h = blk(h, memory, temb)
            out.append(self.head(h) + self.skip(x))
        return torch.cat(out, 1)

    def forward(self, obs_coords, obs_values, query_coords, x_t, t):
        return self.velocity(self.encode(obs_coords, obs_values), query_coords, x_t, t)

    # ------------------------------------------------------------------ noise, sampling
    def noise(self, coords, generator=None):
        """x0 at coords (B, Q, d): one N(0, 1) value per channel and base-grid cell, read by the
        nearest cell, so every resolution sees the same noise field."""
        return coordinate_noise(coords, self.config.input_size, self.config.in_channels, generator)

    @torch.no_grad()
    def sample(self, obs_coords, obs_values, query_coords, steps=50, solver="heun", generator=None,
               hold_known=False):
        """Integrate dx/dt = v from t=0 (noise) to 1 -> values (B, Q, C) in [0, 1] at query_coords.
        ``hold_known``: queries at observed coordinates follow the straight path to their observed
        value at every step and end exactly on it."""
        if solver not in ("euler", "heun"):
            raise ValueError(f"solver must be 'euler' or 'heun', got {solver!r}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        query_coords, _ = self._check(query_coords, what="query_coords")
        memory = self.encode(obs_coords, obs_values)   # once per sample, not per step
        x0 = self.noise(query_coords, generator)
        known = None
        if hold_known:
            dist, j = torch.cdist(query_coords, obs_coords).min(-1)
            known = dist < 1e-6
            x1_known = (2 * obs_values - 1).gather(1, j[..., None].expand(-1, -1, x0.shape[-1]))
        x, dt = x0, 1.0 / steps

        def hold(x, t):
            return x if known is None else torch.where(known[..., None], (1 - t) * x0 + t * x1_known, x)

        for i in range(steps):
            t = i * dt
            x = hold(x, t)
            v = self.velocity(memory, query_coords, x, t)
            if solver == "heun":
                x_e = hold(x + dt * v, t + dt)
                v = 0.5 * (v + self.velocity(memory, query_coords, x_e, t + dt))
            x = x + dt * v
        x = hold(x, 1.0)
        return ((x + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def posterior(self, obs_coords, obs_values, query_coords, k=8, generator=None, **kw):
        """(mean, std) over k samples, each (B, Q, C)."""
        xs = torch.stack([self.sample(obs_coords, obs_values, query_coords, generator=generator, **kw)
                          for _ in range(k)])
        return xs.mean(0), xs.std(0)


def flow_matching_loss(model, obs_coords, obs_values, query_coords, targets, x0, t):
    """Flow-matching MSE at times t (B,) from noise x0 (B, Q, C) to x1 = the targets mapped to
    [-1, 1]: x_t = (1 - t) x0 + t x1, target velocity x1 - x0. ``model`` is the module to call
    (DDP-wrapped or not). Returns (loss, the one-step estimate of the targets in [0, 1]:
    x_t + (1 - t) v, for a progress PSNR)."""
    t = t.to(targets.device, targets.dtype)[:, None, None]
    x1 = 2 * targets - 1
    x_t = (1 - t) * x0 + t * x1
    v = model(obs_coords, obs_values, query_coords, x_t, t[:, 0, 0])
    return F.mse_loss(v, x1 - x0), ((x_t + (1 - t) * v + 1) / 2).detach()
