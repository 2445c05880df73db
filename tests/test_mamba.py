import pytest
import torch

from ginr_common import BiMamba, BiMambaStack, Mamba


def test_mamba_is_causal(seed):
    m = Mamba(16, d_state=4)
    x = torch.randn(1, 12, 16)
    x2 = x.clone()
    x2[:, 7] += 1.0
    y, y2 = m(x), m(x2)
    assert torch.allclose(y[:, :7], y2[:, :7], atol=1e-6)
    assert not torch.allclose(y[:, 7:], y2[:, 7:], atol=1e-4)


def test_bimamba_reverse_branch_sees_reversed_sequence(seed):
    bi = BiMamba(16, combine="add", d_state=4)
    with torch.no_grad():
        bi.fwd.out_proj.weight.zero_()  # keep only the reverse branch
    x = torch.randn(2, 12, 16)
    x2 = x.clone()
    x2[:, 7] += 1.0
    y, y2 = bi(x), bi(x2)
    # anti-causal: positions after 7 do not see the change, positions up to 7 do
    assert torch.allclose(y[:, 8:], y2[:, 8:], atol=1e-6)
    assert not torch.allclose(y[:, :8], y2[:, :8], atol=1e-4)
    # and it is exactly the reverse Mamba run over the flipped sequence, flipped back
    assert torch.allclose(y, bi.bwd(x.flip(1)).flip(1), atol=1e-6)


@pytest.mark.parametrize("combine", ["mean", "add", "concat"])
def test_bimamba_combine(combine, seed):
    bi = BiMamba(8, combine=combine, d_state=4)
    x = torch.randn(3, 10, 8)
    y = bi(x)
    assert y.shape == x.shape
    f, b = bi.fwd(x), bi.bwd(x.flip(1)).flip(1)
    expect = {"mean": (f + b) / 2, "add": f + b}.get(combine)
    if expect is None:
        expect = bi.proj(torch.cat([f, b], -1))
    assert torch.allclose(y, expect, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="combine must be"):
        BiMamba(8, combine="max")
    with pytest.raises(ValueError, match="d_model=8"):
        Mamba(8)(torch.randn(1, 4, 6))


def test_stack_ends_with_residual_and_layernorm(seed):
    stack = BiMambaStack(8, depth=2, d_state=4)
    x = torch.randn(2, 9, 8)
    with torch.no_grad():  # silence every branch: the stack must reduce to LayerNorm(x)
        for blk in stack.blocks:
            blk.mixer.fwd.out_proj.weight.zero_()
            blk.mixer.bwd.out_proj.weight.zero_()
            blk.mlp[-1].weight.zero_()
            blk.mlp[-1].bias.zero_()
    assert torch.allclose(stack(x), torch.nn.functional.layer_norm(x, (8,)), atol=1e-5)
    with torch.no_grad():
        stack.blocks[0].mlp[-1].bias.fill_(0.5)  # a branch output is added to the residual stream
    assert torch.allclose(stack(x), torch.nn.functional.layer_norm(x + 0.5, (8,)), atol=1e-5)



def test_recompute_gives_the_same_outputs_and_gradients_keeping_fewer_tensors(seed):
    """recompute=True re-runs each mixer in the backward: the same outputs and gradients, fewer saved
    activations."""
    from torch.autograd.graph import saved_tensors_hooks

    plain = BiMambaStack(16, depth=2, d_state=4)
    again = BiMambaStack(16, depth=2, d_state=4, recompute=True)
    again.load_state_dict(plain.state_dict())
    x = torch.randn(2, 40, 16)
    outs, saved = [], []
    for stack in (plain, again):
        sizes = []

        def keep(t, sizes=sizes):
            sizes.append(t.numel())
            return t
        xi = x.clone().requires_grad_()
        with saved_tensors_hooks(keep, lambda t: t):
            y = stack(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append([y.detach(), xi.grad] + [p.grad for p in stack.parameters()])
        saved.append(sum(sizes))
    assert torch.equal(outs[0][0], outs[1][0])     # the forward is the same computation
    # the gradients agree to rounding (the norm's gradient arrives in two parts, one per direction)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(outs[0][1:], outs[1][1:]))
    assert saved[1] < saved[0] / 2, saved
    with torch.no_grad():   # without gradients there is nothing to recompute
        assert torch.equal(again(x), plain(x))
