import pytest
import torch

from ginr_common.decoders import DECODERS, LocalityBias, SCENTDecoder
from ginr_common.fourier import make_grid
from ginr_common.model import GINRConfig, MambaGINR, load_checkpoint, save_checkpoint

SMALL = dict(dim=16, depth=1, num_lp=8, d_state=4)
DEC = {
    "lainr": dict(hidden=32, n_freqs=8, heads=2, n_blocks=1, features="gaussian", sigma=6.0, locality=True),
    "scent": dict(hidden=32, n_freqs=8, heads=4, n_blocks=2, latent_blocks=1, locality=True),
}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_locality_bias_is_resolution_independent(decoder, seed):
    """Decoding a 64-grid and subsampling it equals decoding the subsampled coordinates."""
    model = MambaGINR(GINRConfig(**SMALL, decoder=decoder, decoder_kwargs=DEC[decoder])).eval()
    with torch.no_grad():
        z = model.encode(torch.rand(2, 3, 32, 32))
        fine = model.decode(z, make_grid((64, 64))).reshape(2, 64, 64, 3)
        sub = fine[:, 1::2, 1::2]  # every other pixel of the 64-grid ...
        coords = make_grid((64, 64)).reshape(64, 64, 2)[1::2, 1::2].reshape(-1, 2)
        direct = model.decode(z, coords).reshape(2, 32, 32, 3)  # ... decoded directly
    assert torch.allclose(sub, direct, atol=1e-5)


def test_locality_bias_is_2d_distance_in_float64(seed):
    lb = LocalityBias(heads=2, grid=16).double()
    c = torch.rand(1, 5, 2, dtype=torch.float64)
    p = torch.rand(3, 2, dtype=torch.float64)
    w = lb.log_w.exp()
    ref = torch.stack([-w[h] * (((c[0, :, None] - p[None]) * 16) ** 2).sum(-1) for h in range(2)])
    assert torch.allclose(lb(c, p)[0], ref)
    # horizontal and vertical neighbours are penalised alike (the 1-D raster distance was not)
    out = lb(torch.tensor([[[0.5, 0.5]]], dtype=torch.float64),
             torch.tensor([[0.5, 0.5 + 1 / 16], [0.5 + 1 / 16, 0.5]], dtype=torch.float64))
    assert torch.allclose(out[..., 0], out[..., 1])


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_queries_do_not_interact(decoder, seed):
    """A query's value does not depend on which other queries are decoded with it."""
    dec = DECODERS[decoder](16, **DEC[decoder]).eval()
    z, lp = torch.randn(2, 8, 16), torch.rand(8, 2)
    q = torch.rand(2, 20, 2)
    with torch.no_grad():
        full = dec(z, q, lp_coords=lp)
        part = dec(z, q[:, 5:9], lp_coords=lp)
    assert full.shape == (2, 20, 3) and torch.allclose(full[:, 5:9], part, atol=1e-6)


def test_scent_attention_weights_and_state(tmp_path, seed):
    model = MambaGINR(GINRConfig(**SMALL, decoder="scent", decoder_kwargs=DEC["scent"]))
    assert isinstance(model.decoder, SCENTDecoder) and model.decoder.latent_proc is not None
    z = model.encode(torch.rand(1, 3, 32, 32))
    out, w = model.decode(z, make_grid((4, 4)), return_attention=True)
    assert out.shape == (1, 16, 3) and w.shape == (1, 4, 16, 8)
    assert torch.allclose(w.sum(-1), torch.ones(1, 4, 16), atol=1e-5)
    # the random frequencies travel with the checkpoint
    save_checkpoint(tmp_path / "m.pt", model)
    again, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(again.decoder.ff.B, model.decoder.ff.B)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(again.render(x, 8), model.render(x, 8))


def test_locality_needs_lp_coords_and_bad_features(seed):
    dec = DECODERS["lainr"](16, **DEC["lainr"])
    with pytest.raises(ValueError, match="lp_coords"):
        dec(torch.randn(1, 8, 16), torch.rand(1, 3, 2))
    with pytest.raises(ValueError, match="features must be"):
        DECODERS["scent"](16, features="wavelet")
