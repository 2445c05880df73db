"""MambaGINR: patch tokens + LPs through a BiMamba encoder, and a decoder that reads the LP
latents at any coordinates (encode / decode / render); SimpleMambaGINR, a compact all-in-one API."""
from dataclasses import dataclass, field

import torch
from torch import nn

from ginr_common.baselines import sample_upsample
from ginr_common.decoders import (LAINRConfig, LocalConfig, NeighbourConfig, PixelFilter, SCENTConfig, build_decoder,
                                  decoder_config, returns_features)
from ginr_common.encoder import MambaEncoder
from ginr_common.fourier import make_grid
from ginr_common.inputs import as_coords, as_image, as_scale, as_size, as_unit_range
from ginr_common.mamba import BiMambaStack
from ginr_common.tokens import ImplicitSequentialBias


@dataclass
class GINRConfig:
    """One MambaGINR model: the encoder's fields, then a typed decoder config (defaults: notebook 1's
    cpu model, ``standard_fourier``)."""
    name: str = "standard_fourier"
    input_size: tuple = (32, 32)
    in_channels: int = 3
    patch_size: int = 4
    dim: int = 64
    depth: int = 2
    num_lp: int = 64
    lp_type: str = "equidistant"
    n_group: int = 2
    lp_init: str = "sinusoidal"
    combine: str = "mean"
    d_state: int = 16
    token_freqs: int = 8
    mixer: str = "bimamba"      # "transformer": the self-attention baseline of the same width and depth
    position: str = "fourier"   # the patch tokens' position: "fourier" (a fixed sinusoidal encoding of the patch
                                # centres), "learned" (a vector per patch) or "rope" (rotary, mixer="transformer" only)
    lp_content: bool = False    # each LP also starts from a projection of the mean patch embedding of its lattice cell
    order: str = "raster"       # the sequence order of patch tokens and LPs: "raster", or "curve" (each LP beside
                                # the tokens of its lattice cell at any LP count; encoder.sequence_order)
    decoder: LocalConfig | SCENTConfig | LAINRConfig | NeighbourConfig = field(default_factory=LocalConfig)
    input_skip: bool = False    # decode a residual over bicubic (volumes: trilinear) interpolation of the input
    pixel_tokens: bool = False  # with a decoder that reads patch tokens: add a projection of each patch's own
                                # pixels to its encoded token (pixel-aligned features keep the exact input)
    pixel_filter: int = 8       # k > 0: add a k^d filter over the input pixels around each query, its weights
                                # predicted by the decoder's features (decoders.PixelFilter; 0: none); needs
                                # images at decode and a decoder that returns its features
    query_chunk: int = 16384

    def __post_init__(self):
        self.input_size = tuple(self.input_size)
        self.decoder = decoder_config(self.decoder)
        if self.pixel_filter and not returns_features(self.decoder):
            raise ValueError(f"pixel_filter={self.pixel_filter} needs a decoder that returns its features (the local, "
                             f"neighbour or SCENT decoder), got {type(self.decoder).__name__}: set pixel_filter=0")

    @property
    def reads_tokens(self):
        """Whether the decoder reads the encoded patch tokens beside the LPs (its config says)."""
        return self.decoder.reads_tokens


