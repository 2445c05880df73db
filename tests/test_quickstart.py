"""The uses the reference design's quick-start shows, written as our own examples, with
``ginr_common`` as the module name: the import list, the super-resolution model, LP add/extract,
the placement picture, BiMamba(dim=...), the 3-D volume model, the training loop and the
LP-diversity check."""
import pytest
import torch
import torch.nn.functional as F

from ginr_common import (BiMamba, ImplicitSequentialBias, MambaEncoder, MambaGINR,  # noqa: F401  the import list
                         SequentialBiasVisualization, SimpleMambaGINR, lp_diversity)


def corner_grid(h, w):
    return torch.stack(torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij"), -1).reshape(-1, 2)


def test_super_resolution_model_from_16x16_features_to_a_32x32_grid(seed):
    model = SimpleMambaGINR(input_dim=3, hidden_dim=32, output_dim=3, num_lp=8, mamba_depth=1)
    feats = torch.randn(2, 16 * 16, 3)
    coords = corner_grid(32, 32).unsqueeze(0).expand(2, -1, -1)
    out = model(feats, coords)
    assert out.shape == (2, 1024, 3) and torch.isfinite(out).all()
    assert out.reshape(2, 32, 32, 3).shape == (2, 32, 32, 3)
    assert torch.allclose(model(feats, corner_grid(32, 32)), out)     # (Q, 2) shared by the batch


def test_lp_add_and_extract_use_one_index_list(seed):
    lp = ImplicitSequentialBias(num_lp=4, dim=8, input_len=16, type="equidistant")
    tokens = torch.randn(1, 16, 8)
    with_lps = lp.add_lp(tokens)
    assert with_lps.shape == (1, 20, 8)
    assert torch.equal(lp.extract_lp_tokens(with_lps), lp.lps.expand(1, -1, -1))
    assert torch.equal(with_lps[:, lp.token_indices], tokens)


def test_placement_picture(capsys):
    s = SequentialBiasVisualization.visualize_placement(seq_len=50, num_lp=10, type="equidistant")
    assert s == "L____" * 10 and capsys.readouterr().out.strip() == s


def test_bimamba_takes_its_width_as_dim_or_d_model(seed):
    a = BiMamba(dim=16, d_state=4)
    b = BiMamba(16, d_state=4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 10, 16)
    assert torch.equal(a(x), b(x)) and a(x).shape == (1, 10, 16)
    with pytest.raises(TypeError, match="d_model= or dim="):
        BiMamba()


def test_volume_model_with_3d_query_coordinates(seed):
    model = SimpleMambaGINR(input_dim=1, hidden_dim=16, output_dim=1, num_lp=8, mamba_depth=1)
    volume = torch.rand(1, 1, 4, 4, 4)
    feats = model.tokenize(volume)                        # (1, 64, 1)
    q = torch.rand(1, 100, 3)
    out = model(feats, q)
    assert out.shape == (1, 100, 1)
    # the third axis is really read: moving queries along it changes the output
    assert not torch.allclose(out, model(feats, q * torch.tensor([1.0, 1.0, 0.5])))
    with pytest.raises(ValueError, match="coord_dim=2"):
        SimpleMambaGINR(input_dim=1, hidden_dim=16, output_dim=1, num_lp=8, mamba_depth=1, coord_dim=2)(feats, q)
    with pytest.raises(ValueError, match="coord_dim=4"):
        model(feats, torch.rand(1, 5, 4))


def test_training_loop_learns_and_the_lp_diversity_check(seed):
    model = SimpleMambaGINR(input_dim=3, hidden_dim=32, output_dim=3, num_lp=8, mamba_depth=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    images = torch.rand(4, 3, 8, 8)
    coords = corner_grid(8, 8)
    targets = images.flatten(2).transpose(1, 2)
    lps_before = model.lps.detach().clone()
    losses = []
    for _ in range(30):
        loss = F.mse_loss(model(model.tokenize(images), coords), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.lps, lps_before)              # the LPs are trained
    lps = model.lps.data                                       # the LP-diversity check
    unit = lps / lps.norm(dim=-1, keepdim=True)
    assert lp_diversity(lps) == pytest.approx(float(1 - (unit @ unit.t()).mean()), abs=1e-6)
    assert 0 < lp_diversity(lps) < 1
