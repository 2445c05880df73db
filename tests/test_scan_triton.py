"""The Triton backend's kernels, run on CPU through Triton's interpreter, against the float64
reference: outputs, last state and every gradient, on small random shapes (L not a multiple of the
chunk, grouped B/C, N not a power of two)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: kernels run on CPU

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed (it ships with torch's CUDA builds on Linux)")

from test_scan import check, make_inputs  # noqa: E402

from ginr_common.scan import BackendUnavailableError, resolve_backend, selective_scan  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="TRITON_INTERPRET was set to something other than 1 before the tests")


@pytest.mark.parametrize("L,G", [(1, 0), (70, 0), (131, 2), (64, 1)])
def test_triton_matches_reference_all_options(L, G, seed):
    inp = make_inputs(2, 4, L, 5, G)
    check(inp, dict(D=True, z=True, delta_bias=True, softplus=True), "triton", torch.float32, 2e-4)


@pytest.mark.parametrize("opt", ["none", "D", "z", "delta_bias"])
def test_triton_each_option_alone(opt, seed):
    inp = make_inputs(1, 6, 67, 3, 3, positive=True)   # 6 channels in 3 groups: blocks of 2
    check(inp, {opt: True} if opt != "none" else {}, "triton", torch.float32, 2e-4)


def test_triton_half_precision_inputs_keep_their_dtype(seed):
    inp = make_inputs(1, 4, 20, 4, 0, dtype=torch.float32)
    for dt in (torch.bfloat16, torch.float16):
        args = [inp[k].to(dt) for k in ("u", "delta", "A", "B", "C")]
        out = selective_scan(*args, delta_softplus=True, backend="triton")
        ref = selective_scan(*[a.float() for a in args], delta_softplus=True, backend="reference")
        assert out.dtype == dt and torch.allclose(out.float(), ref, atol=3e-2, rtol=3e-2)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", "cpu")
