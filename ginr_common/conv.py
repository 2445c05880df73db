"""Causal depthwise 1-D convolution followed by SiLU, channel-last: Mamba's short convolution.

    causal_conv1d(x, weight, bias=None, *, backend="auto") -> (batch, L, dim)

x: (batch, L, dim) (any strides); weight: (dim, 1, K) as ``nn.Conv1d(dim, dim, K, groups=dim)``
stores it, or (dim, K); bias: (dim,) or None. out[:, t] = silu(bias + sum_k weight[:, k] *
x[:, t - K + 1 + k]) with zeros before the start, i.e. ``silu(conv1d(x, padding=K-1)[..., :L])``.
Backends: ``"torch"`` (F.conv1d, any device), ``"numba"`` (CPU kernels, channel-last, no
transposes), ``"auto"`` (numba on CPU when installed, else torch).
"""
import numpy as np
import torch
import torch.nn.functional as F

from ginr_common.scan import numba_available

BACKENDS = ("auto", "torch", "numba")


def _torch(x, w, bias):
    L = x.shape[1]
    y = F.conv1d(x.transpose(1, 2), w.unsqueeze(1), bias, padding=w.shape[1] - 1, groups=w.shape[0])
    return F.silu(y[..., :L]).transpose(1, 2)


def _flat(x):
    """(b, L, d) with unit channel stride -> (its memory as a flat array, batch stride, step stride)."""
    if x.stride(2) != 1:
        x = x.contiguous()
    sb, st = x.stride(0), x.stride(1)
    n = (x.shape[0] - 1) * sb + (x.shape[1] - 1) * st + x.shape[2]
    return np.lib.stride_tricks.as_strided(x.detach().numpy(), shape=(n,), strides=(x.element_size(),)), sb, st


class _NumbaConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias):
        from ginr_common import _conv_numba

        out = x.new_empty(x.shape)
        _conv_numba.forward(*_flat(x), w.detach().numpy(), bias.detach().numpy(), out.numpy())
        ctx.save_for_backward(x, w, bias)
        return out

    @staticmethod
    def backward(ctx, dy):
        from ginr_common import _conv_numba

        x, w, bias = ctx.saved_tensors
        dx = x.new_empty(x.shape)
        dw_b, dbias_b = x.new_empty(x.shape[0], *w.shape), x.new_empty(x.shape[0], w.shape[0])
        _conv_numba.backward(*_flat(x), w.detach().numpy(), bias.detach().numpy(), *_flat(dy), dx.numpy(),
                             dw_b.numpy(), dbias_b.numpy())
        return dx, dw_b.sum(0), dbias_b.sum(0)


def causal_conv1d(x, weight, bias=None, *, backend="auto"):
    """silu(causal depthwise conv1d(x)), channel-last; see the module docstring."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    w = weight.squeeze(1) if weight.dim() == 3 else weight
    if x.dim() != 3 or w.dim() != 2 or x.shape[2] != w.shape[0] or (weight.dim() == 3 and weight.shape[1] != 1):
        raise ValueError("causal_conv1d expects x (batch, L, dim) and weight (dim, 1, K) or (dim, K); "
                         f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"bias must be (dim={w.shape[0]},), got {tuple(bias.shape)}")
    if backend == "auto":
        numba_ok = x.device.type == "cpu" and numba_available()
        backend = "numba" if numba_ok and x.dtype in (torch.float32, torch.float64) else "torch"
    if backend == "torch":
        return _torch(x, w, bias)
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"backend='numba' takes float32 or float64 CPU tensors, got {x.dtype} on {x.device}")
    bias = bias if bias is not None else x.new_zeros(w.shape[0])
    return _NumbaConv.apply(x, w.to(x.dtype), bias.to(x.dtype))


__all__ = ["causal_conv1d", "BACKENDS"]
