"""Numba kernels behind the fast CPU selective scan (``backend="numba"``).

Recurrence, per batch b and channel d (state size N), and the output stage:
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = <C_t, h_t>
    out_t = (y_t + D u_t) * silu(z_t)

Forward runs the recurrence once, writes ``out`` token-major and keeps only the state at the
start of each chunk of ``T`` steps (``hs``, size L/T of a full state history). Backward walks the
chunks in reverse, recomputes the chunk's states from its checkpoint into a small local buffer
and runs the reverse (adjoint) scan:
    g_t = C_t * dy_t + exp(delta_{t+1} A) * g_{t+1}   (dL/dh_t)
from which du, ddelta, dA, dB, dC, dD and dz follow in closed form. Peak memory is O(B D L N / T).
A work item takes a block of DB channels, so that DB independent recurrences overlap in the
pipeline. The inputs may be strided views; they are read in place.

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
def _chunk_decays(delta, A, b, d0, DB, t0, m, xb, eb, ib):
    """eb[(i*DB + c)*N + n] = exp(delta[b, d0+c, t0+i] * A[d0+c, n]): a block of DB channels over
    the m steps of a chunk, laid out so that one step of all the block's channels is contiguous."""
    N = A.shape[1]
    for i in range(m):
        for c in range(DB):
            dt = delta[b, d0 + c, t0 + i]
            for n in range(N):
                xb[(i * DB + c) * N + n] = dt * A[d0 + c, n]
    exp_into(xb, eb, ib, m * DB * N)


@njit(fastmath=True, inline="always", cache=True)
def _sigmoid_z(z, b, d0, DB, t0, m, xb, eb, ib, sg):
    """sg[i*DB + c] = sigmoid(z[b, d0+c, t0+i]) for the gate, with the vectorised exp."""
    for i in range(m):
        for c in range(DB):
            xb[i * DB + c] = -z[b, d0 + c, t0 + i]
    exp_into(xb, eb, ib, m * DB)
    for i in range(m * DB):
        sg[i] = 1 / (1 + eb[i])


@njit(parallel=True, fastmath=True, cache=True)
def forward(u, delta, A, Bt, Ct, D, z, has_z, T, DB, out, hs):
    """out[b, t, d] = (y + D u) * silu(z) (or y + D u without z); hs: states at chunk starts.
    Work items are (batch, block of DB channels): the DB recurrences are independent, so their
    steps overlap in the CPU's pipeline instead of waiting on one chain."""
    nb, nd, L = u.shape
    N = A.shape[1]
    dpg = nd // Bt.shape[1]
    K = (L + T - 1) // T
    nblk = nd // DB
    for w in prange(nb * nblk):
        b = w // nblk
        d0 = (w % nblk) * DB
        g = d0 // dpg
        h = np.zeros(DB * N, u.dtype)
        zero = h[0]
        xb = np.empty(T * DB * N, u.dtype)
        eb = np.empty(T * DB * N, u.dtype)
        ib = np.empty(T * DB * N, np.int32)
        yb = np.empty(T * DB, u.dtype)
        sg = np.empty(T * DB, u.dtype)
        for k in range(K):
            t0 = k * T
            m = min(L - t0, T)
            for c in range(DB):
                for n in range(N):
                    hs[b, d0 + c, k, n] = h[c * N + n]
            _chunk_decays(delta, A, b, d0, DB, t0, m, xb, eb, ib)
            for i in range(m):
                t = t0 + i
                for c in range(DB):
                    d = d0 + c
                    uu = u[b, d, t]
                    du = delta[b, d, t] * uu
                    acc = zero
                    base = (i * DB + c) * N
                    for n in range(N):
                        hv = eb[base + n] * h[c * N + n] + du * Bt[b, g, t, n]
                        h[c * N + n] = hv
                        acc += Ct[b, g, t, n] * hv
                    yb[i * DB + c] = acc + D[d] * uu
            if has_z:
                _sigmoid_z(z, b, d0, DB, t0, m, xb, eb, ib, sg)
                for i in range(m):
                    for c in range(DB):
                        yb[i * DB + c] *= z[b, d0 + c, t0 + i] * sg[i * DB + c]
            for i in range(m):
                for c in range(DB):
                    out[b, t0 + i, d0 + c] = yb[i * DB + c]
        for c in range(DB):
            for n in range(N):
                hs[b, d0 + c, K, n] = h[c * N + n]


