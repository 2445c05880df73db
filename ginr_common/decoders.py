"""Decoders: LP latents (B, M, D) + query coordinates (B, Q, d) -> values (B, Q, C).

The decoder protocol. A decoder is an ``nn.Module`` built as ``Decoder(config, *, latent_dim,
coord_dim, out_dim, lattice=None, token_grid=None)`` and called as ``decoder(latents, coords, *,
lp_coords=None, tokens=None, cell=None, return_attention=False)``; it declares
- ``config_class``: its typed config, a dataclass whose ``kind`` field is the decoder's name in
  ``DECODERS`` and whose ``reads_tokens`` says whether it reads the encoded patch tokens beside the
  LPs (they then arrive as ``tokens``);
- ``returns_features``: whether ``forward(..., return_features=True)`` also returns the features
  before its head (B, Q, hidden), which the pixel filter reads.
Adding a decoder is its class (with its config) and one line: ``DECODERS[kind] = Decoder``.
Queries never attend to each other, so memory is linear in the number of queries; ``lp_coords``
(M, d) is the coordinate each LP stands for, used by the optional locality bias.
"""
import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ginr_common._io import from_fields
from ginr_common.fourier import FourierFeatures, GaussianFourierFeatures, make_grid
from ginr_common.transformer import TransformerStack  # the optional latent processor of SCENT


@dataclass
class AttentionConfig:
    """What the attention decoders (LAINR, SCENT) share: query features, width, heads, the locality
    bias and the optional reading of the nearest patch tokens."""
    kind: str = ""
    hidden: int = 256
    n_blocks: int = 3
    heads: int = 2
    features: str = "fourier"     # "fourier": fixed log-spaced up to max_freq; "gaussian": B ~ N(0, sigma^2)
    n_freqs: int = 16
    max_freq: float = 32.0
    sigma: float = 10.0
    learnable_freqs: bool = False
    locality: bool = False        # the locality bias on the attention logits
    lp_grid: int | None = None    # its distance unit, 1 / lp_grid of the image (None: the LP lattice's spacing)
    local_tokens: bool = False    # also read the 2^d nearest encoded patch tokens (pixel-aligned features)

    def __post_init__(self):
        _check_decoder_config(self)

    @property
    def reads_tokens(self):
        return self.local_tokens


@dataclass
class LAINRConfig(AttentionConfig):
    """The LAINR decoder: query features -> cross-attention to the LPs -> ResidualBlocks -> head
    (defaults: the reference design's decoder)."""
    kind: str = "lainr"


@dataclass
class SCENTConfig(AttentionConfig):
    """The SCENT-style decoder: n_blocks x [pre-norm cross-attention with a skip, GEGLU] (defaults:
    notebook 3's cpu model)."""
    kind: str = "scent"
    hidden: int = 128
    n_blocks: int = 2
    heads: int = 4
    features: str = "gaussian"
    n_freqs: int = 64
    sigma: float = 8.0
    locality: bool = True
    local_tokens: bool = True
    latent_blocks: int = 0        # self-attention blocks over the latents, once per decode


@dataclass
class LocalConfig:
    """The local decoder (in the manner of LIIF): each query reads the 2^d lattice points around
    it, of the LP lattice and/or the patch-token grid, with the offset in lattice units (Fourier
    encoded) and its cell size; the 2^d readings are blended by area weights; ResidualBlocks;
    head (defaults: notebook 1's cpu model)."""
    kind: str = "local"
    hidden: int = 128
    n_blocks: int = 2
    sources: tuple = ("lps", "tokens")
    features: str = "fourier"     # encoding of the offset: "fourier" (log-spaced) or "gaussian"
    n_freqs: int = 6
    max_freq: float = 4.0
    sigma: float = 1.0
    learnable_freqs: bool = False

    def __post_init__(self):
        self.sources = tuple(self.sources)
        if not self.sources or set(self.sources) - {"lps", "tokens"}:
            raise ValueError(f"sources must be a non-empty subset of ('lps', 'tokens'), got {self.sources}")
        _check_decoder_config(self)

    @property
    def reads_tokens(self):
        return "tokens" in self.sources


@dataclass
class NeighbourConfig:
    """The neighbour decoder: each query reads its ``k`` nearest encoded patch tokens (scattered
    points at the patch centres; ``NeighbourReader``, the reader of the flow model) with their
    offsets and its cell size; ResidualBlocks; head."""
    kind: str = "neighbours"
    hidden: int = 128
    n_blocks: int = 2
    k: int = 8

    def __post_init__(self):
        if self.k < 1 or self.hidden < 1:
            raise ValueError(f"k and hidden must be >= 1, got k={self.k}, hidden={self.hidden}")

    @property
    def reads_tokens(self):
        return True


