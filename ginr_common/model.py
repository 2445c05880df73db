"""MambaGINR: encoder + pluggable decoder, with encode / decode / render; SimpleMambaGINR (the
quick-start API); checkpoints that rebuild the model from the stored config alone."""
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ginr_common.decoders import DECODERS
from ginr_common.encoder import MambaEncoder
from ginr_common.flow import FlowConfig, SparseFieldFlow
from ginr_common.fourier import make_grid
from ginr_common.mamba import BiMambaStack
from ginr_common.tokens import ImplicitSequentialBias

CHECKPOINT_FORMAT = "ginr-checkpoint-v1"


@dataclass
class GINRConfig:
    name: str = "standard_fourier"
    input_size: tuple = (32, 32)
    in_channels: int = 3
    patch_size: int = 2
    dim: int = 256
    depth: int = 6
    num_lp: int = 256
    lp_type: str = "equidistant"
    n_group: int = 2
    lp_init: str = "sinusoidal"
    combine: str = "mean"
    d_state: int = 16
    token_freqs: int = 8
    decoder: str = "lainr"
    decoder_kwargs: dict = field(default_factory=lambda: dict(hidden=512, n_freqs=32, max_freq=32, heads=2, n_blocks=3))
    query_chunk: int = 16384
    mixer: str = "bimamba"      # "transformer": the self-attention baseline of the same width and depth
    input_skip: bool = False    # decode a residual over bicubic interpolation of the input (needs images)

    def __post_init__(self):
        self.input_size = tuple(self.input_size)
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {self.decoder!r}")


class MambaGINR(nn.Module):
    def __init__(self, config: GINRConfig):
        super().__init__()
        self.config = c = config
        self.encoder = MambaEncoder(c.input_size, c.in_channels, c.patch_size, c.dim, c.depth, c.num_lp,
                                    c.lp_type, c.n_group, c.lp_init, c.token_freqs, c.combine, c.d_state,
                                    mixer=c.mixer)
        self.decoder = DECODERS[c.decoder](c.dim, coord_dim=len(c.input_size), out_dim=c.in_channels,
                                           **c.decoder_kwargs)
        self.register_buffer("lp_coords", self.encoder.lp_coords, persistent=False)  # (M, d)

    def encode(self, images):
        """(B, C, *S) in [0, 1] -> latents (B, M, dim)."""
        return self.encoder(images)

    def decode(self, latents, coords, images=None, **kw):
        """latents (B, M, dim); coords (Q, d) shared or (B, Q, d) per image, pixel centres in [0, 1]
        in axis order -> (B, Q, C). Queries are decoded in chunks of ``config.query_chunk``.
        With ``config.input_skip`` the decoder's output is a residual added to the bicubic
        interpolation of ``images`` (the encoder's input) at the queries, which must be given."""
        d = len(self.config.input_size)
        if coords.dim() == 2:
            coords = coords.expand(latents.shape[0], -1, -1)
        if coords.dim() != 3 or coords.shape[0] != latents.shape[0] or coords.shape[-1] != d:
            raise ValueError(f"coords must be (Q, {d}) or (B={latents.shape[0]}, Q, {d}), got {tuple(coords.shape)}")
        coords = coords.to(latents.dtype)
        n = self.config.query_chunk
        parts = [self.decoder(latents, coords[:, i:i + n], lp_coords=self.lp_coords, **kw)
                 for i in range(0, coords.shape[1], n)]
        w = torch.cat([p[1] for p in parts], 2) if kw.get("return_attention") else None
        out = torch.cat([p[0] for p in parts], 1) if w is not None else torch.cat(parts, 1)
        if self.config.input_skip:
            if images is None:
                raise ValueError("this model (input_skip=True) decodes a residual over its input: pass images=")
            out = out + sample_bicubic(images.to(out.dtype), coords)
        return (out, w) if w is not None else out

    def render(self, images, size):
        """Decode every image on a pixel-centre grid of ``size`` -> (B, C, *size)."""
        size = (size,) * len(self.config.input_size) if isinstance(size, int) else tuple(size)
        out = self.decode(self.encode(images), make_grid(size, device=images.device), images=images)
        return out.transpose(1, 2).reshape(out.shape[0], -1, *size)

    def forward(self, images, coords):
        return self.decode(self.encode(images), coords, images=images)


