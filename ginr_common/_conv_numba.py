"""Numba kernels behind the CPU causal depthwise convolution + SiLU (``ginr_common.conv``).

Channel-last throughout: out, dx are (batch, L, dim); x and dy are passed as flat arrays with
their batch and step strides (channels contiguous), so a strided view such as Mamba's half of the
input projection is read in place, with unit-stride (vectorised) inner loops. Per batch row, in tiles of TILE steps (the buffers stay in L1):
    pre[t, d] = bias[d] + sum_k w[d, k] x[t - K + 1 + k, d]        out = pre * sigmoid(pre)
Backward recomputes ``pre`` and returns dx, and dw, dbias per batch row (summed by the caller).
"""
import numpy as np
from numba import njit, prange

from ginr_common._scan_numba import _FASTMATH, exp_into

TILE = 16


@njit(fastmath=_FASTMATH, inline="always", cache=True)
def _silu_tile(x, xo, sx, wt, bias, t0, m, pre, xb, eb):
    """pre[i*d + c] = the convolution at step t0+i, channel c (x[xo + t*sx + c]), i < m; eb = exp(-pre)."""
    K, nd = wt.shape
    for i in range(m):
        t = t0 + i
        for d in range(nd):
            pre[i * nd + d] = bias[d]
        for k in range(max(0, K - 1 - t), K):
            tt = t - K + 1 + k
            for d in range(nd):
                pre[i * nd + d] += wt[k, d] * x[xo + tt * sx + d]
    for j in range(m * nd):
        xb[j] = -pre[j]
    exp_into(xb, eb, m * nd)


@njit(fastmath=_FASTMATH, cache=True)
def _taps(w):
    """w (dim, K) -> (K, dim), so that the inner loops run over contiguous channels."""
    wt = np.empty((w.shape[1], w.shape[0]), w.dtype)
    for k in range(w.shape[1]):
        for d in range(w.shape[0]):
            wt[k, d] = w[d, k]
    return wt


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def forward(x, sxb, sx, w, bias, out):
    nb, L, nd = out.shape
    wt = _taps(w)
    one = np.ones(1, w.dtype)[0]
    for b in prange(nb):
        pre = np.empty(TILE * nd, x.dtype)
        xb = np.empty(TILE * nd, x.dtype)
        eb = np.empty(TILE * nd, x.dtype)
        for t0 in range(0, L, TILE):
            m = min(TILE, L - t0)
            _silu_tile(x, b * sxb, sx, wt, bias, t0, m, pre, xb, eb)
            for i in range(m):
                for d in range(nd):
                    out[b, t0 + i, d] = pre[i * nd + d] / (one + eb[i * nd + d])


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def backward(x, sxb, sx, w, bias, dy, syb, sy, dx, dw_b, dbias_b):
    """dx (batch, L, dim); dw_b (batch, dim, K) and dbias_b (batch, dim): one row per batch element."""
    nb, L, nd = dx.shape
    K = w.shape[1]
    wt = _taps(w)
    one = np.ones(1, w.dtype)[0]
    for b in prange(nb):
        pre = np.empty(TILE * nd, x.dtype)
        xb = np.empty(TILE * nd, x.dtype)
        eb = np.empty(TILE * nd, x.dtype)
        gp = np.empty(L * nd, x.dtype)  # dL/dpre = dy * silu'(pre)
        dwt = np.zeros((K, nd), x.dtype)
        acc = np.zeros(nd, x.dtype)
        for t0 in range(0, L, TILE):
            m = min(TILE, L - t0)
            _silu_tile(x, b * sxb, sx, wt, bias, t0, m, pre, xb, eb)
            for i in range(m):
                for d in range(nd):
                    j = i * nd + d
                    q = one / (one + eb[j])
                    g = dy[b * syb + (t0 + i) * sy + d] * q * (one + pre[j] * (one - q))
                    gp[(t0 + i) * nd + d] = g
                    acc[d] += g
        for d in range(nd):
            dbias_b[b, d] = acc[d]
        for t in range(L):
            for d in range(nd):
                acc[d] = 0
            for k in range(max(0, t + K - L), K):
                tt = t + K - 1 - k
                for d in range(nd):
                    g = gp[tt * nd + d]
                    acc[d] += wt[k, d] * g
                    dwt[k, d] += g * x[b * sxb + t * sx + d]
            for d in range(nd):
                dx[b, t, d] = acc[d]
        for k in range(K):
            for d in range(nd):
                dw_b[b, d, k] = dwt[k, d]