def _check_decoder_config(c):
    if c.features not in ("fourier", "gaussian"):
        raise ValueError(f"features must be 'fourier' or 'gaussian', got {c.features!r}")
    if hasattr(c, "heads") and c.hidden % c.heads:
        raise ValueError(f"hidden={c.hidden} must be divisible by heads={c.heads}")


def decoder_config(d):
    """A registered decoder's config from a dict with its ``kind`` (a checkpoint's stored form), or
    as given when it already is one; anything else raises (TypeError / ValueError naming it)."""
    if not isinstance(d, dict):
        if not any(isinstance(d, D.config_class) for D in DECODERS.values()):
            raise TypeError(f"decoder must be the config of a registered decoder "
                            f"({', '.join(D.config_class.__name__ for D in DECODERS.values())}), got {type(d).__name__}")
        return d
    kind = d.get("kind")
    if kind not in DECODERS:
        raise ValueError(f"decoder kind must be one of {sorted(DECODERS)}, got {kind!r}")
    return from_fields(DECODERS[kind].config_class, d, f"the {kind} decoder config")


def returns_features(config):
    """Whether the decoder of ``config`` can return its features before the head (the protocol)."""
    return DECODERS[config.kind].returns_features


def query_features(coord_dim, c):
    """Fourier features of the query for a decoder config: fixed log-spaced or Gaussian random."""
    if c.features == "fourier":
        return FourierFeatures(coord_dim, c.n_freqs, max_freq=c.max_freq)
    return GaussianFourierFeatures(coord_dim, c.n_freqs, sigma=c.sigma, learnable=c.learnable_freqs)


