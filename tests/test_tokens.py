import pytest
import torch

from ginr_common import ImplicitSequentialBias, SequentialBiasVisualization, lp_diversity
from ginr_common.tokens import lp_placement


def test_quickstart_pattern(capsys):
    assert SequentialBiasVisualization.visualize_placement(50, 10, "equidistant") == "L____" * 10
    assert "L____L____" in capsys.readouterr().out
    assert ImplicitSequentialBias(10, 8, input_len=40).visualize_placement() == "L____" * 10


def test_placements():
    assert lp_placement(64, 16) == list(range(0, 80, 5))  # architecture.md's data-flow example
    assert ImplicitSequentialBias(4, 8, 16, type="middle").visualize_placement() == "_" * 8 + "LLLL" + "_" * 8
    s = ImplicitSequentialBias(6, 8, 18, type="n_group", n_group=2).visualize_placement()
    assert s == "LL______LL______LL______"


@pytest.mark.parametrize("type", ["equidistant", "middle", "n_group"])
@pytest.mark.parametrize("init", ["sinusoidal", "normal"])
def test_extraction_returns_exactly_what_was_inserted(type, init, seed):
    lp = ImplicitSequentialBias(6, 8, 30, type=type, n_group=3, init=init)
    tokens = torch.randn(2, 30, 8)
    seq = lp.add_lp(tokens)
    assert seq.shape == (2, 36, 8)
    assert torch.equal(lp.extract_lp_tokens(seq), lp.lps.expand(2, -1, -1))
    assert torch.equal(seq[:, lp.token_indices], tokens)  # tokens keep their order
    marks = "".join("L" if i in set(lp.lp_indices.tolist()) else "_" for i in range(36))
    assert marks == lp.visualize_placement()


def test_lps_receive_gradients(seed):
    lp = ImplicitSequentialBias(4, 8, 12)
    lp.extract_lp_tokens(lp.add_lp(torch.randn(1, 12, 8)) * 2).sum().backward()
    assert torch.allclose(lp.lps.grad, torch.full_like(lp.lps, 2.0))


@pytest.mark.parametrize("kw, msg", [
    (dict(num_lp=0), "num_lp must be >= 1"),
    (dict(type="n_group", n_group=4, num_lp=6), "n_group must divide num_lp=6"),
    (dict(type="corner"), "type must be one of"),
    (dict(init="zeros"), "init must be"),
])
def test_invalid_arguments(kw, msg):
    args = dict(num_lp=6, dim=8, input_len=20) | kw
    with pytest.raises(ValueError, match=msg):
        ImplicitSequentialBias(**args)


def test_wrong_sequence_length_names_expected():
    lp = ImplicitSequentialBias(4, 8, 12)
    with pytest.raises(ValueError, match="input_len=12"):
        lp.add_lp(torch.randn(1, 13, 8))
    with pytest.raises(ValueError, match="16"):
        lp.extract_lp_tokens(torch.randn(1, 15, 8))


def test_lp_diversity():
    assert lp_diversity(torch.ones(5, 8)) == pytest.approx(0.0, abs=1e-6)
    assert lp_diversity(torch.eye(8)) == pytest.approx(1 - 1 / 8, abs=1e-6)
