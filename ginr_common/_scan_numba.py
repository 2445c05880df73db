"""Numba kernels behind the fast CPU selective scan (``backend="numba"``).

Recurrence, per batch b and channel d (state size N), and the output stage:
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = <C_t, h_t>
    out_t = (y_t + D u_t) * silu(z_t)

The step is delta_t = softplus(delta_raw_t + bias) (or delta_raw_t + bias), computed as each chunk
is read, in the backward too (no softplus'd copy of delta is made or kept).
Forward runs the recurrence once, writes ``out`` token-major and keeps only the state at the
start of each chunk of ``T`` steps (``hs``, size L/T of a full state history). Backward walks the
chunks in reverse, recomputes the chunk's states from its checkpoint into a small local buffer
and runs the reverse (adjoint) scan:
    g_t = C_t * dy_t + exp(delta_{t+1} A) * g_{t+1}   (dL/dh_t)
from which du, ddelta, dA, dB, dC, dD and dz follow in closed form. Peak memory is O(B D L N / T).
A work item takes a block of W channels (up to 128: the caller picks it) and keeps them
innermost in every buffer ((step, state, channel) order), so each inner loop is a contiguous run
of W independent recurrences that LLVM vectorises; the inputs' chunk is first gathered into that
order (``_load``), so strided views are read in place.

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


def _softplus32(x):
    """log(1 + exp(x)) for float32 x in straight-line code: max(x, 0) + log1p(q), q = exp(-|x|),
    with log1p(q) = 2 atanh(f), f = q / (2 + q) <= 1/3, by its series to f^11 (error < 2e-7
    relative; exact ratio for small q, so softplus of very negative x keeps its relative precision)."""
    q = fexp(-abs(x))
    f = q / (np.float32(2.0) + q)
    f2 = f * f
    a = np.float32(1.0 / 11.0)
    a = a * f2 + np.float32(1.0 / 9.0)
    a = a * f2 + np.float32(1.0 / 7.0)
    a = a * f2 + np.float32(1.0 / 5.0)
    a = a * f2 + np.float32(1.0 / 3.0)
    a = a * f2 + np.float32(1.0)
    return max(x, np.float32(0.0)) + np.float32(2.0) * f * a


def _softplus64(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def fsoftplus(x):
    """log(1 + exp(x)); resolved at compile time by dtype (below)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(fsoftplus, inline="always")
def _fsoftplus_overload(x):
    return _softplus32 if x == types.float32 else _softplus64


@njit(fastmath=_FASTMATH, inline="always", cache=True)
def exp_into(x, out, m):
    for i in range(m):
        out[i] = fexp(x[i])




@njit(fastmath=_FASTMATH, inline="always", cache=True)
def _load(X, b, d0, t0, m, buf, W):
    """buf[i*W + c] = X[b, d0+c, t0+i]: a chunk of a block of channels, step-major."""
    for i in range(m):
        for c in range(W):
            buf[i * W + c] = X[b, d0 + c, t0 + i]


@njit(fastmath=_FASTMATH, inline="always", cache=True)
def _sigmoid(zb, m, xb, eb, sg, W):
    """sg[j] = sigmoid(zb[j]) for the m*W values of a chunk (xb, eb: scratch)."""
    one = np.ones(1, eb.dtype)[0]
    for j in range(m * W):
        xb[j] = -zb[j]
    exp_into(xb, eb, m * W)
    for j in range(m * W):
        sg[j] = one / (one + eb[j])


