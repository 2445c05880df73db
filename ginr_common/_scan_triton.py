"""Triton kernels of the selective scan (the ``"triton"`` backend): a GPU scan that needs no CUDA
compiler at install time; Triton compiles it at run time wherever torch's CUDA build runs. Tested
on CPU through Triton's interpreter (TRITON_INTERPRET=1).

Same algorithm as the numba and torch paths: the forward keeps state checkpoints every T steps;
the backward walks the chunks from the last, recomputes each chunk's states from its checkpoint
into a scratch buffer, and runs the adjoint (reverse) scan. One program handles one batch row and
BLOCK_D channels of one group. dB and dC are written per channel block and summed afterwards
(no atomics: gradients are deterministic). State accumulation is float32.
"""
import math

import torch
import triton
import triton.language as tl


@triton.jit
def _fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, y_ptr, hs_ptr, D, L, G, K,
                N: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)          # channels of this block
    n = tl.arange(0, NP)
    nm = n < N
    g = (tl.program_id(1) * BLOCK_D) // (D // G)                      # the block's group
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=nm[None, :], other=0.0).to(tl.float32)
    h = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    row = (b * D + d) * L
    bc = (b * G + g) * N * L + n * L
    for k in range(K):
        tl.store(hs_ptr + ((b * D + d[:, None]) * (K + 1) + k) * N + n[None, :], h, mask=nm[None, :])
        for i in range(T):
            t = k * T + i
            if t < L:
                u = tl.load(u_ptr + row + t).to(tl.float32)
                dt = tl.load(dt_ptr + row + t).to(tl.float32)
                Bt = tl.load(B_ptr + bc + t, mask=nm, other=0.0).to(tl.float32)
                Ct = tl.load(C_ptr + bc + t, mask=nm, other=0.0).to(tl.float32)
                h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
                tl.store(y_ptr + row + t, tl.sum(h * Ct[None, :], axis=1))
    tl.store(hs_ptr + ((b * D + d[:, None]) * (K + 1) + K) * N + n[None, :], h, mask=nm[None, :])


@triton.jit
def _bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, hs_ptr, dy_ptr, dlast_ptr, scratch_ptr,
                du_ptr, ddt_ptr, dA_ptr, dBp_ptr, dCp_ptr, D, L, G, K, NB,
                N: tl.constexpr, NP: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
    b = tl.program_id(0)
    blk = tl.program_id(1)
    d = blk * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, NP)
    nm = n < N
    g = (blk * BLOCK_D) // (D // G)
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=nm[None, :], other=0.0).to(tl.float32)
    row = (b * D + d) * L
    bc = (b * G + g) * N * L + n * L
    part = (b * NB + blk) * N * L + n * L                             # this block's dB/dC partials
    sc = ((b * D + d[:, None]) * (T + 1)) * N + n[None, :]            # scratch slot 0 of each channel
    gs = tl.load(dlast_ptr + (b * D + d[:, None]) * N + n[None, :], mask=nm[None, :], other=0.0)
    dA = tl.zeros((BLOCK_D, NP), dtype=tl.float32)
    for kk in range(K):
        k = K - 1 - kk
        # recompute this chunk's states: scratch slot i holds the state before step k*T + i
        h = tl.load(hs_ptr + ((b * D + d[:, None]) * (K + 1) + k) * N + n[None, :], mask=nm[None, :], other=0.0)
        tl.store(scratch_ptr + sc, h, mask=nm[None, :])
        for i in range(T):
            t = k * T + i
            if t < L:
                u = tl.load(u_ptr + row + t)
                dt = tl.load(dt_ptr + row + t)
                Bt = tl.load(B_ptr + bc + t, mask=nm, other=0.0)
                h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
                tl.store(scratch_ptr + sc + (i + 1) * N, h, mask=nm[None, :])
        # the adjoint scan, backwards through the chunk
        for ii in range(T):
            i = T - 1 - ii
            t = k * T + i
            if t < L:
                u = tl.load(u_ptr + row + t)
                dt = tl.load(dt_ptr + row + t)
                dy = tl.load(dy_ptr + row + t)
                Bt = tl.load(B_ptr + bc + t, mask=nm, other=0.0)
                Ct = tl.load(C_ptr + bc + t, mask=nm, other=0.0)
                h = tl.load(scratch_ptr + sc + (i + 1) * N, mask=nm[None, :], other=0.0)
                hp = tl.load(scratch_ptr + sc + i * N, mask=nm[None, :], other=0.0)
                dAt = tl.exp(dt[:, None] * A)
                gs = gs + Ct[None, :] * dy[:, None]
                tl.store(dCp_ptr + part + t, tl.sum(dy[:, None] * h, axis=0), mask=nm)
                tl.store(dBp_ptr + part + t, tl.sum(gs * (dt * u)[:, None], axis=0), mask=nm)
                sB = tl.sum(gs * Bt[None, :], axis=1)
                x = gs * hp * dAt
                tl.store(du_ptr + row + t, dt * sB)
                tl.store(ddt_ptr + row + t, u * sB + tl.sum(x * A, axis=1))
                dA += x * dt[:, None]
                gs = gs * dAt
    tl.store(dA_ptr + (b * D + d[:, None]) * N + n[None, :], dA, mask=nm[None, :])


def _block_d(d, G):
    """Largest power of two (at most 32) dividing the channels per group: a block never straddles
    two groups, so its dB/dC partial is one group's."""
    per = d // G
    return math.gcd(per, 32)


def forward(u, delta, A, B, C, T):
    """u, delta (b, d, L); A (d, N); B, C (b, G, N, L), float32 contiguous -> y, checkpoints."""
    b, d, L = u.shape
    G, N = B.shape[1], A.shape[1]
    K = math.ceil(L / T)
    bd = _block_d(d, G)
    y = torch.empty_like(u)
    hs = u.new_empty(b, d, K + 1, N)
    _fwd_kernel[(b, d // bd)](u, delta, A, B, C, y, hs, d, L, G, K, N=N, NP=triton.next_power_of_2(N),
                              BLOCK_D=bd, T=T)
    return y, hs


def backward(u, delta, A, B, C, hs, dy, dlast, T):
    b, d, L = u.shape
    G, N = B.shape[1], A.shape[1]
    K = hs.shape[2] - 1
    bd = _block_d(d, G)
    nb = d // bd
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dA = u.new_empty(b, d, N)
    dBp, dCp = u.new_zeros(b, nb, N, L), u.new_zeros(b, nb, N, L)
    scratch = u.new_empty(b, d, T + 1, N)
    _bwd_kernel[(b, nb)](u, delta, A, B, C, hs, dy, dlast, scratch, du, ddelta, dA, dBp, dCp, d, L, G, K, nb,
                         N=N, NP=triton.next_power_of_2(N), BLOCK_D=bd, T=T)
    per_group = nb // G
    dB = dBp.view(b, G, per_group, N, L).sum(2)
    dC = dCp.view(b, G, per_group, N, L).sum(2)
    return du, ddelta, dA.sum(0), dB, dC
