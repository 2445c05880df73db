"""causal_conv1d (Mamba's short convolution + SiLU, channel-last) against a float64 reference."""
import pytest
import torch
import torch.nn.functional as F

from ginr_common.conv import causal_conv1d


def reference(x, w, bias):
    """silu(conv1d(x, padding=K-1)[..., :L]) in float64, written as the sum over taps."""
    x, w = x.double(), w.double().reshape(w.shape[0], -1)
    K, L = w.shape[1], x.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))
    pre = sum(w[:, k] * xp[:, k:k + L] for k in range(K))
    return F.silu(pre + (0 if bias is None else bias.double()))


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("L, K", [(1, 4), (3, 4), (37, 4), (20, 2)])
def test_values_and_gradients_match_reference(backend, dtype, rtol, L, K, seed):
    x = torch.randn(3, L, 7, dtype=torch.float64)   # passed as a strided view, as Mamba passes it
    w, bias = torch.randn(7, 1, K, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    dy = torch.randn(3, L, 7, dtype=torch.float64)

    def grads(fn, dt):
        leaves = [t.detach().to(dt).requires_grad_() for t in (x, w, bias)]
        strided = torch.cat([leaves[0], leaves[0]], -1)[..., :7]   # a view with step stride 14
        y = fn(strided, leaves[1], leaves[2])
        (y.double() * dy).sum().backward()
        return [y] + [t.grad for t in leaves]

    ref = grads(reference, torch.float64)
    got = grads(lambda a, b, c: causal_conv1d(a, b, c, backend=backend), dtype)
    assert got[0].shape == (3, L, 7) and got[0].dtype == dtype
    for name, g, r in zip(("out", "dx", "dweight", "dbias"), got, ref):
        err = ((g.double() - r).abs().max() / r.abs().max().clamp_min(1e-12)).item()
        assert err < rtol, f"{name}: relative error {err:.1e}"


def test_without_bias_and_with_2d_weight(seed):
    x, w = torch.randn(2, 9, 5), torch.randn(5, 3)
    assert torch.allclose(causal_conv1d(x, w), reference(x, w, None).float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x, w, b, msg", [
    (torch.zeros(2, 9), torch.zeros(5, 1, 4), None, r"x \(batch, L, dim\)"),
    (torch.zeros(2, 9, 5), torch.zeros(6, 1, 4), None, "got x"),
    (torch.zeros(2, 9, 5), torch.zeros(5, 2, 4), None, "weight"),
    (torch.zeros(2, 9, 5), torch.zeros(5, 1, 4), torch.zeros(4), r"bias must be \(dim=5,\)"),
])
def test_bad_shapes_raise_naming_expected(x, w, b, msg):
    with pytest.raises(ValueError, match=msg):
        causal_conv1d(x, w, b)


def test_bad_backend_raises():
    with pytest.raises(ValueError, match="backend must be one of"):
        causal_conv1d(torch.zeros(1, 2, 3), torch.zeros(3, 2), backend="fast")


def test_repeated_calls_are_bit_identical(seed):
    """Exact resume needs the kernels to give the same bits every call, wherever their buffers lie
    (a fast-math reciprocal in a loop's vector body but not in its remainder broke that once)."""
    x = torch.randn(4, 50, 256)[..., :128]
    w, bias, dy = torch.randn(128, 1, 4), torch.randn(128), torch.randn(4, 50, 128)
    runs = []
    for i in range(200):
        _ = [torch.empty(977 * (i % 23) + 13) for _ in range(1 + i % 3)]   # move the allocations around
        leaves = [t.clone().requires_grad_() for t in (x, w, bias)]
        y = causal_conv1d(*leaves, backend="numba")
        y.backward(dy)
        runs.append([y.detach()] + [t.grad for t in leaves])
    for r in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], r))
