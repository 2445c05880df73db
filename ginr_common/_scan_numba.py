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

The decays exp(delta A) are computed inside the recurrence loops (``fexp``): for float32 a
straight-line exp (the exponent's bits through an LLVM bitcast, times a degree-5 polynomial for the
fraction, exact at 0 so decays near 1 carry no bias, ~2e-7 relative error) that LLVM vectorises with
the loop; float64 uses ``math.exp`` so the float64 build of the kernel can be checked tightly.
Constants are typed from the inputs (``zero``, ``one``) so float32 arithmetic never widens.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# fast-math without 'arcp'/'afn': a vectorised division would become an approximate reciprocal and a
# scalar one would not, so results would depend on which path of a loop runs
_FASTMATH = {"nnan", "ninf", "nsz", "reassoc", "contract"}
_LOG2E = 1.4426950408889634
# 2**f = 1 + f q(f) for |f| <= 1/2, q of degree 4 fitted at Chebyshev nodes: relative error 1.8e-7
# in float32, exact at f = 0 (no bias on decays near 1, which compound over long memories)
_Q0, _Q1, _Q2 = 0.6931468559416915, 0.2402223800274108, 0.055508929524514944
_Q3, _Q4 = 0.009671697938401197, 0.0013218672481394031


@intrinsic
def _as_float32(typingctx, i):
    """The bits of an int32 read as a float32 (LLVM bitcast)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def _exp32(x):
    """exp(x) for float32 x in straight-line code (vectorises inside loops): 2**k * 2**f."""
    v = x * np.float32(_LOG2E)
    v = min(max(v, np.float32(-126.0)), np.float32(127.0))
    k = np.floor(v + np.float32(0.5))
    f = v - k
    q = np.float32(_Q4)
    q = q * f + np.float32(_Q3)
    q = q * f + np.float32(_Q2)
    q = q * f + np.float32(_Q1)
    q = q * f + np.float32(_Q0)
    p = q * f + np.float32(1.0)
    return p * _as_float32((np.int32(k) + np.int32(127)) << np.int32(23))


def _exp64(x):
    return math.exp(x)


def fexp(x):
    """exp(x); resolved at compile time by dtype (below)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(fexp, inline="always")
def _fexp_overload(x):
    return _exp32 if x == types.float32 else _exp64


@njit(fastmath=_FASTMATH, inline="always", cache=True)
def exp_into(x, out, m):
    for i in range(m):
        out[i] = fexp(x[i])


@njit(fastmath=_FASTMATH, inline="always", cache=True)
def _sigmoid_z(z, b, d0, DB, t0, m, xb, eb, sg):
    """sg[i*DB + c] = sigmoid(z[b, d0+c, t0+i]) for the gate, with the vectorised exp."""
    for i in range(m):
        for c in range(DB):
            xb[i * DB + c] = -z[b, d0 + c, t0 + i]
    exp_into(xb, eb, m * DB)
    one = np.ones(1, eb.dtype)[0]
    for i in range(m * DB):
        sg[i] = one / (one + eb[i])


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
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
        xb = np.empty(T * DB, u.dtype)
        eb = np.empty(T * DB, u.dtype)
        yb = np.empty(T * DB, u.dtype)
        sg = np.empty(T * DB, u.dtype)
        for k in range(K):
            t0 = k * T
            m = min(L - t0, T)
            for c in range(DB):
                for n in range(N):
                    hs[b, d0 + c, k, n] = h[c * N + n]
            for i in range(m):
                t = t0 + i
                for c in range(DB):
                    d = d0 + c
                    uu = u[b, d, t]
                    dt = delta[b, d, t]
                    du = dt * uu
                    acc = zero
                    for n in range(N):
                        hv = fexp(dt * A[d, n]) * h[c * N + n] + du * Bt[b, g, t, n]
                        h[c * N + n] = hv
                        acc += Ct[b, g, t, n] * hv
                    yb[i * DB + c] = acc + D[d] * uu
            if has_z:
                _sigmoid_z(z, b, d0, DB, t0, m, xb, eb, sg)
                for i in range(m):
                    for c in range(DB):
                        yb[i * DB + c] *= z[b, d0 + c, t0 + i] * sg[i * DB + c]
            for i in range(m):
                for c in range(DB):
                    out[b, t0 + i, d0 + c] = yb[i * DB + c]
        for c in range(DB):
            for n in range(N):
                hs[b, d0 + c, K, n] = h[c * N + n]


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
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
        xb = np.empty(T * DB, u.dtype)
        eb = np.empty(T * DB * N, u.dtype)
        hb = np.empty((T + 1) * DB * N, u.dtype)
        gb = np.empty(T * DB * N, u.dtype)
        gst = np.empty(DB * N, u.dtype)
        dAl = np.empty(DB * N, u.dtype)
        dDl = np.empty(DB, u.dtype)
        yb = np.empty(T * DB, u.dtype)
        sg = np.empty(T * DB, u.dtype)
        accB = np.empty(N, u.dtype)
        accC = np.empty(N, u.dtype)
        zero = np.zeros(1, u.dtype)[0]
        one = np.ones(1, u.dtype)[0]
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
                    _sigmoid_z(z, b, d0, DB, t0, m, xb, eb, sg)
                for c in range(DB):
                    for n in range(N):
                        hb[c * N + n] = hs[b, d0 + c, k, n]
                # states, the scan output y and the gate's gradients
                for i in range(m):
                    t = t0 + i
                    for c in range(DB):
                        d = d0 + c
                        uu = u[b, d, t]
                        dt = delta[b, d, t]
                        dbu = dt * uu
                        acc = zero
                        base = (i * DB + c) * N
                        for n in range(N):
                            e = fexp(dt * A[d, n])
                            eb[base + n] = e
                            hv = e * hb[base + n] + dbu * Bt[b, g, t, n]
                            hb[base + DB * N + n] = hv
                            acc += Ct[b, g, t, n] * hv
                        dyo = dout[b, t, d]
                        if has_z:
                            q = sg[i * DB + c]
                            zz = z[b, d, t]
                            dz[b, d, t] = dyo * (acc + D[d] * uu) * q * (one + zz * (one - q))
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
                    exp_into(xb, eb, m * DB)
                    for i in range(m):
                        for c in range(DB):
                            ddelta[b, d0 + c, t0 + i] *= one - eb[i * DB + c]
            for c in range(DB):
                dD_bd[b, d0 + c] = dDl[c]
                for n in range(N):
                    dA_bd[b, d0 + c, n] = dAl[c * N + n]


def kernels(dtype):
    """(forward, backward); numba compiles (and caches) one version per dtype."""
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"numba scan kernels take float32 or float64 arrays, got {dtype}")
    return forward, backward