class LocalityBias(nn.Module):
    """Additive attention bias -w_h * |c_q - p_m|^2 * S^2 from continuous coordinates: query
    position c_q vs the position p_m each LP stands for, in units of ``grid`` pixels (S), one
    learnable width w_h >= 0 per head. A function of coordinates only, so the same at every
    output resolution, and 2-D (any d): no raster distance, no wrap at row ends."""

    def __init__(self, heads, grid=16, init=0.5):
        super().__init__()
        self.grid = float(grid)
        self.log_w = nn.Parameter(torch.full((heads,), math.log(init)))

    def forward(self, coords, lp_coords):
        """coords (B, Q, d), lp_coords (M, d) -> (B, heads, Q, M)."""
        d2 = ((coords[:, :, None, :] - lp_coords.to(coords.dtype)) * self.grid).pow(2).sum(-1)  # (B, Q, M)
        return -self.log_w.exp().to(coords.dtype)[None, :, None, None] * d2[:, None]


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, Q, H) to latents (B, M, D); optional additive bias
    broadcastable to (B, heads, Q, M). Returns (output, attention weights if asked)."""

    def __init__(self, dim, latent_dim, heads=2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(latent_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, latents, bias=None, return_weights=False):
        q = rearrange(self.q(x), "b q (h c) -> b h q c", h=self.heads)
        k, v = (rearrange(t, "b m (h c) -> b h m c", h=self.heads) for t in self.kv(latents).chunk(2, -1))
        if return_weights:
            logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
            w = (logits if bias is None else logits + bias).softmax(-1)
            return self.out(rearrange(w @ v, "b h q c -> b q (h c)")), w
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(rearrange(o, "b h q c -> b q (h c)")), None


class ResidualBlock(nn.Module):
    """x + W2 GELU(W1 LayerNorm(x))."""

    def __init__(self, dim, hidden=None):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden or dim), nn.GELU(),
                                 nn.Linear(hidden or dim, dim))

    def forward(self, x):
        return x + self.net(x)


class LAINRDecoder(nn.Module):
    config_class, returns_features = LAINRConfig, False
    """Fourier features of the query -> cross-attention to the LP latents (added to the query
    features) -> ResidualBlock trunk -> linear head.

    ``features="fourier"``: fixed log-spaced frequencies; ``max_freq`` is the top f in sin(pi f c),
    f = S being the Nyquist rate of an S-pixel grid (the feature flips sign from one pixel centre
    to the next). Frequencies far above it alias on the training grid and become noise between
    pixels at larger renders. ``features="gaussian"``: n_freqs random frequencies B ~ N(0, sigma^2)."""

    def __init__(self, config: LAINRConfig, *, latent_dim, coord_dim=2, out_dim=3, lattice=None, token_grid=None):
        super().__init__()
        self.config = c = config
        self.ff = query_features(coord_dim, c)
        self.embed = nn.Linear(self.ff.out_dim, c.hidden)
        self.tokens = _token_reader(c, latent_dim, token_grid)
        self.attn = CrossAttention(c.hidden, latent_dim, c.heads)
        self.locality = _locality(c, lattice)
        self.blocks = nn.Sequential(*[ResidualBlock(c.hidden, 2 * c.hidden) for _ in range(c.n_blocks)])
        self.head = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, out_dim))

    def forward(self, latents, coords, *, lp_coords=None, tokens=None, cell=None, return_attention=False):
        h = self.embed(self.ff(coords))
        if self.tokens is not None:
            h = h + self.tokens(tokens, coords, _cell(cell, coords))
        bias = _bias(self.locality, coords, lp_coords)
        a, w = self.attn(h, latents, bias=bias, return_weights=return_attention)
        out = self.head(self.blocks(h + a))
        return (out, w) if return_attention else out


class GEGLU(nn.Module):
    """Pre-norm GEGLU feed-forward: W2 (GELU(W_g x) * W_v x)."""

    def __init__(self, dim, mult=2):
        super().__init__()
        self.norm, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 2 * mult * dim)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x):
        v, g = self.proj(self.norm(x)).chunk(2, -1)
        return self.out(v * F.gelu(g))


class SCENTDecoder(nn.Module):
    config_class, returns_features = SCENTConfig, True
    """SCENT-style decoder: query Fourier features -> n_blocks x [pre-norm cross-attention to the
    latents with a skip of the query features, then a GEGLU feed-forward], optionally after
    ``latent_blocks`` self-attention blocks over the latents (M tokens, once per decode). Queries
    never attend to each other."""

    def __init__(self, config: SCENTConfig, *, latent_dim, coord_dim=2, out_dim=3, lattice=None, token_grid=None):
        super().__init__()
        self.config = c = config
        self.ff = query_features(coord_dim, c)
        self.embed = nn.Linear(self.ff.out_dim, c.hidden)
        self.tokens = _token_reader(c, latent_dim, token_grid)
        self.latent_proc = TransformerStack(latent_dim, c.latent_blocks) if c.latent_blocks else None
        self.norm_q = nn.ModuleList(nn.LayerNorm(c.hidden) for _ in range(c.n_blocks))
        self.norm_kv = nn.ModuleList(nn.LayerNorm(latent_dim) for _ in range(c.n_blocks))
        self.attn = nn.ModuleList(CrossAttention(c.hidden, latent_dim, c.heads) for _ in range(c.n_blocks))
        self.ff_blocks = nn.ModuleList(GEGLU(c.hidden) for _ in range(c.n_blocks))
        self.locality = _locality(c, lattice)
        self.head = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, out_dim))

    def forward(self, latents, coords, *, lp_coords=None, tokens=None, cell=None, return_attention=False,
                return_features=False):
        """-> (B, Q, out_dim), then (when asked) the features before the head (B, Q, hidden) and the
        first block's attention weights (B, heads, Q, M)."""
        if self.latent_proc is not None:
            latents = self.latent_proc(latents)
        h = self.embed(self.ff(coords))
        if self.tokens is not None:
            h = h + self.tokens(tokens, coords, _cell(cell, coords))
        bias = _bias(self.locality, coords, lp_coords)
        w = None
        for i, (nq, nkv, attn, ff) in enumerate(zip(self.norm_q, self.norm_kv, self.attn, self.ff_blocks)):
            a, wi = attn(nq(h), nkv(latents), bias=bias, return_weights=return_attention and i == 0)
            w = wi if i == 0 else w        # the first block's weights, when asked
            h = h + a                      # the skip keeps the query's own features
            h = h + ff(h)
        extra = (h,) * return_features + (w,) * return_attention
        return (self.head(h), *extra) if extra else self.head(h)


def _token_reader(c, latent_dim, token_grid):
    if not c.local_tokens:
        return None
    if token_grid is None:
        raise ValueError("local_tokens=True reads the patch-token grid: pass token_grid= (as MambaGINR does)")
    return LocalReader(token_grid, latent_dim, c.hidden, LocalConfig(hidden=c.hidden))


