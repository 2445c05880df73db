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
    """dx (batch, L, dim); dw_b (batch, dim, K) and dbias_b (batch, dim): one row per batch element.
    Tiles in reverse order: a tile's dx needs dL/dpre of its own steps and of the next K - 1, which
    the tile after it made (``carry``), so every buffer stays a tile long."""
    nb, L, nd = dx.shape
    K = w.shape[1]
    wt = _taps(w)
    one = np.ones(1, w.dtype)[0]
    for b in prange(nb):
        pre = np.empty(TILE * nd, x.dtype)
        xb = np.empty(TILE * nd, x.dtype)
        eb = np.empty(TILE * nd, x.dtype)
        gp = np.zeros((TILE + K - 1) * nd, x.dtype)  # dL/dpre = dy * silu'(pre) of steps t0 ... t0 + m + K - 2
        carry = np.zeros((K - 1) * nd, x.dtype)      # of steps t0 + TILE ...: zeros past the end
        dwt = np.zeros((K, nd), x.dtype)
        accb = np.zeros(nd, x.dtype)
        acc = np.empty(nd, x.dtype)
        for t0 in range(((L - 1) // TILE) * TILE, -1, -TILE):
            m = min(TILE, L - t0)
            _silu_tile(x, b * sxb, sx, wt, bias, t0, m, pre, xb, eb)
            for i in range(m):
                o = b * syb + (t0 + i) * sy
                for d in range(nd):
                    j = i * nd + d
                    q = one / (one + eb[j])
                    g = dy[o + d] * q * (one + pre[j] * (one - q))
                    gp[j] = g
                    accb[d] += g
            for j in range((K - 1) * nd):
                gp[m * nd + j] = carry[j]
            for i in range(m):
                t = t0 + i
                for d in range(nd):
                    acc[d] = 0
                for k in range(K):
                    r = (i + K - 1 - k) * nd
                    for d in range(nd):
                        g = gp[r + d]
                        acc[d] += wt[k, d] * g
                        dwt[k, d] += g * x[b * sxb + t * sx + d]
                for d in range(nd):
                    dx[b, t, d] = acc[d]
            for j in range((K - 1) * nd):
                carry[j] = gp[j]
        for d in range(nd):
            dbias_b[b, d] = accb[d]
        for k in range(K):
            for d in range(nd):
                dw_b[b, d, k] = dwt[k, d]