@njit(fastmath=_FASTMATH, inline="always", cache=True)
def _load_delta(delta, bias, softplus, b, d0, t0, m, pre, dl, W):
    """dl = softplus(delta + bias) (or delta + bias) for a chunk of a block of channels; ``pre``
    keeps delta + bias (the softplus's input, for its derivative in the backward)."""
    _load(delta, b, d0, t0, m, pre, W)
    for i in range(m):
        for c in range(W):
            pre[i * W + c] += bias[d0 + c]
    if softplus:
        for j in range(m * W):
            dl[j] = fsoftplus(pre[j])
    else:
        for j in range(m * W):
            dl[j] = pre[j]


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def forward(u, delta, bias, softplus, A, Bt, Ct, D, z, has_z, T, W, out, hs):
    """out[b, t, d] = (y + D u) * silu(z) (or y + D u without z), with the step
    softplus(delta + bias) (or delta + bias); hs: states at chunk starts."""
    nb, nd, L = u.shape
    N = A.shape[1]
    dpg = nd // Bt.shape[1]
    K = (L + T - 1) // T
    nblk = nd // W
    for w in prange(nb * nblk):
        b = w // nblk
        d0 = (w % nblk) * W
        g = d0 // dpg
        h = np.zeros(N * W, u.dtype)
        zero = h[0]
        At = np.empty(N * W, u.dtype)
        Dl = np.empty(W, u.dtype)
        for c in range(W):
            Dl[c] = D[d0 + c]
            for n in range(N):
                At[n * W + c] = A[d0 + c, n]
        xb = np.empty(T * W, u.dtype)
        eb = np.empty(T * W, u.dtype)
        dl = np.empty(T * W, u.dtype)
        ub = np.empty(T * W, u.dtype)
        zb = np.empty(T * W, u.dtype)
        yb = np.empty(T * W, u.dtype)
        sg = np.empty(T * W, u.dtype)
        dbu = np.empty(W, u.dtype)
        acc = np.empty(W, u.dtype)
        for k in range(K):
            t0 = k * T
            m = min(L - t0, T)
            for c in range(W):
                for n in range(N):
                    hs[b, d0 + c, k, n] = h[n * W + c]
            _load_delta(delta, bias, softplus, b, d0, t0, m, xb, dl, W)
            _load(u, b, d0, t0, m, ub, W)
            for i in range(m):
                t = t0 + i
                for c in range(W):
                    dbu[c] = dl[i * W + c] * ub[i * W + c]
                    acc[c] = zero
                for n in range(N):
                    bn = Bt[b, g, t, n]
                    cn = Ct[b, g, t, n]
                    for c in range(W):
                        hv = fexp(dl[i * W + c] * At[n * W + c]) * h[n * W + c] + dbu[c] * bn
                        h[n * W + c] = hv
                        acc[c] += cn * hv
                for c in range(W):
                    yb[i * W + c] = acc[c] + Dl[c] * ub[i * W + c]
            if has_z:
                _load(z, b, d0, t0, m, zb, W)
                _sigmoid(zb, m, xb, eb, sg, W)
                for j in range(m * W):
                    yb[j] *= zb[j] * sg[j]
            for i in range(m):
                for c in range(W):
                    out[b, t0 + i, d0 + c] = yb[i * W + c]
        for c in range(W):
            for n in range(N):
                hs[b, d0 + c, K, n] = h[n * W + c]


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def backward(u, delta, bias, softplus, A, Bt, Ct, D, z, has_z, hs, dout, dlast, T, W, S,
             du, ddelta, dz, dA_bd, dD_bd, dB_s, dC_s):
    """Gradients of forward's out (cotangent ``dout``, (b, L, d)) and last state (``dlast``);
    du, ddelta (with respect to delta before the bias and softplus) and dz are written token-major
    (b, L, d). Per chunk, in reverse: the step and the gate's sigmoid, the states and decays
    recomputed from the checkpoint with the gate's gradients, the adjoint scan, then du, ddelta, dA,
    and dB, dC (summed over the work item's channels into its slice ``s``) in closed form."""
    nb, nd, L = u.shape
    N = A.shape[1]
    G = Bt.shape[1]
    dpg = nd // G
    K = (L + T - 1) // T
    nblk_g = dpg // W
    for w in prange(nb * G * S):
        b = w // (G * S)
        g = (w // S) % G
        s = w % S
        blk_lo = g * nblk_g + (s * nblk_g) // S
        blk_hi = g * nblk_g + ((s + 1) * nblk_g) // S
        xb = np.empty(T * W, u.dtype)
        pb = np.empty(T * W, u.dtype)
        eb = np.empty(T * N * W, u.dtype)
        hb = np.empty((T + 1) * N * W, u.dtype)
        gb = np.empty(T * N * W, u.dtype)
        gst = np.empty(N * W, u.dtype)
        dAl = np.empty(N * W, u.dtype)
        At = np.empty(N * W, u.dtype)
        Dl = np.empty(W, u.dtype)
        dDl = np.empty(W, u.dtype)
        dl = np.empty(T * W, u.dtype)
        ub = np.empty(T * W, u.dtype)
        zb = np.empty(T * W, u.dtype)
        dyb = np.empty(T * W, u.dtype)
        sg = np.empty(T * W, u.dtype)
        dbu = np.empty(W, u.dtype)
        acc = np.empty(W, u.dtype)
        sB = np.empty(W, u.dtype)
        sA = np.empty(W, u.dtype)
        zero = np.zeros(1, u.dtype)[0]
        one = np.ones(1, u.dtype)[0]
        for blk in range(blk_lo, blk_hi):
            d0 = blk * W
            for c in range(W):
                Dl[c] = D[d0 + c]
                dDl[c] = zero
                for n in range(N):
                    At[n * W + c] = A[d0 + c, n]
                    gst[n * W + c] = dlast[b, d0 + c, n]
                    dAl[n * W + c] = zero
            for k in range(K - 1, -1, -1):
                t0 = k * T
                m = min(L - t0, T)
                _load_delta(delta, bias, softplus, b, d0, t0, m, pb, dl, W)
                _load(u, b, d0, t0, m, ub, W)
                for i in range(m):
                    for c in range(W):
                        dyb[i * W + c] = dout[b, t0 + i, d0 + c]
                if has_z:  # sigmoid(z) first: it reuses the decay buffers
                    _load(z, b, d0, t0, m, zb, W)
                    _sigmoid(zb, m, xb, eb, sg, W)
                for c in range(W):
                    for n in range(N):
                        hb[n * W + c] = hs[b, d0 + c, k, n]
                # states, the scan output y and the gate's gradients
                for i in range(m):
                    t = t0 + i
                    for c in range(W):
                        dbu[c] = dl[i * W + c] * ub[i * W + c]
                        acc[c] = zero
                    for n in range(N):
                        bn = Bt[b, g, t, n]
                        cn = Ct[b, g, t, n]
                        e0 = (i * N + n) * W
                        for c in range(W):
                            e = fexp(dl[i * W + c] * At[n * W + c])
                            eb[e0 + c] = e
                            hv = e * hb[e0 + c] + dbu[c] * bn
                            hb[e0 + N * W + c] = hv
                            acc[c] += cn * hv
                    for c in range(W):
                        uu = ub[i * W + c]
                        dyo = dyb[i * W + c]
                        if has_z:
                            q = sg[i * W + c]
                            zz = zb[i * W + c]
                            dz[b, t, d0 + c] = dyo * (acc[c] + Dl[c] * uu) * q * (one + zz * (one - q))
                            dyo = dyo * zz * q
                        dDl[c] += dyo * uu
                        dyb[i * W + c] = dyo
                # the adjoint scan g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}
                for i in range(m - 1, -1, -1):
                    t = t0 + i
                    for n in range(N):
                        cn = Ct[b, g, t, n]
                        e0 = (i * N + n) * W
                        for c in range(W):
                            gn = gst[n * W + c] + cn * dyb[i * W + c]
                            gb[e0 + c] = gn
                            gst[n * W + c] = gn * eb[e0 + c]
                # the gradients it gives
                for i in range(m):
                    t = t0 + i
                    for c in range(W):
                        dbu[c] = dl[i * W + c] * ub[i * W + c]
                        sB[c] = zero
                        sA[c] = zero
                    for n in range(N):
                        bn = Bt[b, g, t, n]
                        e0 = (i * N + n) * W
                        for c in range(W):
                            gn = gb[e0 + c]
                            sB[c] += gn * bn
                            x = gn * hb[e0 + c] * eb[e0 + c]
                            sA[c] += x * At[n * W + c]
                            dAl[n * W + c] += x * dl[i * W + c]
                        # the sums over channels in loops that only read: no run-time aliasing check
                        # picks between a vector and a scalar order, so every call rounds alike
                        aC = zero
                        for c in range(W):
                            aC += dyb[i * W + c] * hb[e0 + N * W + c]
                        aB = zero
                        for c in range(W):
                            aB += gb[e0 + c] * dbu[c]
                        dC_s[s, b, g, t, n] += aC
                        dB_s[s, b, g, t, n] += aB
                    if softplus:  # d softplus(x)/dx = sigmoid(x)
                        for c in range(W):
                            sg[i * W + c] = one / (one + fexp(-pb[i * W + c]))
                    for c in range(W):
                        du[b, t, d0 + c] = dl[i * W + c] * sB[c] + Dl[c] * dyb[i * W + c]
                        dd = ub[i * W + c] * sB[c] + sA[c]
                        ddelta[b, t, d0 + c] = dd * sg[i * W + c] if softplus else dd
            for c in range(W):
                dD_bd[b, d0 + c] = dDl[c]
                for n in range(N):
                    dA_bd[b, d0 + c, n] = dAl[n * W + c]


def kernels(dtype):
    """(forward, backward); numba compiles (and caches) one version per dtype."""
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"numba scan kernels take float32 or float64 arrays, got {dtype}")
    return forward, backward
