"""Decoders: LP latents (B, M, D) + query coordinates (B, Q, d) -> values (B, Q, C).

Each decoder is built from its typed config (``LAINRConfig``, ``SCENTConfig``; the ``kind``
field names the decoder in ``DECODERS``). Queries never attend to each other, so memory is
linear in the number of queries. Every decoder takes ``lp_coords`` (M, d), the coordinate each
LP stands for, used by the optional locality bias.
"""
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ginr_common.fourier import FourierFeatures, GaussianFourierFeatures
from ginr_common.transformer import TransformerStack  # the optional latent processor of SCENT


@dataclass
class LAINRConfig:
    """The LAINR decoder: query features -> cross-attention to the LPs -> ResidualBlocks -> head."""
    kind: str = "lainr"
    hidden: int = 256
    n_blocks: int = 3
    heads: int = 2
    features: str = "fourier"     # "fourier": fixed log-spaced up to max_freq; "gaussian": B ~ N(0, sigma^2)
    n_freqs: int = 16
    max_freq: float = 32.0
    sigma: float = 10.0
    learnable_freqs: bool = False
    locality: bool = False        # the 2-D locality bias on the attention logits
    lp_grid: int = 16             # its distance unit: 1 / lp_grid of the image

    def __post_init__(self):
        _check_decoder_config(self)


@dataclass
class SCENTConfig:
    """The SCENT-style decoder: n_blocks x [pre-norm cross-attention with a skip, GEGLU]."""
    kind: str = "scent"
    hidden: int = 256
    n_blocks: int = 2
    heads: int = 4
    latent_blocks: int = 0        # self-attention blocks over the latents, once per decode
    features: str = "gaussian"
    n_freqs: int = 64
    max_freq: float = 32.0
    sigma: float = 10.0
    learnable_freqs: bool = False
    locality: bool = False
    lp_grid: int = 16

    def __post_init__(self):
        _check_decoder_config(self)


def _check_decoder_config(c):
    if c.features not in ("fourier", "gaussian"):
        raise ValueError(f"features must be 'fourier' or 'gaussian', got {c.features!r}")
    if c.hidden % c.heads:
        raise ValueError(f"hidden={c.hidden} must be divisible by heads={c.heads}")


def decoder_config(d):
    """A decoder config from a dict with its ``kind`` (a checkpoint's stored form), or as given."""
    if not isinstance(d, dict):
        return d
    kind = d.get("kind")
    if kind not in DECODER_CONFIGS:
        raise ValueError(f"decoder kind must be one of {sorted(DECODER_CONFIGS)}, got {kind!r}")
    names = {f.name for f in dataclasses.fields(DECODER_CONFIGS[kind])}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {kind} decoder option(s) {unknown}; known: {sorted(names)}")
    return DECODER_CONFIGS[kind](**d)


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
    """Fourier features of the query -> cross-attention to the LP latents (added to the query
    features) -> ResidualBlock trunk -> linear head.

    ``features="fourier"``: fixed log-spaced frequencies; ``max_freq`` is the top f in sin(pi f c),
    f = S being the Nyquist rate of an S-pixel grid (the feature flips sign from one pixel centre
    to the next). Frequencies far above it alias on the training grid and become noise between
    pixels at larger renders. ``features="gaussian"``: n_freqs random frequencies B ~ N(0, sigma^2)."""

    def __init__(self, config: LAINRConfig, *, latent_dim, coord_dim=2, out_dim=3):
        super().__init__()
        self.config = c = config
        self.ff = query_features(coord_dim, c)
        self.embed = nn.Linear(self.ff.out_dim, c.hidden)
        self.attn = CrossAttention(c.hidden, latent_dim, c.heads)
        self.locality = LocalityBias(c.heads, c.lp_grid) if c.locality else None
        self.blocks = nn.Sequential(*[ResidualBlock(c.hidden, 2 * c.hidden) for _ in range(c.n_blocks)])
        self.head = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, out_dim))

    def forward(self, latents, coords, lp_coords=None, return_attention=False):
        h = self.embed(self.ff(coords))
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
    """SCENT-style decoder: query Fourier features -> n_blocks x [pre-norm cross-attention to the
    latents with a skip of the query features, then a GEGLU feed-forward], optionally after
    ``latent_blocks`` self-attention blocks over the latents (M tokens, once per decode). Queries
    never attend to each other."""

    def __init__(self, config: SCENTConfig, *, latent_dim, coord_dim=2, out_dim=3):
        super().__init__()
        self.config = c = config
        self.ff = query_features(coord_dim, c)
        self.embed = nn.Linear(self.ff.out_dim, c.hidden)
        self.latent_proc = TransformerStack(latent_dim, c.latent_blocks) if c.latent_blocks else None
        self.norm_q = nn.ModuleList(nn.LayerNorm(c.hidden) for _ in range(c.n_blocks))
        self.norm_kv = nn.ModuleList(nn.LayerNorm(latent_dim) for _ in range(c.n_blocks))
        self.attn = nn.ModuleList(CrossAttention(c.hidden, latent_dim, c.heads) for _ in range(c.n_blocks))
        self.ff_blocks = nn.ModuleList(GEGLU(c.hidden) for _ in range(c.n_blocks))
        self.locality = LocalityBias(c.heads, c.lp_grid) if c.locality else None
        self.head = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, out_dim))

    def forward(self, latents, coords, lp_coords=None, return_attention=False):
        if self.latent_proc is not None:
            latents = self.latent_proc(latents)
        h = self.embed(self.ff(coords))
        bias = _bias(self.locality, coords, lp_coords)
        w = None
        for i, (nq, nkv, attn, ff) in enumerate(zip(self.norm_q, self.norm_kv, self.attn, self.ff_blocks)):
            a, wi = attn(nq(h), nkv(latents), bias=bias, return_weights=return_attention and i == 0)
            w = wi if i == 0 else w        # the first block's weights, when asked
            h = h + a                      # the skip keeps the query's own features
            h = h + ff(h)
        out = self.head(h)
        return (out, w) if return_attention else out


def _bias(locality, coords, lp_coords):
    if locality is None:
        return None
    if lp_coords is None:
        raise ValueError("this decoder has a locality bias: pass lp_coords (M, d), the coordinate of each LP")
    return locality(coords, lp_coords)


DECODERS = {"lainr": LAINRDecoder, "scent": SCENTDecoder}
DECODER_CONFIGS = {"lainr": LAINRConfig, "scent": SCENTConfig}


def build_decoder(config, *, latent_dim, coord_dim, out_dim):
    """The decoder of a typed decoder config."""
    return DECODERS[config.kind](config, latent_dim=latent_dim, coord_dim=coord_dim, out_dim=out_dim)