def _locality(c, lattice):
    if not c.locality:
        return None
    if c.lp_grid is None and lattice is None:
        raise ValueError("the locality bias needs its distance unit: set lp_grid= or pass lattice=")
    return LocalityBias(c.heads, c.lp_grid or max(lattice))


def _bias(locality, coords, lp_coords):
    if locality is None:
        return None
    if lp_coords is None:
        raise ValueError("this decoder has a locality bias: pass lp_coords (M, d), the coordinate of each LP")
    return locality(coords, lp_coords)


def lattice_corners(coords, shape):
    """The 2^d lattice points around each query on a lattice of ``shape`` whose point i sits at
    (i + 0.5) / g (pixel centres): a list of (flat index (B, Q), offset query - point in lattice
    units (B, Q, d), area weight (B, Q)), one per corner. The weights are bilinear, sum to 1, and
    beyond the outermost points they are those of the nearest border point (like grid_sample's
    border padding) while the offsets keep the true distance."""
    g = torch.tensor(shape, device=coords.device, dtype=coords.dtype)
    u = coords * g - 0.5                                            # lattice units: point i at u = i
    uw = u.clamp(min=0).minimum(g - 1)                              # where the weights are read
    base = uw.floor().minimum((g - 2).clamp(min=0))
    strides = torch.tensor([math.prod(shape[i + 1:]) for i in range(len(shape))], device=coords.device)
    corners = []
    for o in itertools.product((0, 1), repeat=len(shape)):
        idx = (base + torch.tensor(o, device=coords.device, dtype=coords.dtype)).minimum(g - 1)
        w = (1 - (uw - idx).abs()).clamp(min=0).prod(-1)
        corners.append((idx.long() @ strides, u - idx, w))
    total = sum(w for _, _, w in corners)
    return [(i, r, w / total) for i, r, w in corners]


class LocalReader(nn.Module):
    """Reads a feature lattice (B, prod(shape), D) at queries (B, Q, d): per corner c of the 2^d
    around a query, GELU(W_f feature_c + W_p [Fourier features of the offset, cell size], both
    in lattice units), blended by area weights, then a Linear -> (B, Q, hidden). W_f is applied
    once per lattice point, not per query."""

    def __init__(self, shape, feat_dim, hidden, c):
        super().__init__()
        self.shape = tuple(shape)
        d = len(self.shape)
        self.ff = query_features(d, c)
        self.proj_feat = nn.Linear(feat_dim, hidden)
        self.proj_pos = nn.Linear(self.ff.out_dim + d, hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, feats, coords, cell):
        if feats is None or feats.shape[1] != math.prod(self.shape):
            got = None if feats is None else tuple(feats.shape)
            raise ValueError(f"features must be (B, {math.prod(self.shape)}, D) on the {self.shape} lattice, got {got}")
        g = torch.tensor(self.shape, device=coords.device, dtype=coords.dtype)
        pf = self.proj_feat(feats)
        h = 0
        for idx, rel, w in lattice_corners(coords, self.shape):
            f = pf.gather(1, idx[..., None].expand(-1, -1, pf.shape[-1]))
            p = self.proj_pos(torch.cat([self.ff(rel), cell * g], -1))
            h = h + w[..., None] * F.gelu(f + p)
        return self.out(h)


class NeighbourReader(nn.Module):
    """Reads features of scattered points (B, N, F) at queries (B, Q, d), in the manner of LIIF's
    local reading: each query reads its ``k`` nearest points; per neighbour j a two-layer MLP of
    [feature_j, Fourier features of offset_j / 4, offset_j, the query's cell] gives a reading and a
    logit (offset = point - query and cell both in cells of a ``unit`` grid); the readings are
    pooled by the softmax of the logits. Returns (features (B, Q, hidden), the neighbours'
    indices into the points (B, Q, k), nearest first). Memory is linear in the queries
    (``chunk`` queries at a time against all N points)."""

    def __init__(self, coord_dim, feat_dim, hidden, k=8, chunk=4096):
        super().__init__()
        self.k, self.chunk = k, chunk
        self.ff = FourierFeatures(coord_dim, 4, max_freq=4.0)
        self.net = nn.Sequential(nn.Linear(feat_dim + self.ff.out_dim + 2 * coord_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden + 1))

    def forward(self, points, feats, queries, cell, unit):
        """points (B, N, d) and queries (B, Q, d) in [0, 1], feats (B, N, F), cell (B, 1 or Q, d)
        in [0, 1] units, unit (d,): the grid whose cells measure offsets and cells."""
        if points.shape[1] < self.k:
            raise ValueError(f"the reader takes the k={self.k} nearest points, got {points.shape[1]} points")
        unit = torch.as_tensor(unit, dtype=queries.dtype, device=queries.device)
        cell = cell * unit
        out, index = [], []
        for i in range(0, queries.shape[1], self.chunk):
            q = queries[:, i:i + self.chunk]
            delta = (points[:, None] - q[:, :, None]) * unit                   # (B, q, N, d)
            _, j = delta.pow(2).sum(-1).topk(self.k, dim=-1, largest=False)     # (B, q, k)
            f = feats.gather(1, j.flatten(1)[..., None].expand(-1, -1, feats.shape[-1])).view(*j.shape, -1)
            off = delta.gather(2, j[..., None].expand(-1, -1, -1, delta.shape[-1]))
            c = (cell if cell.shape[1] == 1 else cell[:, i:i + self.chunk]).expand(-1, q.shape[1], -1)
            r = self.net(torch.cat([f, self.ff(off / 4), off, c[:, :, None].expand_as(off)], -1))
            out.append((r[..., -1:].softmax(2) * r[..., :-1]).sum(2))
            index.append(j)
        return torch.cat(out, 1), torch.cat(index, 1)


