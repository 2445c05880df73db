import numpy as np
import pytest
import torch

from ginr_common import ImplicitSequentialBias, SequentialBiasVisualization, lp_diversity
from ginr_common.tokens import lp_homes, lp_lattice, lp_placement, sinusoidal


def test_quickstart_pattern(capsys):
    assert SequentialBiasVisualization.visualize_placement(50, 10, "equidistant") == "L____" * 10
    assert "L____L____" in capsys.readouterr().out
    assert ImplicitSequentialBias(10, 8, input_len=40).visualize_placement() == "L____" * 10


def test_placements():
    assert lp_placement(64, 16) == list(range(0, 80, 5))  # architecture.md's data-flow example
    assert ImplicitSequentialBias(4, 8, 16, type="middle").visualize_placement() == "_" * 8 + "LLLL" + "_" * 8
    s = ImplicitSequentialBias(6, 8, 18, type="n_group", n_group=2).visualize_placement()
    assert s == "LL______LL______LL______"
    r = lp_placement(64, 16, "random")       # a fixed draw of 16 distinct slots of 80, the same every time
    assert r == lp_placement(64, 16, "random") == sorted(set(r)) and len(r) == 16 and 0 <= r[0] and r[-1] < 80
    assert r != lp_placement(64, 16) and lp_placement(64, 16, "random") != lp_placement(63, 17, "random")[:16]


@pytest.mark.parametrize("type", ["equidistant", "middle", "n_group", "random"])
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


def test_lp_diversity(seed):
    assert lp_diversity(torch.ones(5, 8)) == pytest.approx(0.0, abs=1e-6)
    assert lp_diversity(torch.eye(8)) == pytest.approx(1 - 1 / 8, abs=1e-6)
    for m, d in ((64, 16), (7, 3)):     # against float64 NumPy on fresh random LPs
        lps = torch.randn(m, d) + torch.randn(d)
        x = lps.double().numpy()
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        assert lp_diversity(lps) == pytest.approx(1 - (x @ x.T).mean(), abs=1e-6)


@pytest.mark.parametrize("grid, num_lp, lattice", [((16, 16), 64, (8, 8)), ((16, 16), 128, (8, 16)),
                                                   ((16, 16), 256, (16, 16)), ((4, 8), 8, (2, 4)),
                                                   ((8, 8, 8), 64, (4, 4, 4)), ((16, 16), 7, (1, 7))])
def test_lp_homes_are_a_distinct_lattice_covering_the_field(grid, num_lp, lattice):
    assert lp_lattice(grid, num_lp) == lattice
    homes = lp_homes(lattice).double()
    assert homes.shape == (num_lp, len(grid))
    assert len({tuple(h.tolist()) for h in homes}) == num_lp                     # distinct
    # evenly covering: every point of the field is within half a lattice cell (per axis) of a home
    probe = torch.rand(4000, len(grid), dtype=torch.float64)
    g = torch.tensor(lattice, dtype=torch.float64)
    nearest = ((probe[:, None] - homes[None]) * g).abs().amax(-1).min(1).values
    assert nearest.max() <= 0.5 + 1e-9
    # the lattice spacing follows the grid's aspect: spacing ratio grid_i / g_i as even as num_lp allows
    per_axis = torch.tensor(grid, dtype=torch.float64) / g
    assert per_axis.max() / per_axis.min() <= 2 or num_lp == 7


@pytest.mark.parametrize("type", ["equidistant", "middle", "n_group"])
def test_lp_homes_are_identical_for_insertion_and_extraction(type, seed):
    """LP i is inserted at the i-th LP slot of the sequence and read out as latent i; its home is
    lattice point i in raster order, so the sequence order of the LPs is the raster order of
    their homes whatever the placement type."""
    from ginr_common import MambaEncoder

    enc = MambaEncoder((16, 16), 3, 2, dim=8, depth=1, num_lp=16, d_state=4, lp_type=type, n_group=2)
    lp, homes = enc.lp, enc.lp_coords
    marked = lp.lps.detach().clone()
    marked[:, 0] = torch.arange(16, dtype=torch.float32)         # tag each LP with its index
    lp.lps.data.copy_(marked)
    seq = lp.add_lp(torch.zeros(1, 64, 8))                       # 8x8 patch tokens
    inserted = seq[0, lp.lp_indices, 0]                           # in sequence order
    assert torch.equal(inserted, torch.arange(16, dtype=torch.float32))
    assert torch.equal(lp.extract_lp_tokens(seq)[0, :, 0], torch.arange(16, dtype=torch.float32))
    raster = (homes * torch.tensor([4.0, 4.0]) - 0.5).round() @ torch.tensor([4.0, 1.0])
    assert torch.equal(raster, torch.arange(16, dtype=torch.float32))


def test_sinusoidal_embeds_real_positions_in_float64():
    """sin and cos of position / 10000^(2k / dim) in alternate columns; real positions (times)
    keep their dtype; integer positions give float32."""
    t = torch.tensor([0.0, 0.37, 12.5], dtype=torch.float64)
    emb = sinusoidal(t, 6)
    assert emb.dtype == torch.float64 and emb.shape == (3, 6)
    for k in range(3):
        ang = t / 10000 ** (2 * k / 6)
        assert torch.allclose(emb[:, 2 * k], ang.sin()) and torch.allclose(emb[:, 2 * k + 1], ang.cos())
    assert sinusoidal(torch.arange(4), 8).dtype == torch.float32