def sample_bicubic(images, coords):
    """Bicubic interpolation of images (B, C, H, W) at pixel-centre coordinates (B, Q, 2) in axis
    order (y, x) -> (B, Q, C); the same kernel and convention as the bicubic baseline."""
    if images.dim() != 4 or coords.shape[-1] != 2:
        raise ValueError(f"input_skip works on 2-D images (B, C, H, W) with (B, Q, 2) coords, got "
                         f"{tuple(images.shape)} and {tuple(coords.shape)}")
    grid = (coords.flip(-1) * 2 - 1)[:, :, None]          # grid_sample wants (x, y) in [-1, 1]
    out = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


class SimpleMambaGINR(nn.Module):
    """The quick-start API: ``model(input_features (B, N, input_dim), coords (B, Q, k))`` ->
    (B, Q, output_dim); ``model.tokenize(images)`` -> per-pixel features (B, H*W, C)."""

    def __init__(self, input_dim=3, hidden_dim=256, output_dim=3, num_lp=32, mamba_depth=4, coord_dim=2,
                 lp_type="equidistant"):
        super().__init__()
        self.embed = nn.Linear(input_dim, hidden_dim)
        self.lp = ImplicitSequentialBias(num_lp, hidden_dim, None, lp_type)
        self.stack = BiMambaStack(hidden_dim, mamba_depth)
        self.decoder = DECODERS["lainr"](hidden_dim, coord_dim, output_dim, hidden=hidden_dim)

    @property
    def lps(self):
        return self.lp.lps

    @staticmethod
    def tokenize(images):
        return images.flatten(2).transpose(1, 2)

    def forward(self, input_features, coords):
        latents = self.lp.extract_lp_tokens(self.stack(self.lp.add_lp(self.embed(input_features))))
        if coords.dim() == 2:
            coords = coords.expand(latents.shape[0], -1, -1)
        return self.decoder(latents, coords)


# ----------------------------------------------------------------------------- checkpoints
MODEL_FAMILIES = {"ginr": (GINRConfig, MambaGINR), "flow": (FlowConfig, SparseFieldFlow)}


def model_for(config):
    """The model of a config dataclass (GINRConfig -> MambaGINR, FlowConfig -> SparseFieldFlow)."""
    for cfg_cls, model_cls in MODEL_FAMILIES.values():
        if isinstance(config, cfg_cls):
            return model_cls(config)
    raise TypeError(f"config must be one of {[c.__name__ for c, _ in MODEL_FAMILIES.values()]}, got {type(config).__name__}")


def build_model(config_dict):
    d = dict(config_dict)
    family = d.pop("family", "ginr")
    if family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(MODEL_FAMILIES)}")
    cfg_cls, model_cls = MODEL_FAMILIES[family]
    return model_cls(cfg_cls(**d))


def config_dict(model):
    family = next(k for k, (_, m) in MODEL_FAMILIES.items() if isinstance(model, m))
    d = dataclasses.asdict(model.config)
    return {"family": family, **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}


def atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path, model, train_state=None, **extra):
    """Write {format, config, model (state dict), train_state, ...} atomically."""
    model = getattr(model, "module", model)  # unwrap DDP
    atomic_save({"format": CHECKPOINT_FORMAT, "config": config_dict(model), "model": model.state_dict(),
                 "train_state": train_state or {}, **extra}, path)


def load_checkpoint(path, map_location=None):
    """(model rebuilt from the stored config, checkpoint dict). Raises ValueError on a truncated
    or corrupt file, a file that is not a checkpoint, or a config that does not match the weights."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "config" not in ckpt or "model" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a MAMBA-GINR checkpoint: expected a dict with format="
                         f"{CHECKPOINT_FORMAT!r}, 'config' and 'model'; got {keys}")
    model = build_model(ckpt["config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: the stored config does not match the stored weights: {e}") from e
    if map_location is not None:
        model.to(map_location)
    return model, ckpt
