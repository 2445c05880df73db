"""Selective scan with the signature and semantics of mamba-ssm's ``selective_scan_fn``.

    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, backend="auto")

u, delta, z: (batch, dim, L); A: (dim, N) real; B, C: (batch, N, L) or grouped (batch, G, N, L)
with dim divisible by G; D, delta_bias: (dim,). Returns (batch, dim, L) in u's dtype, plus the
last state (batch, dim, N) in float32 (float64 for float64 inputs) when asked.

Backends
- ``"reference"``: a plain sequential loop in the input precision (float64-capable): the oracle.
- ``"numba"``: the fast CPU path (chunked forward with state checkpoints, hand-written reverse
  scan for backward); the default on CPU.
- ``"torch"``: the same chunked algorithm in plain PyTorch ops; runs on any device.
- ``"mamba_ssm"``: mamba-ssm's fused CUDA kernel (``pip install 'ginr-common[cuda]'``).
- ``"triton"``: Triton kernels (forward and backward), compiled at run time on CUDA; on CPU only
  through Triton's interpreter (TRITON_INTERPRET=1, slow: for tests). float32 state.
- ``"auto"``: CUDA tensors -> mamba_ssm if installed, else triton if installed, else torch;
  CPU -> numba.
"""
from __future__ import annotations

import importlib.util
import math
import os

import torch
import torch.nn.functional as F
from einops import repeat

BACKENDS = ("auto", "reference", "numba", "torch", "mamba_ssm", "triton")
CHUNK = 64  # steps between forward state checkpoints


class BackendUnavailableError(RuntimeError):
    """The requested scan backend cannot run here; the message says how to install it."""