class MambaGINR(nn.Module):
    """``encode`` images (B, C, *S) in [0, 1] -> LP latents; ``decode`` latents at coordinates;
    ``render`` on a pixel grid of any size; ``forward(images, coords)`` = decode(encode(images))."""

    def __init__(self, config: GINRConfig):
        super().__init__()
        self.config = c = config
        self.encoder = MambaEncoder(c.input_size, c.in_channels, c.patch_size, dim=c.dim, depth=c.depth,
                                    num_lp=c.num_lp, lp_type=c.lp_type, n_group=c.n_group, lp_init=c.lp_init,
                                    n_freqs=c.token_freqs, combine=c.combine, d_state=c.d_state, mixer=c.mixer,
                                    order=c.order, lp_content=c.lp_content,
                                    position=c.position)
        self.decoder = build_decoder(c.decoder, latent_dim=c.dim, coord_dim=len(c.input_size), out_dim=c.in_channels,
                                     lattice=self.encoder.lattice, token_grid=self.encoder.tokenizer.grid)
        self.register_buffer("lp_coords", self.encoder.lp_coords, persistent=False)  # (M, d): the LPs' homes
        tok = self.encoder.tokenizer
        self.pixel_proj = nn.Linear(tok.patch_dim, c.dim) if c.reads_tokens and c.pixel_tokens else None
        self.pixel_filter = (PixelFilter(c.decoder.hidden, c.pixel_filter, len(c.input_size)) if c.pixel_filter
                             else None)
        if c.input_skip:  # a residual over bicubic starts at bicubic: the decoder's last layer starts at zero
            nn.init.zeros_(self.decoder.head[-1].weight)
            nn.init.zeros_(self.decoder.head[-1].bias)

    @property
    def dtype(self):
        return self.encoder.lp.lps.dtype

    def encode(self, images):
        """(B, C, *S) in [0, 1] (any float dtype) -> latents (B, M, dim): the encoded LPs, followed
        by the N encoded patch tokens, (B, M + N, dim), when the decoder reads them
        (``config.reads_tokens``). NaN/inf or values outside [0, 1] raise ValueError."""
        images = as_unit_range(images, "images", self.dtype)
        if not self.config.reads_tokens:
            return self.encoder(images)
        lps, tokens = self.encoder(images, with_tokens=True)
        if self.pixel_proj is not None:
            tokens = tokens + self.pixel_proj(self.encoder.tokenizer.patchify(images))
        return torch.cat([lps, tokens], 1)

    def decode(self, latents, coords, images=None, cell=None, **kw):
        """latents from ``encode``; coords (Q, d) shared or (B, Q, d) per image, pixel centres
        (i + 0.5) / S in [0, 1] in axis order (outside [0, 1] the field is extrapolated)
        -> (B, Q, C). ``cell``: each query's pixel footprint (1 / S per axis; a (d,) tensor, or
        (B, Q, d)); default the input's, 1 / input_size. Queries are decoded in chunks of
        ``config.query_chunk``. With ``config.input_skip`` the output is a residual added to the
        bicubic interpolation of ``images`` (the encoder's input) at the queries; with
        ``config.pixel_filter`` a filter over the input pixels around each query is added; both
        need ``images``."""
        d = len(self.config.input_size)
        coords = as_coords(coords, d, "coords", latents.dtype)
        if coords.dim() == 2:
            coords = coords.expand(latents.shape[0], -1, -1)
        if coords.dim() != 3 or coords.shape[0] != latents.shape[0] or coords.shape[-1] != d:
            raise ValueError(f"coords must be (Q, {d}) or (B={latents.shape[0]}, Q, {d}), got {tuple(coords.shape)}")
        cell = 1 / torch.tensor(self.config.input_size, dtype=coords.dtype) if cell is None else cell
        cell = torch.as_tensor(cell, dtype=coords.dtype, device=coords.device).expand_as(coords)
        m = self.config.num_lp
        lps, tokens = (latents[:, :m], latents[:, m:]) if self.config.reads_tokens else (latents, None)
        if (self.config.input_skip or self.pixel_filter is not None) and images is None:
            raise ValueError("this model reads its input at decoding (input_skip or pixel_filter): pass images=")
        if images is not None:
            images = as_unit_range(images, "images", coords.dtype)
        n = self.config.query_chunk
        taps = self.pixel_filter.taps(images) if self.pixel_filter is not None else None
        parts = [self._decode_chunk(lps, coords[:, i:i + n], tokens, cell[:, i:i + n], images, taps, kw)
                 for i in range(0, coords.shape[1], n)]
        w = torch.cat([p[1] for p in parts], 2) if kw.get("return_attention") else None
        out = torch.cat([p[0] for p in parts], 1) if w is not None else torch.cat(parts, 1)
        if self.config.input_skip:
            out = out + sample_upsample(images, coords)
        return (out, w) if w is not None else out

    def _decode_chunk(self, lps, coords, tokens, cell, images, taps, kw):
        if self.pixel_filter is None:
            return self.decoder(lps, coords, lp_coords=self.lp_coords, tokens=tokens, cell=cell, **kw)
        out, feats, *attention = self.decoder(lps, coords, lp_coords=self.lp_coords, tokens=tokens, cell=cell,
                                              return_features=True, **kw)
        out = out + self.pixel_filter(feats, images, coords, cell, taps=taps)
        return (out, *attention) if attention else out

    @torch.no_grad()
    def render(self, images, size):
        """Decode every image on a pixel-centre grid of ``size`` -> (B, C, *size), without gradients
        (inference: memory stays bounded at any size; ``decode`` keeps gradients)."""
        size = (size,) * len(self.config.input_size) if isinstance(size, int) else tuple(size)
        out = self.decode(self.encode(images), make_grid(size, device=images.device), images=images,
                          cell=1 / torch.tensor(size, dtype=torch.float32))
        return out.transpose(1, 2).reshape(out.shape[0], -1, *size)

    def forward(self, images, coords, cell=None):
        return self.decode(self.encode(images), coords, images=images, cell=cell)


