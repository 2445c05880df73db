"""selective_scan against an independent float64 reference written from the recurrence's
definition (``recurrence`` below shares no code with ginr_common.scan): outputs and every gradient,
fresh random inputs, every option (D, z, delta_bias, softplus, grouped B/C)."""
import pytest
import torch

from ginr_common.scan import (BackendUnavailableError, resolve_backend, selective_scan,
                              selective_scan_ref)

FAST = ["numba", "torch", "reference"]


def make_inputs(b, d, L, N, G, dtype=torch.float64, delta_scale=0.5, positive=False):
    """Random scan inputs; ``positive`` keeps delta and delta_bias > 0 (for runs without softplus)."""
    u = torch.randn(b, d, L, dtype=dtype)
    delta = (torch.rand if positive else torch.randn)(b, d, L, dtype=dtype) * delta_scale
    A = -(torch.rand(d, N, dtype=dtype) * 2 + 0.1)
    shape = (b, N, L) if G == 0 else (b, G, N, L)
    B, C = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    D, z = torch.randn(d, dtype=dtype), torch.randn(b, d, L, dtype=dtype)
    bias = (torch.rand if positive else torch.randn)(d, dtype=dtype) * 0.5
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias)


def recurrence(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
    """The selective scan from its definition, in float64 (autograd gives the gradients):
    dt = softplus(delta + delta_bias) (softplus(x) = log(1 + e^x)); per channel c and state n,
    h_t = exp(dt_t A_cn) h_{t-1} + dt_t B_nt u_t, y_t = sum_n C_nt h_t, then y + D u, times
    z / (1 + e^-z). B and C grouped (batch, G, N, L): channel c reads group c // (dim / G)."""
    u, delta, A, B, C = (x.double() for x in (u, delta, A, B, C))
    b, d, L = u.shape
    dt = delta if delta_bias is None else delta + delta_bias.double()[:, None]
    if delta_softplus:
        dt = torch.log(1 + torch.exp(dt))
    group = torch.arange(d) // (d // (1 if B.dim() == 3 else B.shape[1]))
    Bc = (B[:, None] if B.dim() == 3 else B)[:, group]          # (b, d, N, L)
    Cc = (C[:, None] if C.dim() == 3 else C)[:, group]
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, :, t, None] * A.double()) * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bc[..., t]
        ys.append((h * Cc[..., t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * z.double() / (1 + torch.exp(-z.double()))
    return (y, h) if return_last_state else y


def run(fn, inp, opts, dtype, **kw):
    """Output, last state and gradients of all tensor inputs, for one fixed random cotangent."""
    leaves = {k: v.detach().to(dtype).requires_grad_() for k, v in inp.items()}
    args = {k: leaves[k] for k in ("D", "z", "delta_bias") if opts.get(k)}
    out, last = fn(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], **args,
                   delta_softplus=opts.get("softplus", False), return_last_state=True, **kw)
    g = torch.Generator().manual_seed(1)
    go = torch.randn(out.shape, generator=g, dtype=torch.float64)
    gl = torch.randn(last.shape, generator=g, dtype=torch.float64)
    ((out.double() * go).sum() + (last.double() * gl).sum()).backward()
    grads = {k: v.grad for k, v in leaves.items() if v.grad is not None}
    return out, last, grads


def check(inp, opts, backend, dtype, rtol):
    ref_out, ref_last, ref_g = run(recurrence, inp, opts, torch.float64)
    out, last, g = run(selective_scan, inp, opts, dtype, backend=backend)
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert last.shape == ref_last.shape

    def close(a, r, name):
        a = a.double()
        err = (a - r).abs().max().item() / max(r.abs().max().item(), 1e-12)
        assert err < rtol, f"{name}: relative error {err:.2e} >= {rtol:.0e}"

    close(out, ref_out, "out")
    close(last, ref_last, "last_state")
    assert set(g) == set(ref_g), f"gradients for {set(g)} vs {set(ref_g)}"
    for k in ref_g:
        close(g[k], ref_g[k], f"d{k}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("L", [1, 7, 131])
@pytest.mark.parametrize("G", [0, 1, 2])
def test_matches_reference_all_options(backend, L, G, seed):
    inp = make_inputs(2, 4, L, 5, G)
    opts = dict(D=True, z=True, delta_bias=True, softplus=True)
    check(inp, opts, backend, torch.float64, 1e-10)
    check(inp, opts, backend, torch.float32, 2e-4)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("opt", ["D", "z", "delta_bias", "softplus", "none"])
def test_each_option_alone(backend, opt, seed):
    opts = {} if opt == "none" else {opt: True}
    inp = make_inputs(2, 6, 70, 4, 0, positive=opt != "softplus")
    check(inp, opts, backend, torch.float64, 1e-10)
    check(inp, opts, backend, torch.float32, 2e-4)


@pytest.mark.parametrize("G", [0, 2])
def test_channel_blocks_and_strided_inputs(G, seed):
    """Several channels per work item, and u, delta, z, B, C given as strided views (the
    layouts Mamba passes: (b, L, d) memory read as (b, d, L)); last-state gradient unused."""
    inp = make_inputs(2, 16 if G == 0 else 32, 150, 16, G)

    def strided(x):
        return x.transpose(-1, -2).contiguous().transpose(-1, -2) if x.dim() >= 3 else x

    assert not strided(inp["u"]).is_contiguous()
    strided_inp = {k: strided(v) for k, v in inp.items()}
    opts = dict(D=True, z=True, delta_bias=True, softplus=True)
    check(strided_inp, opts, "numba", torch.float64, 1e-10)
    check(strided_inp, opts, "numba", torch.float32, 2e-4)


@pytest.mark.parametrize("dpg, rows, threads, expect", [
    (128, 16, 2, 128), (128, 1, 2, 32), (128, 2, 2, 64), (256, 16, 2, 128), (6, 1, 2, 6), (48, 1, 4, 8), (7, 1, 2, 7),
])
def test_channel_block_is_long_but_leaves_work_for_every_thread(dpg, rows, threads, expect):
    from ginr_common.scan import _channel_block

    assert _channel_block(dpg, rows, threads) == expect


def test_without_last_state_and_default_backend(seed):
    inp = make_inputs(1, 3, 20, 4, 0, dtype=torch.float32, positive=True)
    out = selective_scan(inp["u"], inp["delta"], inp["A"], inp["B"], inp["C"])
    ref = recurrence(*(inp[k].double() for k in ("u", "delta", "A", "B", "C")))
    assert torch.is_tensor(out) and torch.allclose(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_reference_matches_hand_computed_recurrence():
    """The oracle itself, against scalar arithmetic on a tiny case."""
    torch.manual_seed(0)
    inp = make_inputs(1, 1, 3, 2, 0, positive=True)
    u, dl, A, B, C = (inp[k] for k in ("u", "delta", "A", "B", "C"))
    h = [0.0, 0.0]
    ys = []
    for t in range(3):
        for n in range(2):
            h[n] = float(torch.exp(dl[0, 0, t] * A[0, n])) * h[n] + float(dl[0, 0, t] * B[0, n, t] * u[0, 0, t])
        ys.append(sum(float(C[0, n, t]) * h[n] for n in range(2)))
    out, last = selective_scan_ref(u, dl, A, B, C, return_last_state=True)
    assert torch.allclose(out[0, 0], torch.tensor(ys, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(last[0, 0], torch.tensor(h, dtype=torch.float64), rtol=1e-12)


def test_low_precision_inputs_keep_dtype(seed):
    inp = make_inputs(1, 4, 33, 4, 0, dtype=torch.float32, positive=True)
    args = [inp[k].bfloat16() for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan(*args, backend="numba")
    ref = recurrence(*(a.double() for a in args))
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max() <= 0.02 * ref.abs().max()


def test_long_sequence_large_delta_stays_finite(seed):
    L = 16384
    inp = make_inputs(1, 4, L, 16, 0, dtype=torch.float32, delta_scale=1.0)
    delta = inp["delta"] * 0 + 30.0  # large steps: decays underflow to zero
    u = inp["u"].requires_grad_()
    out, last = selective_scan(u, delta, inp["A"] * 50, inp["B"], inp["C"], D=inp["D"],
                               delta_softplus=True, return_last_state=True, backend="numba")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(last).all() and torch.isfinite(u.grad).all()
    # with every decay ~0 the state is just the last input term: y_t = sum_n C B delta u + D u
    sp = torch.nn.functional.softplus(delta)
    expect = (inp["C"] * inp["B"]).sum(1)[:, None] * sp * inp["u"] + inp["D"][:, None] * inp["u"]
    assert torch.allclose(out, expect, rtol=1e-4, atol=1e-3)


def test_float32_exp_of_the_kernels_is_accurate_and_exact_at_zero(seed):
    """The kernels' float32 exp (bitcast exponent + polynomial) against float64 exp: relative error
    within a few float32 ulps over the decays' range, and exp(0) = 1 exactly."""
    import numpy as np
    from numba import njit

    from ginr_common._scan_numba import exp_into

    @njit
    def exp32(x, out):
        exp_into(x, out, x.size)

    x = np.concatenate([-np.random.default_rng(seed).exponential(2.0, 100_000), [0.0, -1e-7, -0.5, -80.0]])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    exp32(x, out)
    rel = np.abs(out / np.exp(x.astype(np.float64)) - 1)
    small = np.abs(x) <= 1   # there the argument's own float32 rounding is negligible
    assert rel[small].max() < 4e-7 and rel.max() < 4e-6, (rel[small].max(), rel.max())
    assert out[x == 0].tolist() == [1.0]


def test_long_memory_float32_matches_reference(seed):
    """Decays within 1e-3 of 1 over 2048 steps (small delta): a bias in the float32 exp would
    compound over the memory length and show in the state."""
    inp = make_inputs(1, 8, 2048, 16, 0, positive=True, delta_scale=2e-3)
    inp["A"] = inp["A"] * 0.2
    opts = dict(D=True, z=True)
    check(inp, opts, "numba", torch.float32, 2e-5)


def test_repeated_calls_are_bit_identical(seed):
    """Exact resume needs the same bits on every call, wherever the kernels' buffers lie."""
    inp = make_inputs(4, 32, 50, 16, 0, dtype=torch.float32)
    runs = []
    for i in range(200):
        _ = [torch.empty(977 * (i % 23) + 13) for _ in range(1 + i % 3)]   # move the allocations around
        out, last, grads = run(selective_scan, inp, dict(D=True, z=True, delta_bias=True, softplus=True),
                               torch.float32, backend="numba")
        runs.append([out.detach(), last.detach()] + [grads[k] for k in sorted(grads)])
    for r in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], r))


@pytest.mark.parametrize("bad, msg", [
    (dict(u=torch.zeros(2, 4)), "u must be"),
    (dict(delta=torch.zeros(2, 4, 9)), "delta must"),
    (dict(A=torch.zeros(5, 3)), "A must"),
    (dict(B=torch.zeros(2, 3, 4, 8)), "B must"),
    (dict(C=torch.zeros(2, 4, 8)), "C must"),
    (dict(D=torch.zeros(3)), "D must"),
    (dict(z=torch.zeros(2, 4, 7)), "z must"),
])
def test_bad_shapes_raise_naming_expected(bad, msg):
    inp = dict(u=torch.zeros(2, 4, 8), delta=torch.zeros(2, 4, 8), A=torch.zeros(4, 3),
               B=torch.zeros(2, 3, 8), C=torch.zeros(2, 3, 8))
    inp.update(bad)
    with pytest.raises(ValueError, match=msg):
        selective_scan(**inp)


def test_backend_resolution_and_errors(monkeypatch):
    import ginr_common.scan as S

    assert resolve_backend("auto", "cpu") == "numba"
    assert resolve_backend("reference", "cpu") == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("fast", "cpu")
    with pytest.raises(BackendUnavailableError, match="CPU tensors"):
        resolve_backend("numba", "cuda")
    monkeypatch.setattr(S, "mamba_ssm_available", lambda: False)
    monkeypatch.setattr(S, "triton_available", lambda: True)
    assert resolve_backend("auto", "cuda") == "triton"   # the order on CUDA: mamba_ssm, triton, torch
    monkeypatch.setattr(S, "triton_available", lambda: False)
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(BackendUnavailableError, match="pip install triton"):
        resolve_backend("triton", "cuda")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'ginr-common\[cuda\]'"):
        resolve_backend("mamba_ssm", "cuda")
    monkeypatch.setattr(S, "mamba_ssm_available", lambda: True)
    assert resolve_backend("auto", "cuda") == "mamba_ssm"
    assert resolve_backend("auto", "cpu") == "numba"


def test_import_does_not_need_mamba_ssm_or_cuda():
    import subprocess
    import sys

    code = ("import sys; sys.modules['mamba_ssm'] = None; import ginr_common, torch; "
            "m = ginr_common.Mamba(8); print(m(torch.randn(1, 5, 8)).shape)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__('os').environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert "torch.Size([1, 5, 8])" in r.stdout


def test_kernels_match_the_reference_on_two_threads():
    """``make test``'s workers compute on one thread each; the numba kernels split their channels
    over threads, so the scan's and the convolution's reference checks run again on two."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    script = ("import sys, numba, pytest\n"
              "assert numba.get_num_threads() == 2, numba.get_num_threads()\n"
              "sys.exit(pytest.main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", script, "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
                        f"{here / 'test_scan.py'}::test_channel_blocks_and_strided_inputs",
                        f"{here / 'test_scan.py'}::test_matches_reference_all_options",
                        f"{here / 'test_conv.py'}::test_values_and_gradients_match_reference"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "NUMBA_NUM_THREADS": "2"})
    assert r.returncode == 0 and " passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
