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
