"""The flow model: observations -> context -> velocity of the bridge; draws through ``flow.sampler``."""
import math
from dataclasses import dataclass

import torch
from torch import nn

from ginr_common.curves import curve_orders, take_rows
from ginr_common.decoders import NeighbourReader
from ginr_common.encoder import EncodedPoints, PointEncoder
from ginr_common.flow import bridge, sampler
from ginr_common.flow.colour import basis_matrix
from ginr_common.flow.config import FlowConfig
from ginr_common.flow.estimate import GridRefiner, guide, normalised_convolution, rasterise, read_grid
from ginr_common.flow.noise import noise_for
from ginr_common.fourier import make_grid
from ginr_common.inputs import as_coords, as_unit_range
from ginr_common.mamba import BiMamba, EncoderBlock
from ginr_common.tokens import sinusoidal

STAGES = ("estimate", "joint")
# parameter names of checkpoints written before the encoder and the reader were shared parts
_RENAMED = {"ff.": "encoder.ff.", "obs_embed.": "encoder.embed.", "lp.": "encoder.lp.", "stack.": "encoder.stack.",
            "offset_ff.": "reader.ff.", "read.": "reader.net."}


@dataclass
class Refined:
    """The grid refiner's maps on the base grid (B, *, *S)."""
    features: torch.Tensor            # (B, grid_width, *S)
    correction: torch.Tensor          # the correction of the guide (B, C, *S)
    log_spread: torch.Tensor | None   # with local_spread (B, C, *S)


@dataclass
class Memory:
    """What the observations give every query: the encoded points (values in [-1, 1]; tokens None
    when only the grid refiner ran) and the refiner's maps (None without a refiner)."""
    points: EncodedPoints
    refined: Refined | None


@dataclass
class Context:
    """What every draw of one set of observations and queries shares (``SparseFieldFlow.context``);
    values are in [-1, 1] and in the model's colour basis (``SparseFieldFlow.to_basis``)."""
    query_coords: torch.Tensor        # (B, Q, d)
    cond: torch.Tensor                # per-query conditioning (B, Q, hidden)
    mu: torch.Tensor                  # the estimate (B, Q, C)
    spread: torch.Tensor | None       # per-query spread of each colour component (B, Q, C) with local_spread
    orders: list                      # curve orders of the queries, one per mixer block
    known: torch.Tensor | None = None     # hold_known: queries at observed coordinates (B, Q) bool
    x1_known: torch.Tensor | None = None  # and the observed value there (B, Q, C)


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