@njit(parallel=True, fastmath=True, cache=True)
def backward(u, delta, A, Bt, Ct, D, z, has_z, softplus, hs, dout, dlast, T, DB, S,
             du, ddelta, dz, dA_bd, dD_bd, dB_s, dC_s):
    """Gradients of forward's out (cotangent ``dout``, (b, L, d)) and last state (``dlast``).
    Per chunk, in reverse: recompute the decays and states from the checkpoint, the gate's
    gradients, the adjoint scan g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}, then du, ddelta
    (through the softplus when ``softplus``: its derivative is 1 - exp(-delta)), dz, dD, dA, and
    dB, dC summed over the block's channels into the work item's slice ``s``."""
    nb, nd, L = u.shape
    N = A.shape[1]
    G = Bt.shape[1]
    dpg = nd // G
    K = (L + T - 1) // T
    nblk_g = dpg // DB
    for w in prange(nb * G * S):
        b = w // (G * S)
        g = (w // S) % G
        s = w % S
        blk_lo = g * nblk_g + (s * nblk_g) // S
        blk_hi = g * nblk_g + ((s + 1) * nblk_g) // S
        xb = np.empty(T * DB * N, u.dtype)
        eb = np.empty(T * DB * N, u.dtype)
        ib = np.empty(T * DB * N, np.int32)
        hb = np.empty((T + 1) * DB * N, u.dtype)
        gb = np.empty(T * DB * N, u.dtype)
        gst = np.empty(DB * N, u.dtype)
        dAl = np.empty(DB * N, u.dtype)
        dDl = np.empty(DB, u.dtype)
        yb = np.empty(T * DB, u.dtype)
        sg = np.empty(T * DB, u.dtype)
        accB = np.empty(N, u.dtype)
        accC = np.empty(N, u.dtype)
        zero = u[0, 0, 0] * 0
        for blk in range(blk_lo, blk_hi):
            d0 = blk * DB
            for c in range(DB):
                dDl[c] = 0.0
                for n in range(N):
                    gst[c * N + n] = dlast[b, d0 + c, n]
                    dAl[c * N + n] = 0.0
            for k in range(K - 1, -1, -1):
                t0 = k * T
                m = min(L - t0, T)
                if has_z:  # sigmoid(z) first: it reuses the decay buffers
                    _sigmoid_z(z, b, d0, DB, t0, m, xb, eb, ib, sg)
                _chunk_decays(delta, A, b, d0, DB, t0, m, xb, eb, ib)
                for c in range(DB):
                    for n in range(N):
                        hb[c * N + n] = hs[b, d0 + c, k, n]
                # states, the scan output y and the gate's gradients
                for i in range(m):
                    t = t0 + i
                    for c in range(DB):
                        d = d0 + c
                        uu = u[b, d, t]
                        dbu = delta[b, d, t] * uu
                        acc = zero
                        base = (i * DB + c) * N
                        for n in range(N):
                            hv = eb[base + n] * hb[base + n] + dbu * Bt[b, g, t, n]
                            hb[base + DB * N + n] = hv
                            acc += Ct[b, g, t, n] * hv
                        dyo = dout[b, t, d]
                        if has_z:
                            q = sg[i * DB + c]
                            zz = z[b, d, t]
                            dz[b, d, t] = dyo * (acc + D[d] * uu) * q * (1 + zz * (1 - q))
                            dyo = dyo * zz * q
                        dDl[c] += dyo * uu
                        yb[i * DB + c] = dyo
                # adjoint scan over the chunk
                for i in range(m - 1, -1, -1):
                    t = t0 + i
                    for c in range(DB):
                        dyt = yb[i * DB + c]
                        base = (i * DB + c) * N
                        for n in range(N):
                            gn = gst[c * N + n] + Ct[b, g, t, n] * dyt
                            gb[base + n] = gn
                            gst[c * N + n] = gn * eb[base + n]
                # closed-form gradients
                for i in range(m):
                    t = t0 + i
                    for n in range(N):
                        accB[n] = zero
                        accC[n] = zero
                    for c in range(DB):
                        d = d0 + c
                        dt = delta[b, d, t]
                        uu = u[b, d, t]
                        dyt = yb[i * DB + c]
                        dtu = dt * uu
                        sB = zero
                        sA = zero
                        base = (i * DB + c) * N
                        for n in range(N):
                            gn = gb[base + n]
                            accC[n] += dyt * hb[base + DB * N + n]
                            accB[n] += gn * dtu
                            sB += gn * Bt[b, g, t, n]
                            x = gn * hb[base + n] * eb[base + n]
                            sA += x * A[d, n]
                            dAl[c * N + n] += x * dt
                        du[b, d, t] = dt * sB + D[d] * dyt
                        ddelta[b, d, t] = uu * sB + sA
                    for n in range(N):
                        dC_s[s, b, g, t, n] += accC[n]
                        dB_s[s, b, g, t, n] += accB[n]
                if softplus:  # d softplus(x)/dx = sigmoid(x) = 1 - exp(-softplus(x))
                    for i in range(m):
                        for c in range(DB):
                            xb[i * DB + c] = -delta[b, d0 + c, t0 + i]
                    exp_into(xb, eb, ib, m * DB)
                    for i in range(m):
                        for c in range(DB):
                            ddelta[b, d0 + c, t0 + i] *= 1 - eb[i * DB + c]
            for c in range(DB):
                dD_bd[b, d0 + c] = dDl[c]
                for n in range(N):
                    dA_bd[b, d0 + c, n] = dAl[c * N + n]


def kernels(dtype):
    """(forward, backward); numba compiles (and caches) one version per dtype."""
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"numba scan kernels take float32 or float64 arrays, got {dtype}")
    return forward, backward