class SimpleMambaGINR(nn.Module):
    """A compact all-in-one API: ``model(input_features (B, N, input_dim), coords (B, Q, k) or (Q, k))``
    -> (B, Q, output_dim); ``model.tokenize(images)`` -> per-pixel features (B, H*W, C).

    ``coord_dim=None`` (the default) accepts 1-, 2- or 3-D coordinates (an image or a volume):
    the decoder is built for 3-D and missing axes read as 0. Pass ``coord_dim=k`` for exactly k."""

    MAX_COORD_DIM = 3

    def __init__(self, input_dim=3, hidden_dim=256, output_dim=3, num_lp=32, mamba_depth=4, *, coord_dim=None,
                 lp_type="equidistant"):
        super().__init__()
        self.coord_dim = coord_dim
        self.embed = nn.Linear(input_dim, hidden_dim)
        self.lp = ImplicitSequentialBias(num_lp, hidden_dim, None, type=lp_type)
        self.stack = BiMambaStack(hidden_dim, mamba_depth)
        self.decoder = build_decoder(LAINRConfig(hidden=hidden_dim), latent_dim=hidden_dim,
                                     coord_dim=coord_dim or self.MAX_COORD_DIM, out_dim=output_dim)

    @property
    def lps(self):
        return self.lp.lps

    @staticmethod
    def tokenize(images):
        """Images (B, C, *S) -> per-pixel features (B, prod(S), C)."""
        return images.flatten(2).transpose(1, 2)

    def forward(self, input_features, coords):
        latents = self.lp.extract_lp_tokens(self.stack(self.lp.add_lp(self.embed(input_features))))
        k = coords.shape[-1]
        coords = as_coords(coords, k, "coords", latents.dtype)
        if self.coord_dim is not None and k != self.coord_dim:
            raise ValueError(f"this model was built with coord_dim={self.coord_dim}, got {k}-D coords; build it with "
                             f"coord_dim={k}, or coord_dim=None for any of 1-{self.MAX_COORD_DIM} dims")
        if self.coord_dim is None:
            if not 1 <= k <= self.MAX_COORD_DIM:
                raise ValueError(f"coords must have 1 to {self.MAX_COORD_DIM} dims with coord_dim=None, got {k}; "
                                 f"pass SimpleMambaGINR(..., coord_dim={k})")
            coords = torch.nn.functional.pad(coords, (0, self.MAX_COORD_DIM - k))
        if coords.dim() == 2:
            coords = coords.expand(latents.shape[0], -1, -1)
        return self.decoder(latents, coords)


def _tile_starts(n, tile, stride):
    """Tile offsets along an axis of ``n`` pixels: every ``stride`` pixels, the last flush with the end."""
    starts = list(range(0, max(n - tile, 0) + 1, stride))
    return starts if starts[-1] == max(n - tile, 0) else starts + [n - tile]


@torch.no_grad()
def render_image(model, image, size=None, scale=None, overlap=8):
    """Render one image of any size at any resolution -> (C, H', W') in [0, 1].

    ``image``: a (C, H, W) tensor (float in [0, 1] or uint8), an (H, W, C) or (H, W) NumPy array
    (uint8 0..255 or float in [0, 1]) or a PIL image, at least the model's input size; RGBA loses
    its alpha channel and a grayscale image is repeated to the model's channels. Output ``size``
    (H', W') or ``scale`` (any factor > 0, 3.7 included). Overlapping tiles of the model's input
    size (``overlap`` pixels) are encoded; every output pixel is decoded from each tile that
    covers it, at its coordinate inside the tile with its cell size, and the tiles are blended
    with tent weights (heavier in a tile's middle), so there are no seams."""
    if (size is None) == (scale is None):
        raise ValueError(f"give exactly one of size= or scale=, got size={size}, scale={scale}")
    if len(model.config.input_size) != 2:
        raise ValueError(f"render_image works on 2-D models, this one has input_size {model.config.input_size}")
    image = as_unit_range(as_image(image, model.config.in_channels), "image", model.dtype)
    (C, H, W), (th, tw) = image.shape, model.config.input_size
    if H < th or W < tw:
        raise ValueError(f"image must be at least the model's input size {th}x{tw}, got {H}x{W}")
    if overlap < 0 or overlap >= min(th, tw):
        raise ValueError(f"overlap must be in [0, {min(th, tw)}), got {overlap}")
    if size is None:
        scale = as_scale(scale)
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
    size = as_size(size, 2)
    Hs, Ws = size
    uy, ux = ((torch.arange(n) + 0.5) * m / n for n, m in ((Hs, H), (Ws, W)))   # output centres, input pixels
    cell = torch.tensor([H / Hs / th, W / Ws / tw])
    out, wsum = torch.zeros(C, Hs, Ws), torch.zeros(1, Hs, Ws)
    tent = lambda c: torch.minimum(c, 1 - c).clamp_min(1e-3)  # noqa: E731
    for y0 in _tile_starts(H, th, th - overlap):
        iy = ((uy >= y0) & (uy < y0 + th)).nonzero().flatten()
        cy = (uy[iy] - y0) / th
        tiles = torch.stack([image[:, y0:y0 + th, x0:x0 + tw] for x0 in _tile_starts(W, tw, tw - overlap)])
        latents = model.encode(tiles)
        for j, x0 in enumerate(_tile_starts(W, tw, tw - overlap)):
            ix = ((ux >= x0) & (ux < x0 + tw)).nonzero().flatten()
            cx = (ux[ix] - x0) / tw
            coords = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2)
            pred = model.decode(latents[j:j + 1], coords, images=tiles[j:j + 1], cell=cell).float()
            w = (tent(cy)[:, None] * tent(cx)[None, :])[None]
            out[:, iy[:, None], ix[None, :]] += w * pred[0].T.reshape(C, len(iy), len(ix))
            wsum[:, iy[:, None], ix[None, :]] += w
    return (out / wsum).clamp(0, 1)