# ----------------------------------------------------------------------------- validation
def _check_inputs(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, L), got shape {tuple(u.shape)}")
    b, d, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d or A.is_complex():
        raise ValueError(f"A must be real (dim={d}, N), got {tuple(A.shape)} {A.dtype}")
    N = A.shape[1]
    for name, X in (("B", B), ("C", C)):
        if X.dim() == 3:
            ok = X.shape == (b, N, L)
        elif X.dim() == 4:
            ok = X.shape[0] == b and X.shape[2:] == (N, L) and X.shape[1] >= 1 and d % X.shape[1] == 0
        else:
            ok = False
        if not ok:
            raise ValueError(f"{name} must be input-dependent, (batch={b}, N={N}, L={L}) or "
                             f"(batch, G, N, L) with G dividing dim={d}; got {tuple(X.shape)}")
    for name, X in (("D", D), ("delta_bias", delta_bias)):
        if X is not None and X.shape != (d,):
            raise ValueError(f"{name} must be (dim={d},), got {tuple(X.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


# ----------------------------------------------------------------------------- reference
def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """Sequential loop in float32 (float64 when u is float64): the test oracle."""
    dtype_in = u.dtype
    wt = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, A, B, C = (x.to(wt) for x in (u, A, B, C))
    delta = _prepare_delta(delta, delta_bias, delta_softplus, wt)
    dim = u.shape[1]
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    B = repeat(B, "b g n l -> b (g h) l n", h=dim // B.shape[1])
    C = repeat(C, "b g n l -> b (g h) l n", h=dim // C.shape[1])
    deltaA = torch.exp(delta[..., None] * A[:, None])                      # (b, d, L, N)
    deltaB_u = (delta * u)[..., None] * B
    h = u.new_zeros(u.shape[0], dim, A.shape[1])
    ys = []
    for dA_t, dBu_t, C_t in zip(deltaA.unbind(2), deltaB_u.unbind(2), C.unbind(2)):
        h = dA_t * h + dBu_t
        ys.append((h * C_t).sum(-1))
    out = _skip_and_gate(torch.stack(ys, dim=2), u, D, z).to(dtype_in)
    return (out, h) if return_last_state else out


def _prepare_delta(delta, delta_bias, delta_softplus, wt):
    """delta (+ delta_bias), softplus'd if asked, in working precision ``wt``."""
    delta = delta.to(wt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(wt)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _skip_and_gate(y, u, D, z):
    """y + D u, then gated by silu(z): the output stage shared by every backend."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    return y if z is None else y * F.silu(z.to(y.dtype))


# ----------------------------------------------------------------------------- torch kernels
def _torch_forward(u, delta, A, B, C, T):
    """Chunked forward in torch ops. B, C: (b, G, N, L). Returns y (b, d, L), hs (b, d, K+1, N)."""
    b, d, L = u.shape
    G, N = B.shape[1], A.shape[1]
    K = math.ceil(L / T)
    hs = u.new_empty(b, d, K + 1, N)
    y = torch.empty_like(u)
    h = u.new_zeros(b, G, d // G, N)
    Ag = A.view(G, d // G, N)
    for k in range(K):
        hs[:, :, k] = h.view(b, d, N)
        t0, t1 = k * T, min(L, (k + 1) * T)
        dA = torch.exp(delta[:, :, t0:t1, None].view(b, G, d // G, -1, 1) * Ag[:, :, None])
        du = (delta[:, :, t0:t1] * u[:, :, t0:t1]).view(b, G, d // G, -1)
        for i, t in enumerate(range(t0, t1)):
            h = dA[:, :, :, i] * h + du[..., i, None] * B[:, :, None, :, t]
            y[:, :, t] = (h * C[:, :, None, :, t]).sum(-1).view(b, d)
    hs[:, :, K] = h.view(b, d, N)
    return y, hs


def _torch_backward(u, delta, A, B, C, hs, dy, dlast, T):
    b, d, L = u.shape
    G, N = B.shape[1], A.shape[1]
    hpg = d // G
    K = hs.shape[2] - 1
    Ag = A.view(G, hpg, N)
    v = lambda x: x.view(b, G, hpg, *x.shape[2:])  # noqa: E731  (b, d, ...) -> (b, G, hpg, ...)
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dA = torch.zeros_like(A).view(G, hpg, N)
    dB, dC = torch.zeros_like(B), torch.zeros_like(C)
    g = v(dlast).clone()
    for k in range(K - 1, -1, -1):
        t0, t1 = k * T, min(L, (k + 1) * T)
        dl, uu, dyc = v(delta[:, :, t0:t1]), v(u[:, :, t0:t1]), v(dy[:, :, t0:t1])
        dAc = torch.exp(dl[..., None] * Ag[:, :, None])                     # (b,G,h,m,N)
        Bc, Cc = B[..., t0:t1].transpose(-1, -2), C[..., t0:t1].transpose(-1, -2)  # (b,G,m,N)
        hprev = [v(hs[:, :, k])]
        for i in range(t1 - t0):
            hprev.append(dAc[:, :, :, i] * hprev[-1] + (dl[..., i] * uu[..., i])[..., None] * Bc[:, :, None, i])
        hc = torch.stack(hprev, dim=3)                                     # (b,G,h,m+1,N)
        gs = []
        for i in range(t1 - t0 - 1, -1, -1):
            g = g + Cc[:, :, None, i] * dyc[..., i, None]
            gs.append(g)
            g = g * dAc[:, :, :, i]
        gc = torch.stack(gs[::-1], dim=3)                                  # (b,G,h,m,N)
        dC[..., t0:t1] = torch.einsum("bghm,bghmn->bgnm", dyc, hc[:, :, :, 1:])
        dB[..., t0:t1] = torch.einsum("bghmn,bghm->bgnm", gc, dl * uu)
        sB = torch.einsum("bghmn,bgmn->bghm", gc, Bc)
        x = gc * hc[:, :, :, :-1] * dAc
        du[:, :, t0:t1] = (dl * sB).reshape(b, d, -1)
        ddelta[:, :, t0:t1] = (uu * sB + (x * Ag[:, :, None]).sum(-1)).reshape(b, d, -1)
        dA += torch.einsum("bghmn,bghm->ghn", x, dl)
    return du, ddelta, dA.view(d, N), dB, dC


# ----------------------------------------------------------------------------- numba kernels
def _channel_block(dpg, rows, threads):
    """Channels per numba work item: the most (up to 128, dividing the channels per group ``dpg``:
    long vector loops) that still leave two work items per thread over ``rows`` (batch x groups)."""
    blocks = [w for w in range(min(dpg, 128), 0, -1) if dpg % w == 0]
    return next((w for w in blocks if rows * (dpg // w) >= 2 * threads or w <= 8), blocks[-1])


def _as_numba(X):
    """A tensor as a numpy array for the kernels: strided views are read as they are."""
    return X.detach().numpy()


class _NumbaScan(torch.autograd.Function):
    """The whole selective scan in two numba kernels: delta's bias and softplus (forward and
    gradient), the D skip and the silu(z) gate are computed inside them, strided inputs are read
    without copies, and the output and the gradients of u, delta and z are written token-major
    ((b, L, d), returned as (b, d, L) views), the layout of the projections around the scan."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        from numba import get_num_threads

        from ginr_common import _scan_numba

        b, d, L = u.shape
        G, N = B.shape[1], A.shape[1]
        Dw = D if D is not None else u.new_zeros(d)
        zw = z if z is not None else u
        bias = delta_bias if delta_bias is not None else u.new_zeros(d)
        DB = _channel_block(d // G, b * G, get_num_threads())
        out = u.new_empty(b, L, d)
        hs = u.new_empty(b, d, math.ceil(L / CHUNK) + 1, N)
        fwd, _ = _scan_numba.kernels(_as_numba(u).dtype)
        fwd(_as_numba(u), _as_numba(delta), _as_numba(bias), delta_softplus, _as_numba(A),
            _as_numba(B.transpose(-1, -2)), _as_numba(C.transpose(-1, -2)), _as_numba(Dw), _as_numba(zw),
            z is not None, CHUNK, DB, out.numpy(), hs.numpy())
        ctx.save_for_backward(u, delta, bias, A, B, C, Dw, zw, hs)
        ctx.flags = (D is not None, z is not None, delta_bias is not None, delta_softplus)
        return out.transpose(1, 2), hs[:, :, -1].clone()

    @staticmethod
    def backward(ctx, dout, dlast):
        from numba import get_num_threads

        from ginr_common import _scan_numba

        u, delta, bias, A, B, C, Dw, zw, hs = ctx.saved_tensors
        has_D, has_z, has_bias, softplus = ctx.flags
        b, d, L = u.shape
        G, N = B.shape[1], A.shape[1]
        DB = _channel_block(d // G, b * G, get_num_threads())
        S = max(1, min(d // G // DB, -(-2 * get_num_threads() // (b * G))))  # enough work items per thread
        dout = u.new_zeros(b, L, d) if dout is None else dout.transpose(1, 2).contiguous()
        dlast = hs.new_zeros(hs[:, :, -1].shape) if dlast is None else dlast.contiguous()
        du, ddelta, dz = (u.new_empty(b, L, d) for _ in range(3))
        dA_bd, dD_bd = u.new_empty(b, d, N), u.new_empty(b, d)
        dB_s, dC_s = u.new_zeros(S, b, G, L, N), u.new_zeros(S, b, G, L, N)
        _, bwd = _scan_numba.kernels(_as_numba(u).dtype)
        bwd(_as_numba(u), _as_numba(delta), _as_numba(bias), softplus, _as_numba(A), _as_numba(B.transpose(-1, -2)),
            _as_numba(C.transpose(-1, -2)), _as_numba(Dw), _as_numba(zw), has_z, hs.numpy(), dout.numpy(),
            dlast.numpy(), CHUNK, DB, S, du.numpy(), ddelta.numpy(), dz.numpy(), dA_bd.numpy(), dD_bd.numpy(),
            dB_s.numpy(), dC_s.numpy())
        dbias = ddelta.sum((0, 1)) if has_bias else None
        return (du.transpose(1, 2), ddelta.transpose(1, 2), dA_bd.sum(0), dB_s.sum(0).transpose(-1, -2),
                dC_s.sum(0).transpose(-1, -2), dD_bd.sum(0) if has_D else None,
                dz.transpose(1, 2) if has_z else None, dbias, None)


def _triton_forward(*args):
    from ginr_common import _scan_triton

    return _scan_triton.forward(*args)


def _triton_backward(*args):
    from ginr_common import _scan_triton

    return _scan_triton.backward(*args)


_IMPLS = {"torch": (_torch_forward, _torch_backward), "triton": (_triton_forward, _triton_backward)}


class _ChunkedScan(torch.autograd.Function):
    """y_t = <C_t, h_t>, h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t; returns (y, last_state)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, impl):
        fwd, _ = _IMPLS[impl]
        y, hs = fwd(u, delta, A, B, C, CHUNK)
        ctx.save_for_backward(u, delta, A, B, C, hs)
        ctx.impl = impl
        return y, hs[:, :, -1].clone()

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, hs = ctx.saved_tensors
        _, bwd = _IMPLS[ctx.impl]
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        dlast = hs.new_zeros(hs[:, :, -1].shape) if dlast is None else dlast.contiguous()
        du, ddelta, dA, dB, dC = bwd(u, delta, A, B, C, hs, dy, dlast, CHUNK)
        return du, ddelta, dA, dB, dC, None


# ----------------------------------------------------------------------------- dispatch
def mamba_ssm_available() -> bool:
    return importlib.util.find_spec("mamba_ssm") is not None


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device_type: str) -> str:
    """The concrete backend that ``backend`` means for tensors on ``device_type``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device_type == "cuda":
            return "mamba_ssm" if mamba_ssm_available() else "triton" if triton_available() else "torch"
        return "numba" if device_type == "cpu" and numba_available() else "torch"
    if backend == "mamba_ssm" and not mamba_ssm_available():
        raise BackendUnavailableError(
            "backend='mamba_ssm' needs the mamba-ssm package and a CUDA GPU: "
            "pip install 'ginr-common[cuda]' (or pip install mamba-ssm). "
            "backend='torch' runs on any device without it.")
    if backend == "triton":
        if not triton_available():
            raise BackendUnavailableError("backend='triton' needs triton (it comes with torch's CUDA builds on "
                                          "Linux): pip install triton")
        if device_type != "cuda" and not triton_interpreted():
            raise BackendUnavailableError(
                f"backend='triton' runs on CUDA tensors, got {device_type}; on CPU it runs only through "
                "Triton's interpreter (set TRITON_INTERPRET=1 before importing triton; slow, for tests)")
    if backend == "numba":
        if not numba_available():
            raise BackendUnavailableError("backend='numba' needs numba: pip install numba")
        if device_type != "cpu":
            raise BackendUnavailableError(
                f"backend='numba' runs on CPU tensors, got {device_type}; use 'auto' or 'torch'")
    return backend


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, *, backend="auto"):
    """Selective scan, drop-in for ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    backend = resolve_backend(backend, u.device.type)
    if backend == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "mamba_ssm":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    dtype_in = u.dtype
    wt = torch.float64 if dtype_in == torch.float64 and backend != "triton" else torch.float32
    if backend == "numba":
        y, last = _NumbaScan.apply(u.to(wt), delta.to(wt), A.to(wt), _state_layout(B, wt, backend),
                                   _state_layout(C, wt, backend), None if D is None else D.to(wt),
                                   None if z is None else z.to(wt),
                                   None if delta_bias is None else delta_bias.to(wt), delta_softplus)
        y = y.to(dtype_in)
        return (y, last) if return_last_state else y
    uw = u.to(wt).contiguous()
    dw = _prepare_delta(delta, delta_bias, delta_softplus, wt).contiguous()
    Bw, Cw = (_state_layout(X, wt, backend) for X in (B, C))
    y, last = _ChunkedScan.apply(uw, dw, A.to(wt).contiguous(), Bw, Cw, backend)
    y = _skip_and_gate(y, uw, D, z).to(dtype_in)
    return (y, last) if return_last_state else y


def _state_layout(X, wt, backend):
    """B or C as (b, G, N, L) in working precision. The numba kernels read them as (b, G, L, N):
    a transposed view of such a tensor (what Mamba passes) is used as it is."""
    X = (X if X.dim() == 4 else X.unsqueeze(1)).to(wt)
    if backend == "numba":
        return X.transpose(-1, -2).contiguous().transpose(-1, -2)
    return X.contiguous()


__all__ = ["selective_scan", "selective_scan_ref", "resolve_backend", "BackendUnavailableError",
           "BACKENDS", "mamba_ssm_available", "triton_available"]
