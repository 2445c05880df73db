"""Numba kernels behind the fast CPU selective scan (``backend="numba"``).

Recurrence, per batch b and channel d (state size N):
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = <C_t, h_t>

Forward runs the recurrence once, writes y and keeps only the state at the start of each chunk
of ``T`` steps (``hs``, size L/T of a full state history). Backward walks the chunks in reverse,
recomputes the chunk's states from its checkpoint into a small local buffer and runs the
reverse (adjoint) scan:
    g_t = C_t * dy_t + exp(delta_{t+1} A) * g_{t+1}   (dL/dh_t)
from which du, ddelta, dA, dB and dC follow in closed form. Peak memory is O(B D L N / T).

float32 uses a vectorisable exp (exponent bits + degree-7 polynomial, ~2e-7 relative error);
float64 uses ``math.exp`` so the float64 build of the kernel can be checked tightly.
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

_LOG2E = 1.4426950408889634
# Taylor coefficients of 2**f = exp(f ln2) for |f| <= 1/2: error < 1e-8
_C1, _C2, _C3, _C4 = 0.6931471805599453, 0.2402265069591007, 0.05550410866482158, 0.009618129107628477
_C5, _C6, _C7 = 0.0013333558146428443, 0.00015403530393381606, 1.525273380405984e-05


def _exp_fast(x, out, ibuf, m):
    """out[:m] = exp(x[:m]) for float32 x, in two SIMD-friendly loops."""
    fb = ibuf.view(np.float32)
    for i in range(m):
        v = x[i] * np.float32(_LOG2E)
        v = min(max(v, np.float32(-126.0)), np.float32(127.0))
        k = math.floor(v + np.float32(0.5))
        f = v - k
        p = np.float32(_C7)
        p = p * f + np.float32(_C6)
        p = p * f + np.float32(_C5)
        p = p * f + np.float32(_C4)
        p = p * f + np.float32(_C3)
        p = p * f + np.float32(_C2)
        p = p * f + np.float32(_C1)
        p = p * f + np.float32(1.0)
        ibuf[i] = (np.int32(k) + np.int32(127)) << np.int32(23)
        out[i] = p
    for i in range(m):
        out[i] = out[i] * fb[i]


def _exp_exact(x, out, ibuf, m):
    for i in range(m):
        out[i] = math.exp(x[i])


def exp_into(x, out, ibuf, m):
    """out[:m] = exp(x[:m]); resolved at compile time by dtype (below)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(exp_into, inline="always")
def _exp_into_overload(x, out, ibuf, m):
    return _exp_fast if x.dtype == types.float32 else _exp_exact


@njit(fastmath=True, inline="always", cache=True)
def _chunk_decays(delta, A, b, d, t0, m, xb, eb, ib):
    """eb[i*N + n] = exp(delta[b, d, t0 + i] * A[d, n]) for the m steps of a chunk."""
    N = A.shape[1]
    for i in range(m):
        dt = delta[b, d, t0 + i]
        for n in range(N):
            xb[i * N + n] = dt * A[d, n]
    exp_into(xb, eb, ib, m * N)


@njit(parallel=True, fastmath=True, cache=True)
def forward(u, delta, A, Bt, Ct, T, y, hs):
    nb, nd, L = u.shape
    N = A.shape[1]
    G = Bt.shape[1]
    dpg = nd // G
    K = (L + T - 1) // T
    for bd in prange(nb * nd):
        b = bd // nd
        d = bd % nd
        g = d // dpg
        h = np.zeros(N, u.dtype)
        zero = h[0]
        xb = np.empty(T * N, u.dtype)
        eb = np.empty(T * N, u.dtype)
        ib = np.empty(T * N, np.int32)
        for k in range(K):
            t0 = k * T
            m = min(L - t0, T)
            for n in range(N):
                hs[b, d, k, n] = h[n]
            _chunk_decays(delta, A, b, d, t0, m, xb, eb, ib)
            for i in range(m):
                t = t0 + i
                du = delta[b, d, t] * u[b, d, t]
                acc = zero
                for n in range(N):
                    h[n] = eb[i * N + n] * h[n] + du * Bt[b, g, t, n]
                    acc += Ct[b, g, t, n] * h[n]
                y[b, d, t] = acc
        for n in range(N):
            hs[b, d, K, n] = h[n]

@njit(parallel=True, fastmath=True, cache=True)
def backward(u, delta, A, Bt, Ct, hs, dy, dlast, T, S, du, ddelta, dA_bd, dB_s, dC_s):
    nb, nd, L = u.shape
    N = A.shape[1]
    G = Bt.shape[1]
    dpg = nd // G
    K = (L + T - 1) // T
    for w in prange(nb * G * S):
        b = w // (G * S)
        g = (w // S) % G
        s = w % S
        d_lo = g * dpg + (s * dpg) // S
        d_hi = g * dpg + ((s + 1) * dpg) // S
        xb = np.empty(T * N, u.dtype)
        eb = np.empty(T * N, u.dtype)
        ib = np.empty(T * N, np.int32)
        hb = np.empty((T + 1) * N, u.dtype)
        gst = np.empty(N, u.dtype)
        dAl = np.empty(N, u.dtype)
        zero = u[0, 0, 0] * 0
        for d in range(d_lo, d_hi):
            for n in range(N):
                gst[n] = dlast[b, d, n]
                dAl[n] = 0.0
            for k in range(K - 1, -1, -1):
                t0 = k * T
                m = min(L - t0, T)
                # recompute this chunk's decays and states from its checkpoint
                _chunk_decays(delta, A, b, d, t0, m, xb, eb, ib)
                for n in range(N):
                    hb[n] = hs[b, d, k, n]
                for i in range(m):
                    t = t0 + i
                    dbu = delta[b, d, t] * u[b, d, t]
                    for n in range(N):
                        hb[(i + 1) * N + n] = eb[i * N + n] * hb[i * N + n] + dbu * Bt[b, g, t, n]
                # reverse scan over the chunk: g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1}
                for i in range(m - 1, -1, -1):
                    t = t0 + i
                    dyt = dy[b, d, t]
                    for n in range(N):
                        gn = gst[n] + Ct[b, g, t, n] * dyt
                        xb[i * N + n] = gn
                        gst[n] = gn * eb[i * N + n]
                # closed-form gradients from g (xb), states (hb) and decays (eb)
                for i in range(m):
                    t = t0 + i
                    dt = delta[b, d, t]
                    uu = u[b, d, t]
                    dyt = dy[b, d, t]
                    dtu = dt * uu
                    sB = zero
                    sA = zero
                    for n in range(N):
                        gn = xb[i * N + n]
                        dC_s[s, b, g, t, n] += dyt * hb[(i + 1) * N + n]
                        dB_s[s, b, g, t, n] += gn * dtu
                        sB += gn * Bt[b, g, t, n]
                        x = gn * hb[i * N + n] * eb[i * N + n]
                        sA += x * A[d, n]
                        dAl[n] += x * dt
                    du[b, d, t] = dt * sB
                    ddelta[b, d, t] = uu * sB + sA
            for n in range(N):
                dA_bd[b, d, n] = dAl[n]



def kernels(dtype):
    """(forward, backward); numba compiles (and caches) one version per dtype."""
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"numba scan kernels take float32 or float64 arrays, got {dtype}")
    return forward, backward
