"""Mamba mixer (parameter names, shapes and initialisation of ``mamba_ssm.Mamba``), the
bidirectional BiMamba, and the pre-norm residual encoder stack."""
import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from ginr_common.conv import causal_conv1d
from ginr_common.scan import selective_scan


class Mamba(nn.Module):
    """Selective SSM block as in mamba_ssm/modules/mamba_simple.py (its non-fused path), so a
    state dict of one loads into the other. ``scan_backend`` picks the selective_scan backend."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001,
                 dt_max=0.1, dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True,
                 bias=False, scan_backend="auto"):
        super().__init__()
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.scan_backend = scan_backend

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)

        # dt projection initialised to preserve variance; its bias so softplus(bias) ~ U-log[dt_min, dt_max]
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True

        # S4D-real initialisation: A = -(1, ..., d_state) per channel, stored as log
        A = repeat(torch.arange(1, d_state + 1, dtype=torch.float32), "n -> d n", d=self.d_inner)
        self.A_log = nn.Parameter(torch.log(A).contiguous())
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden_states):
        """(B, L, d_model) -> (B, L, d_model). Channel-last throughout; the scan reads transposed views."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects (B, L, d_model={self.d_model}), got {tuple(hidden_states.shape)}")
        W, b = self.in_proj.weight, self.in_proj.bias   # two products: their gradients need no concatenation
        x = F.linear(hidden_states, W[:self.d_inner], None if b is None else b[:self.d_inner])
        z = F.linear(hidden_states, W[self.d_inner:], None if b is None else b[self.d_inner:])
        x = causal_conv1d(x, self.conv1d.weight, self.conv1d.bias)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_proj.weight.t()
        B = rearrange(B.contiguous(), "b l n -> b n l")   # a view; the CPU scan reads this layout as it is
        C = rearrange(C.contiguous(), "b l n -> b n l")
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x.transpose(1, 2), dt.transpose(1, 2), A, B, C, self.D.float(), z=z.transpose(1, 2),
                           delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=self.scan_backend)
        return self.out_proj(y.transpose(1, 2))


class BiMamba(nn.Module):
    """A forward Mamba and a Mamba over the flipped sequence (flipped back), combined by
    ``mean`` (the research default), ``add``, or ``concat`` (then projected back to d_model).
    The width is ``d_model`` (as in mamba_ssm) or, equivalently, ``dim``."""

    def __init__(self, d_model=None, *, dim=None, combine="mean", **mamba_kwargs):
        super().__init__()
        if (d_model is None) == (dim is None):
            raise TypeError(f"BiMamba needs its width as d_model= or dim= (one of them), got d_model={d_model}, dim={dim}")
        d_model = d_model if d_model is not None else dim
        if combine not in ("mean", "add", "concat"):
            raise ValueError(f"combine must be 'mean', 'add' or 'concat', got {combine!r}")
        self.combine = combine
        self.fwd = Mamba(d_model, **mamba_kwargs)
        self.bwd = Mamba(d_model, **mamba_kwargs)
        self.proj = nn.Linear(2 * d_model, d_model) if combine == "concat" else None

    def forward(self, x):
        return self._combine(self.fwd(x), self.bwd(x.flip(1)).flip(1))

    def recomputed(self, norm, x):
        """self(norm(x)) keeping only x for the backward: each direction (with the norm before it)
        runs again in the backward, one at a time, so only one direction's activations ever exist."""
        f = checkpoint(lambda v: self.fwd(norm(v)), x, use_reentrant=False)
        b = checkpoint(lambda v: self.bwd(norm(v).flip(1)).flip(1), x, use_reentrant=False)
        return self._combine(f, b)

    def _combine(self, f, b):
        if self.combine == "mean":
            return (f + b) / 2
        if self.combine == "add":
            return f + b
        return self.proj(torch.cat([f, b], dim=-1))


class EncoderBlock(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + MLP(norm(x)) with a 4x GELU MLP."""

    def __init__(self, dim, mixer, *, mlp_ratio=4):
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(dim), mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x, recompute=False):
        """``recompute``: keep only the block's input for the mixer's backward and run norm1 + mixer
        again there, through the mixer's ``recomputed(norm, x)`` (BiMamba: one direction at a time)."""
        x = x + (self.mixer.recomputed(self.norm1, x) if recompute else self.mixer(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


class BiMambaStack(nn.Module):
    """depth x EncoderBlock(BiMamba), then a final LayerNorm (the residual adds are in the blocks).
    ``recompute=True``: in training, each block keeps only its input for the mixer and recomputes
    the mixer in the backward (the encoder's activation memory falls to about that of its MLPs)."""

    def __init__(self, dim, depth, *, combine="mean", mlp_ratio=4, recompute=False, **mamba_kwargs):
        super().__init__()
        self.recompute = recompute
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, BiMamba(dim, combine=combine, **mamba_kwargs), mlp_ratio=mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        recompute = self.recompute and torch.is_grad_enabled()
        for blk in self.blocks:
            x = blk(x, recompute=recompute)
        return self.norm(x)