class _ReadingDecoder(nn.Module):
    """What the reading decoders share: a trunk of ResidualBlocks and a head over the features
    their readers give (``returns_features``: the trunk's output, which the pixel filter reads)."""
    returns_features = True

    def _add_trunk(self, hidden, n_blocks, out_dim):
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, 2 * hidden) for _ in range(n_blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out_dim))

    def _finish(self, h, return_attention, return_features):
        """The trunk and head over the readings h (B, Q, hidden) -> (B, Q, out_dim) [, features]."""
        if return_attention:
            raise ValueError(f"the {self.config.kind} decoder has no attention to return")
        h = self.blocks(h)
        return (self.head(h), h) if return_features else self.head(h)


class NeighbourDecoder(_ReadingDecoder):
    config_class = NeighbourConfig
    """NeighbourReader over the encoded patch tokens (points at the patch centres) -> ResidualBlocks
    -> head: the flow model's reader of scattered points, decoding a reconstruction."""

    def __init__(self, config: NeighbourConfig, *, latent_dim, coord_dim=2, out_dim=3, lattice=None, token_grid=None):
        super().__init__()
        self.config = c = config
        if token_grid is None:
            raise ValueError("the neighbour decoder reads the patch tokens: pass token_grid= (as MambaGINR does)")
        self.token_grid = tuple(token_grid)
        self.register_buffer("centres", make_grid(self.token_grid), persistent=False)
        self.reader = NeighbourReader(coord_dim, latent_dim, c.hidden, min(c.k, math.prod(self.token_grid)))
        self._add_trunk(c.hidden, c.n_blocks, out_dim)

    def forward(self, latents, coords, *, lp_coords=None, tokens=None, cell=None, return_attention=False,
                return_features=False):
        """-> (B, Q, out_dim); with ``return_features`` also the features before the head (B, Q, hidden)."""
        if tokens is None:
            raise ValueError("the neighbour decoder reads the encoded patch tokens: pass tokens= (B, N, D)")
        points = self.centres.to(coords.dtype).expand(coords.shape[0], -1, -1)
        h, _ = self.reader(points, tokens, coords, _cell(cell, coords), self.token_grid)
        return self._finish(h, return_attention, return_features)


class LocalDecoder(_ReadingDecoder):
    config_class = LocalConfig
    """LocalReader over the LP lattice and/or the patch-token grid (summed) -> ResidualBlocks ->
    head. Memory is linear in the number of queries; no attention."""

    def __init__(self, config: LocalConfig, *, latent_dim, coord_dim=2, out_dim=3, lattice=None, token_grid=None):
        super().__init__()
        self.config = c = config
        grids = {"lps": lattice, "tokens": token_grid}
        missing = [s for s in c.sources if grids[s] is None]
        if missing:
            raise ValueError(f"the local decoder reads {missing}: pass their lattice shapes "
                             "(lattice=, token_grid=), as MambaGINR does")
        self.readers = nn.ModuleDict({s: LocalReader(grids[s], latent_dim, c.hidden, c) for s in c.sources})
        self._add_trunk(c.hidden, c.n_blocks, out_dim)

    def forward(self, latents, coords, *, lp_coords=None, tokens=None, cell=None, return_attention=False,
                return_features=False):
        """-> (B, Q, out_dim); with ``return_features`` also the features before the head (B, Q, hidden)."""
        cell = _cell(cell, coords)
        srcs = {"lps": latents, "tokens": tokens}
        h = sum(reader(srcs[name], coords, cell) for name, reader in self.readers.items())
        return self._finish(h, return_attention, return_features)


