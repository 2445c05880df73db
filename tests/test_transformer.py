import pytest
import torch

from ginr_common.decoders import LAINRConfig
from ginr_common.encoder import MambaEncoder
from ginr_common.model import GINRConfig, MambaGINR
from ginr_common.transformer import SelfAttention, TransformerStack


def test_self_attention_matches_explicit_softmax_in_float64(seed):
    att = SelfAttention(8, heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    q, k, v = att.qkv(x).chunk(3, -1)
    heads = lambda t: t.reshape(2, 5, 2, 4).transpose(1, 2)  # noqa: E731
    w = (heads(q) @ heads(k).transpose(-1, -2) / 2.0).softmax(-1)
    ref = att.out((w @ heads(v)).transpose(1, 2).reshape(2, 5, 8))
    assert torch.allclose(att(x), ref, atol=1e-12)


def test_stack_is_permutation_equivariant(seed):
    # why LPs "appended" (LA-INR) and "interleaved" are the same model for the transformer baseline
    stack = TransformerStack(16, 2).double()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    perm = torch.randperm(12)
    assert torch.allclose(stack(x)[:, perm], stack(x[:, perm]), atol=1e-10)


def test_transformer_baseline_model_end_to_end(seed):
    cfg = GINRConfig(dim=16, depth=1, num_lp=8, patch_size=2, pixel_filter=0, mixer="transformer",
                     decoder=LAINRConfig(hidden=32, n_freqs=4, heads=2, n_blocks=1))
    model = MambaGINR(cfg)
    assert isinstance(model.encoder.stack, TransformerStack)
    out = model.render(torch.rand(2, 3, 32, 32), 16)
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="mixer must be"):
        MambaEncoder((8, 8), 3, 2, dim=16, depth=1, num_lp=4, mixer="lstm")


def test_rotary_is_a_rotation_by_position_in_float64(seed):
    """Against complex multiplication in float64 on fresh random inputs: channel pair (2i, 2i+1) of
    position p times exp(1j p / 10000^(2i / c)); the logits of rotated queries and keys depend on the
    positions only through their difference, and the gradient is the inverse rotation."""
    from ginr_common.transformer import rotary

    x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    z = torch.view_as_complex(x.detach().reshape(2, 3, 7, 4, 2).contiguous())
    theta = torch.arange(7, dtype=torch.float64)[:, None] * 10000.0 ** -(torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    ref = torch.view_as_real(z * torch.polar(torch.ones_like(theta), theta)).reshape(2, 3, 7, 8)
    assert torch.allclose(rotary(x), ref, atol=1e-12)
    g = torch.randn_like(ref)
    (rotary(x) * g).sum().backward()
    gz = torch.view_as_complex(g.reshape(2, 3, 7, 4, 2).contiguous())
    assert torch.allclose(x.grad, torch.view_as_real(gz * torch.polar(torch.ones_like(theta), -theta)).reshape(x.shape),
                          atol=1e-12)
    q, k = torch.randn(1, 1, 1, 8, dtype=torch.float64), torch.randn(1, 1, 1, 8, dtype=torch.float64)
    at = lambda m, n: float(rotary(q.expand(1, 1, 20, 8))[0, 0, m] @ rotary(k.expand(1, 1, 20, 8))[0, 0, n])  # noqa: E731
    assert at(5, 2) == pytest.approx(at(15, 12), abs=1e-10) and at(5, 2) != pytest.approx(at(5, 3), abs=1e-3)


def test_position_encodings_of_the_encoder(seed):
    """learned: a parameter per patch added to the tokens; rope: the transformer's attention then
    depends on the order of the sequence (no longer permutation-equivariant); rope with BiMamba is
    refused by name."""
    enc = MambaEncoder((8, 8), 3, 2, dim=16, depth=1, num_lp=4, position="learned", mixer="transformer")
    x = torch.rand(2, 3, 8, 8)
    tok = enc.tokenizer
    assert torch.equal(tok(x), tok.embed(tok.patchify(x)) + tok.pos_learned) and tok.pos_proj is None
    rope = TransformerStack(16, 1, rope=True).double()
    h = torch.randn(1, 12, 16, dtype=torch.float64)
    perm = torch.randperm(12)
    assert not torch.allclose(rope(h)[:, perm], rope(h[:, perm]), atol=1e-6)
    enc = MambaEncoder((8, 8), 3, 2, dim=16, depth=1, num_lp=4, position="rope", mixer="transformer")
    assert enc.tokenizer.position == "none" and enc.stack.blocks[0].mixer.rope
    assert torch.equal(enc.tokenizer(x), enc.tokenizer.embed(enc.tokenizer.patchify(x)))
    with pytest.raises(ValueError, match="position='rope' rotates the transformer's queries and keys: it needs "
                                         "mixer='transformer', got mixer='bimamba'"):
        MambaEncoder((8, 8), 3, 2, dim=16, depth=1, num_lp=4, position="rope")
    with pytest.raises(ValueError, match="position must be 'fourier', 'learned' or 'none', got 'alibi'"):
        MambaEncoder((8, 8), 3, 2, dim=16, depth=1, num_lp=4, position="alibi", mixer="transformer")