class SparseFieldFlow(nn.Module):
    """Observations (coordinates (B, N, d) in [0, 1], values (B, N, C) in [0, 1]) -> draws of the
    whole field at any query coordinates (B, Q, d): ``samples``, ``posterior``, ``estimate``.
    Built from shared parts: ``encoder.PointEncoder`` (the observations) and
    ``decoders.NeighbourReader`` (each query's nearest observations); the grid refiner and guide
    (``flow.estimate``), the bridge and its loss (``flow.bridge``) and the solvers
    (``flow.sampler``) have their own modules."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = c = config
        d, C, H = len(c.input_size), c.in_channels, c.hidden
        self.encoder = PointEncoder(d, C, dim=c.dim, depth=c.depth, num_lp=c.num_lp, d_state=c.d_state,
                                    n_freqs=c.coord_freqs, max_freq=c.max_freq)
        self.reader = NeighbourReader(d, c.dim + C, H, k=c.neighbours, chunk=c.chunk)
        self.refiner = GridRefiner(d, C, c.grid_width, c.grid_blocks, C * (1 + c.local_spread)) \
            if c.grid_blocks else None
        G = c.grid_width if c.grid_blocks else 0
        self.cond = nn.Sequential(nn.Linear(H + 2 * C + 1 + d + G, H), nn.GELU(), nn.Linear(H, H))
        self.mu_head = nn.Linear(H, C)
        nn.init.zeros_(self.mu_head.weight)
        nn.init.zeros_(self.mu_head.bias)
        self.x_embed = nn.Linear(2 * C, H)
        self.t_embed = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H))
        self.t_proj = nn.ModuleList(nn.Linear(H, H) for _ in range(c.mixer_depth))
        self.mixer = nn.ModuleList(EncoderBlock(H, BiMamba(H, d_state=c.d_state)) for _ in range(c.mixer_depth))
        self.head = nn.Sequential(nn.LayerNorm(H), nn.Linear(H, C))
        self.register_buffer("colour", basis_matrix(c.colour_basis, C), persistent=False)
        # the sampling temperatures of the noise's brightness and colour (``temper``): 1 until ``calibrate`` sets them
        self.register_buffer("temperature", torch.ones(2))
        self._register_load_state_dict_pre_hook(self._rename_old_parameters)

    @staticmethod
    def _rename_old_parameters(state_dict, prefix, *args):
        """Load checkpoints written before the encoder and reader were shared parts: rename their
        parameters, and reorder the time embedding's inputs from [sin | cos] to interleaved. Those
        written before the temperatures sample at 1 (the model's own distribution)."""
        state_dict.setdefault(prefix + "temperature", torch.ones(2))
        if prefix + "obs_embed.weight" not in state_dict:
            return
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix):]
            old = next((o for o in _RENAMED if rest.startswith(o)), None)
            if old is not None:
                state_dict[prefix + _RENAMED[old] + rest[len(old):]] = state_dict.pop(key)
        w = state_dict[prefix + "t_embed.0.weight"]
        half = w.shape[1] // 2
        state_dict[prefix + "t_embed.0.weight"] = w[:, torch.arange(2 * half).view(2, half).t().flatten()]

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
        return as_coords(coords, d, what, self.mu_head.weight.dtype)

    def _observations(self, obs_coords, obs_values):
        """Checked observations: (coordinates (B, N, d), values (B, N, C) in [-1, 1])."""
        obs_coords = self._check(obs_coords, obs_values, "obs_coords")
        if obs_coords.shape[1] < self.config.neighbours:
            raise ValueError(f"need at least neighbours={self.config.neighbours} observations, got "
                             f"{obs_coords.shape[1]}")
        return obs_coords, 2 * as_unit_range(obs_values, "obs_values", obs_coords.dtype) - 1

    def _queries(self, query_coords, memory):
        """Checked query coordinates, as many images as the observations of ``memory``."""
        query_coords = self._check(query_coords, what="query_coords")
        obs = memory.points.coords
        if obs.shape[0] != query_coords.shape[0]:
            raise ValueError(f"obs_coords and query_coords must hold the same number of images, got "
                             f"{obs.shape[0]} and {query_coords.shape[0]} (shapes {tuple(obs.shape)} "
                             f"and {tuple(query_coords.shape)})")
        return query_coords

    # ------------------------------------------------------------------ the colour basis
    def to_basis(self, x):
        """Values (..., C) -> their components in the colour basis the bridge runs in
        (``FlowConfig.colour_basis``, ``flow.colour``); in RGB the values themselves (the identity)."""
        return x @ self.colour.to(x)

    def from_basis(self, y):
        """Components in the colour basis (..., C) -> values: the inverse of ``to_basis``."""
        return y @ self.colour.to(y).T

    # ------------------------------------------------------------------ the estimate
    def guide(self, points, query_coords):
        """The guide (``flow.estimate.guide``) of the points' values at the queries (B, Q, C)."""
        c = self.config
        return guide(c.guide, points.coords, points.values, query_coords, c.input_size, c.guide_sigma, c.chunk)

    def refine(self, points):
        """The grid refiner over the observations -> Refined (None without a refiner)."""
        if self.refiner is None:
            return None
        size, C = self.config.input_size, self.config.in_channels
        B = points.coords.shape[0]
        grid = make_grid(size).to(points.coords).expand(B, -1, -1)
        g = self.guide(points, grid).transpose(1, 2).reshape(B, -1, *size)
        mask, observed = rasterise(points.coords, points.values, size)
        feats, out = self.refiner(torch.cat([g, mask, observed], 1))
        return Refined(feats, out[:, :C], out[:, C:] if out.shape[1] > C else None)

    def encode(self, obs_coords, obs_values, tokens=True):
        """Observations (coordinates (B, N, d), values (B, N, C) in [0, 1]) -> Memory (values in
        [-1, 1]); ``tokens=False`` runs the grid refiner alone (the estimate stage), without the
        point encoder."""
        coords, values = self._observations(obs_coords, obs_values)
        points = self.encoder(coords, values) if tokens else EncodedPoints(coords, values, None)
        return Memory(points, self.refine(points))

    def spread(self, memory, query_coords):
        """The relative spread of x1 - mu at the queries (B, Q, C), per component of the colour
        basis (1 at initialisation; the residual's spread is ``residual_std`` times it), or None
        without ``local_spread``."""
        if memory.refined is None or memory.refined.log_spread is None:
            return None
        return read_grid(memory.refined.log_spread, query_coords).clamp(-5, 3).exp()

    def condition(self, memory, query_coords, cell=None):
        """Per-query conditioning (B, Q, hidden) and the estimate mu (B, Q, C) in [-1, 1]: the
        queries read their nearest observations (``reader``), the guide, the nearest observed
        value, the observation density, their cell and the refiner's features there; mu = guide +
        a linear head + the refiner's correction. ``cell`` (B, d) or (d,): the render's pixel size
        (default: read from the queries, see ``default_cell``)."""
        c, pts = self.config, memory.points
        if cell is None:
            cell = default_cell(query_coords, c.input_size)
        cell = torch.as_tensor(cell, dtype=query_coords.dtype, device=query_coords.device)
        cell = cell.expand(query_coords.shape[0], -1)[:, None]                      # (B, 1, d)
        h, nearest = self.reader(pts.coords, torch.cat([pts.tokens, pts.values], -1), query_coords, cell, c.input_size)
        g = self.guide(pts, query_coords)
        _, density = normalised_convolution(pts.coords, pts.values, query_coords, c.input_size, c.guide_sigma, c.chunk)
        size = torch.tensor(c.input_size, dtype=query_coords.dtype, device=query_coords.device)
        extra = [] if memory.refined is None else [read_grid(memory.refined.features, query_coords)]
        cond = self.cond(torch.cat([h, g, take_rows(pts.values, nearest[..., 0]), density.log1p(),
                                    (cell * size).expand(-1, query_coords.shape[1], -1), *extra], -1))
        mu = g + self.mu_head(cond)
        if memory.refined is not None:
            mu = mu + read_grid(memory.refined.correction, query_coords)
        return cond, mu

    # ------------------------------------------------------------------ the joint velocity
    def network(self, ctx, x_t, t):
        """The raw network output F (B, Q, C): the queries, with their conditioning, the scaled
        noisy values and the time, mixed by BiMamba blocks along the curve orders."""
        t = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).expand(x_t.shape[0])
        c_in, _, _ = self.scalings(t[:, None, None], ctx.spread)
        temb = self.t_embed(sinusoidal(1000 * t, self.config.hidden))
        h = ctx.cond + self.x_embed(torch.cat([x_t, c_in * (x_t - ctx.mu)], -1))
        for blk, proj, (order, inverse) in zip(self.mixer, self.t_proj, ctx.orders):
            h = take_rows(blk(take_rows(h + proj(temb)[:, None], order)), inverse)
        return self.head(h)

    def scalings(self, t, spread=None):
        """``bridge.scalings`` with this model's residual_std and noise_scale."""
        return bridge.scalings(t, self.config.residual_std, self.config.noise_scale, spread)

    def denoise(self, ctx, x_t, t):
        """The model's estimate of the field x1 (B, Q, C) from x_t at time t (B,) or a number:
        mu + c_skip (x_t - mu) + c_out F."""
        t_ = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).expand(x_t.shape[0])[:, None, None]
        _, c_skip, c_out = self.scalings(t_, ctx.spread)
        return ctx.mu + c_skip * (x_t - ctx.mu) + c_out * self.network(ctx, x_t, t)

    def velocity(self, ctx, x_t, t):
        """The velocity (x1_hat - x_t) / (1 - t) of the straight path through x_t (t < 1)."""
        t_ = torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).reshape(-1, 1, 1)
        return (self.denoise(ctx, x_t, t) - x_t) / (1 - t_).clamp_min(1e-4)

    def forward(self, obs_coords, obs_values, query_coords, targets, cell=None, z=None, t=None, stage="joint"):
        """A training pass of ``stage`` -> bridge.FlowOutput (values in [-1, 1]). ``"joint"``:
        everything (z the noise at the queries (B, Q, C), t the times (B,)); ``"estimate"``: the
        grid refiner's estimate alone (the guide and its correction; no point encoder, no flow)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        x1 = 2 * targets - 1
        memory = self.encode(obs_coords, obs_values, tokens=stage == "joint")
        query_coords = self._queries(query_coords, memory)
        if stage == "estimate":
            if self.refiner is None:
                raise ValueError("the estimate stage trains the grid refiner: it needs grid_blocks > 0")
            mu = self.guide(memory.points, query_coords) + read_grid(memory.refined.correction, query_coords)
            return bridge.FlowOutput(mu, x1, self.spread(memory, query_coords), basis=self.colour)
        cond, mu = self.condition(memory, query_coords, cell)
        spread = self.spread(memory, query_coords)
        a = None if spread is None else spread.detach()
        m, y1 = self.to_basis(mu.detach()), self.to_basis(x1)      # the bridge runs in the colour basis
        t = t.to(x1.dtype)
        x_t = bridge.point(bridge.start(m, z, self.config.noise_scale, a), y1, t)
        ctx = Context(query_coords, cond, m, a, curve_orders(query_coords, self.config.mixer_depth))
        _, c_skip, c_out = self.scalings(t[:, None, None], a)
        out = self.network(ctx, x_t, t)
        return bridge.FlowOutput(mu, x1, spread, out, (y1 - m - c_skip * (x_t - m)) / c_out.clamp_min(1e-3),
                                 self.colour)

    # ------------------------------------------------------------------ drawing
    def noise(self, coords, generator=None):
        """z at coords (B, Q, d): the model's noise field (``flow.noise``), fixed by the generator."""
        return noise_for(self.config, coords, generator)

    def temper(self, z, temperature=None):
        """The noise z (B, Q, C, in the colour basis) at the sampling temperatures (brightness,
        colour) (default: the model's ``temperature``, which ``tasks.sparse_flow.calibrate`` sets):
        its brightness (the mean of the channels) scaled by the first, its colour (each channel's
        difference from that mean) by the second. (1, 1) leaves z as drawn: the model's own
        distribution; lower temperatures draw closer to the estimate."""
        t = self.temperature if temperature is None else torch.as_tensor(temperature, dtype=torch.float64)
        if t.shape != (2,) or not bool((t >= 0).all()):
            raise ValueError(f"temperature must be two numbers >= 0 (brightness, colour), got {temperature!r}")
        tb, tc = t.tolist()
        if tb == tc == 1:
            return z
        x = self.from_basis(z)
        bright = x.mean(-1, keepdim=True)
        return self.to_basis(tb * bright + tc * (x - bright))

    @torch.no_grad()
    def context(self, obs_coords, obs_values, query_coords, cell=None, hold_known=False):
        """Context: what every draw of these observations and queries shares, computed once."""
        memory = self.encode(obs_coords, obs_values)
        query_coords = self._queries(query_coords, memory)
        cond, mu = self.condition(memory, query_coords, cell)
        ctx = Context(query_coords, cond, self.to_basis(mu), self.spread(memory, query_coords),
                      curve_orders(query_coords, self.config.mixer_depth))
        if hold_known:
            dist, j = torch.cdist(query_coords, memory.points.coords).min(-1)
            ctx.known, ctx.x1_known = dist < 1e-6, self.to_basis(take_rows(memory.points.values.to(mu.dtype), j))
        return ctx

    @torch.no_grad()
    def estimate(self, obs_coords, obs_values, query_coords, cell=None):
        """The one-shot estimate mu (B, Q, C) in [0, 1] (the flow's starting point, no noise)."""
        return ((self.from_basis(self.context(obs_coords, obs_values, query_coords, cell).mu) + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def sample(self, obs_coords, obs_values, query_coords, steps=8, solver="exponential", generator=None,
               hold_known=False, cell=None, temperature=None):
        """One draw (B, Q, C) in [0, 1]: ``samples(..., k=1)[0]``."""
        return self.samples(obs_coords, obs_values, query_coords, 1, generator, steps=steps, solver=solver,
                            hold_known=hold_known, cell=cell, temperature=temperature)[0]

    def samples(self, obs_coords, obs_values, query_coords, k=16, generator=None, antithetic=True, progress=False,
                **options):
        """k draws (k, B, Q, C) in [0, 1]: ``flow.sampler.samples`` (options: steps, solver,
        hold_known, cell, temperature)."""
        return sampler.samples(self, obs_coords, obs_values, query_coords, k, generator, antithetic, progress,
                               **options)

    @torch.no_grad()
    def posterior(self, obs_coords, obs_values, query_coords, k=16, generator=None, antithetic=True, **options):
        """(mean, std) over k draws (``samples``), each (B, Q, C); std is zero for k = 1."""
        xs = self.samples(obs_coords, obs_values, query_coords, k, generator, antithetic, **options)
        return xs.mean(0), (xs.std(0) if k > 1 else torch.zeros_like(xs[0]))