class PixelFilter(nn.Module):
    """A linear filter over the k^d input pixels around each query, its weights predicted per query
    from the decoder's features, the query's position inside its input pixel and its cell size
    (kernel prediction): output = sum_j w_j(features, offset, cell) * (pixel_j - mean of the k^d
    pixels). The correction has zero DC gain: it adds detail and never shifts the local mean, so
    the weights need not cancel the image's brightness (without this the filter learns several
    times slower). A filter per offset can undo much of the blur of an antialiased downsample
    (wide support: k = 8 by default); the features make it depend on the content. The last layer
    starts at zero (the filter starts as no correction)."""

    def __init__(self, hidden, k=8, coord_dim=2):
        super().__init__()
        if k < 2 or k % 2:
            raise ValueError(f"the pixel filter's size k must be even and >= 2, got {k}")
        self.k, self.d = k, coord_dim
        self.net = nn.Sequential(nn.Linear(hidden + 2 * coord_dim, hidden), nn.GELU(), nn.Linear(hidden, k ** coord_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def taps(self, images):
        """(B, C, *S) -> (B, prod(S + k - 1), C, k^d): for every window start, the k^d pixels
        p - k/2 + 1 ... p + k/2 (border replicated) minus their mean, p from -k/2 to S + k/2 - 2
        (beyond that range every tap is the border pixel). One gather per query reads a row."""
        k, d = self.k, self.d
        x = images
        for a in range(d):   # replicate-pad every spatial axis by k - 1
            n = x.shape[2 + a]
            x = x.index_select(2 + a, torch.arange(-k + 1, n + k - 1, device=x.device).clamp(0, n - 1))
        for a in range(d):   # windows of k along every axis: (B, C, *(S + k - 1), *(k,) * d)
            x = x.unfold(2 + a, k, 1)
        B, C = x.shape[:2]
        t = x.reshape(B, C, -1, k ** d).transpose(1, 2)
        return t - t.mean(-1, keepdim=True)       # zero DC: adds detail, keeps the mean

    def forward(self, feats, images, coords, cell, taps=None):
        """feats (B, Q, hidden), images (B, C, *S), coords and cell (B, Q, d) -> (B, Q, C).
        ``taps``: ``self.taps(images)``, when computed once for several chunks of queries."""
        S = torch.tensor(images.shape[2:], device=coords.device, dtype=coords.dtype)
        if len(S) != self.d:
            raise ValueError(f"the pixel filter reads {self.d}-D images, got images of shape {tuple(images.shape)}")
        taps = self.taps(images) if taps is None else taps
        u = coords * S - 0.5                                    # input pixel i at u = i
        base = u.floor()
        w = self.net(torch.cat([feats, u - base, cell * S], -1))  # (B, Q, k^d)
        win = [n + self.k - 1 for n in images.shape[2:]]           # window starts per axis
        start = torch.minimum((base + self.k // 2).clamp(min=0), S + self.k - 2).long()
        strides = torch.tensor([math.prod(win[i + 1:]) for i in range(self.d)], device=coords.device)
        B, Q = coords.shape[:2]
        rows = taps.flatten(2).gather(1, (start @ strides)[..., None].expand(-1, -1, taps.shape[2] * taps.shape[3]))
        return (rows.view(B, Q, taps.shape[2], -1) @ w[..., None]).squeeze(-1)


def _cell(cell, coords):
    if cell is None:
        raise ValueError("this decoder reads the query's cell size: pass cell= (the pixel footprint, e.g. 1 / size)")
    return torch.as_tensor(cell, dtype=coords.dtype, device=coords.device).expand_as(coords)


DECODERS = {"lainr": LAINRDecoder, "scent": SCENTDecoder, "local": LocalDecoder,   # kind -> decoder class
            "neighbours": NeighbourDecoder}


def build_decoder(config, *, latent_dim, coord_dim, out_dim, lattice=None, token_grid=None):
    """The decoder of a typed decoder config; ``lattice`` (the LP lattice's shape) and
    ``token_grid`` (the patch grid's) place the features that local readers and the locality bias
    use."""
    return DECODERS[config.kind](config, latent_dim=latent_dim, coord_dim=coord_dim, out_dim=out_dim,
                                 lattice=lattice, token_grid=token_grid)
