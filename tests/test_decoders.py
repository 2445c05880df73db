import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ginr_common.checkpoints import load_checkpoint, save_checkpoint
from ginr_common.decoders import (DECODERS, LAINRConfig, LocalConfig, LocalityBias, NeighbourConfig, NeighbourReader,
                                  SCENTConfig, SCENTDecoder, build_decoder, lattice_corners)
from ginr_common.fourier import make_grid
from ginr_common.model import GINRConfig, MambaGINR

SMALL = dict(dim=16, depth=1, num_lp=8, d_state=4, patch_size=2, pixel_filter=0)
DEC = {
    "lainr": LAINRConfig(hidden=32, n_freqs=8, heads=2, n_blocks=1, features="gaussian", sigma=6.0, locality=True),
    "scent": SCENTConfig(hidden=32, n_freqs=8, heads=4, n_blocks=2, latent_blocks=1, locality=True, local_tokens=True),
    "local": LocalConfig(hidden=32, n_blocks=1),
    "neighbours": NeighbourConfig(hidden=32, n_blocks=1, k=4),
}


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_locality_bias_is_resolution_independent(decoder, seed):
    """Decoding a 64-grid and subsampling it equals decoding the subsampled coordinates."""
    model = MambaGINR(GINRConfig(**SMALL, decoder=DEC[decoder])).eval()
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
    dec = build_decoder(DEC[decoder], latent_dim=16, coord_dim=2, out_dim=3, lattice=(2, 4), token_grid=(4, 4)).eval()
    z, lp, tok = torch.randn(2, 8, 16), torch.rand(8, 2), torch.randn(2, 16, 16)
    q, cell = torch.rand(2, 20, 2), torch.full((2, 20, 2), 1 / 32)
    with torch.no_grad():
        full = dec(z, q, lp_coords=lp, tokens=tok, cell=cell)
        part = dec(z, q[:, 5:9], lp_coords=lp, tokens=tok, cell=cell[:, 5:9])
    assert full.shape == (2, 20, 3) and torch.allclose(full[:, 5:9], part, atol=1e-6)


def test_scent_attention_weights_and_state(tmp_path, seed):
    model = MambaGINR(GINRConfig(**SMALL, decoder=DEC["scent"]))
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
    dec = build_decoder(DEC["lainr"], latent_dim=16, coord_dim=2, out_dim=3, lattice=(2, 4))
    with pytest.raises(ValueError, match="lp_coords"):
        dec(torch.randn(1, 8, 16), torch.rand(1, 3, 2))
    with pytest.raises(ValueError, match="features must be"):
        SCENTConfig(features="wavelet")
    with pytest.raises(ValueError, match=r"the scent decoder config: unknown field\(s\) \['hiden'\]"):
        GINRConfig(decoder={"kind": "scent", "hiden": 3})


@pytest.mark.parametrize("decoder", ["lainr", "scent"])
def test_locality_bias_concentrates_attention_near_the_query(decoder, seed):
    """Measured, not restated: with the bias on, most of a query's attention mass falls on the LPs
    within 1.5 lattice cells of it; with the bias off the same decoder spreads its mass about in
    proportion to how many LPs are near."""
    lattice = make_grid((8, 8))                                   # 64 LPs on an 8x8 lattice
    z = torch.randn(2, 64, 16)
    q = torch.rand(2, 50, 2) * 0.75 + 0.125                       # queries away from the border
    near = ((q[:, :, None] - lattice).norm(dim=-1) * 8 < 1.5)     # (B, Q, M)

    def mass(locality):
        cfg = dataclasses.replace(DEC[decoder], locality=locality, lp_grid=8, local_tokens=False)
        dec = build_decoder(cfg, latent_dim=16, coord_dim=2, out_dim=3).eval()
        if locality:
            dec.locality.log_w.data.fill_(math.log(3.0))
        with torch.no_grad():
            _, w = dec(z, q, lp_coords=lattice, return_attention=True)   # (B, heads, Q, M)
        return (w * near[:, None]).sum(-1).mean().item()

    share = near.float().sum(-1).mean().item() / 64               # fraction of LPs that are near
    assert mass(True) > 0.9, mass(True)
    assert mass(False) < 3 * share < 0.5, (mass(False), share)


def test_lattice_corners_interpolate_bilinearly_like_grid_sample(seed):
    """Blending the 4 corner values by their area weights is bilinear interpolation with the
    pixel-centre convention (grid_sample, align_corners=False, border padding), in float64."""
    shape = (5, 7)
    feats = torch.rand(2, 35, 3, dtype=torch.float64)
    q = torch.rand(2, 300, 2, dtype=torch.float64) * 1.2 - 0.1          # some queries beyond the border
    blend = sum(w[..., None] * feats.gather(1, i[..., None].expand(-1, -1, 3))
                for i, _, w in lattice_corners(q, shape))
    img = feats.transpose(1, 2).reshape(2, 3, *shape)
    ref = F.grid_sample(img, (q.flip(-1) * 2 - 1)[:, :, None], mode="bilinear", padding_mode="border",
                        align_corners=False)[..., 0].transpose(1, 2)
    assert torch.allclose(blend, ref, atol=1e-12)                      # border padding outside, too
    inside = ((q >= 0.5 / torch.tensor(shape)) & (q <= 1 - 0.5 / torch.tensor(shape))).all(-1)
    for _, rel, w in lattice_corners(q, shape):
        assert (w >= 0).all() and (rel[inside].abs() <= 1 + 1e-12).all()
    assert torch.allclose(sum(w for _, _, w in lattice_corners(q, shape)), torch.ones(2, 300, dtype=torch.float64))


@pytest.mark.parametrize("sources", [("lps",), ("tokens",), ("lps", "tokens")])
def test_local_decoder_reads_only_nearby_features(sources, seed):
    """Changing one lattice point's feature changes the output only at queries within one cell of it."""
    cfg = LocalConfig(hidden=16, n_blocks=1, sources=sources)
    dec = build_decoder(cfg, latent_dim=8, coord_dim=2, out_dim=3, lattice=(4, 4), token_grid=(8, 8)).eval()
    lat, tok = torch.randn(1, 16, 8), torch.randn(1, 64, 8)
    q = make_grid((32, 32))[None]
    cell = torch.full_like(q, 1 / 32)
    src = sources[0]
    shape = (4, 4) if src == "lps" else (8, 8)
    with torch.no_grad():
        base = dec(lat, q, tokens=tok, cell=cell)
        lat2, tok2 = lat.clone(), tok.clone()
        (lat2 if src == "lps" else tok2)[0, shape[1] + 1] += 10        # lattice point (1, 1)
        moved = (dec(lat2, q, tokens=tok2, cell=cell) - base).abs().sum(-1)[0] > 1e-6
    home = (torch.tensor([1.5, 1.5]) / torch.tensor(shape))
    dist = ((q[0] - home).abs() * torch.tensor(shape)).amax(-1)      # in lattice cells
    assert moved.any() and (dist[moved] < 1 + 1e-6).all()
    with torch.no_grad():                                              # the cell size is an input
        assert not torch.allclose(dec(lat, q, tokens=tok, cell=cell * 2), base)


@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 5)])
def test_local_reader_offsets_point_from_the_lattice_point_to_the_query(shape, seed):
    """A known answer for the offsets, in float64: every lattice point's feature is its own position
    (in lattice units), the offset enters as itself (features of the offset = the offset), so each
    corner's pre-activation is point + (query - point) = the query's position u, and the reading is
    GELU(u) at every query, inside the lattice and beyond its border. An offset read with the wrong
    sign (point - query) gives 2 point - u, which differs from corner to corner."""
    from torch import nn

    from ginr_common.decoders import LocalReader

    d = len(shape)
    reader = LocalReader(shape, d, d, LocalConfig(hidden=d)).double()
    reader.ff = nn.Identity()
    reader.proj_pos = nn.Linear(2 * d, d, bias=False).double()
    eye = torch.eye(d, dtype=torch.float64)
    with torch.no_grad():
        reader.proj_pos.weight.copy_(torch.cat([eye, torch.zeros(d, d, dtype=torch.float64)], 1))  # offset only
        reader.proj_feat.weight.copy_(eye)
        reader.proj_feat.bias.zero_()
        reader.out.weight.copy_(eye)
        reader.out.bias.zero_()
    points = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij"), -1)
    feats = points.reshape(1, -1, d).expand(2, -1, -1)
    q = torch.rand(2, 200, d, dtype=torch.float64) * 1.4 - 0.2            # some queries beyond the border
    u = q * torch.tensor(shape, dtype=torch.float64) - 0.5                 # the query in lattice units
    got = reader(feats, q, torch.full_like(q, 0.1))
    assert torch.allclose(got, F.gelu(u), rtol=0, atol=1e-12)


def test_pixel_filter_gathers_the_right_pixels_in_float64(seed):
    """Weights fixed (last layer's bias) to one-hot on a tap: the output is that input pixel, clamped
    at the border, minus the mean of the k^2 taps (float64 index computation beside it); the
    zero-initialised filter adds nothing; values and gradients pass gradcheck."""
    from ginr_common.decoders import PixelFilter

    k, S = 4, (5, 7)
    filt = PixelFilter(6, k).double()
    images = torch.rand(2, 3, *S, dtype=torch.float64)
    coords = torch.rand(2, 9, 2, dtype=torch.float64) * 1.2 - 0.1   # some outside [0, 1]
    feats, cell = torch.randn(2, 9, 6, dtype=torch.float64), torch.full((2, 9, 2), 0.1, dtype=torch.float64)
    assert filt(feats, images, coords, cell).abs().max() == 0
    u = coords * torch.tensor(S, dtype=torch.float64) - 0.5
    taps = []
    for j in range(k * k):
        oy, ox = divmod(j, k)
        iy = (u[..., 0].floor() + oy - 1).clamp(0, S[0] - 1).long()
        ix = (u[..., 1].floor() + ox - 1).clamp(0, S[1] - 1).long()
        taps.append(torch.stack([images[b, :, iy[b], ix[b]].T for b in range(2)]))
    mean = sum(taps) / len(taps)
    for j in (0, 5, 10, 15):
        with torch.no_grad():
            filt.net[-1].bias.zero_()
            filt.net[-1].bias[j] = 1.0
        assert torch.allclose(filt(feats, images, coords, cell), taps[j] - mean, rtol=0, atol=1e-14)
    with torch.no_grad():
        filt.net[-1].weight.normal_()
    assert torch.autograd.gradcheck(lambda f, im: filt(f, im, coords, cell),
                                    (feats.requires_grad_(), images.requires_grad_()))


def test_pixel_filter_model_needs_images_and_the_local_decoder(seed):
    model = MambaGINR(GINRConfig(**{**SMALL, "pixel_filter": 4}, decoder=DEC["local"])).eval()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="pass images="):
        model.decode(model.encode(x), make_grid((8, 8)))
    assert model.render(x, (48, 48)).shape == (1, 3, 48, 48)
    with pytest.raises(ValueError, match="pixel_filter=4 needs a decoder that returns its features"):
        GINRConfig(**{**SMALL, "pixel_filter": 4}, decoder=DEC["lainr"])
    # SCENT returns its features too: the filter adds to its output, and its attention still comes back
    scent = MambaGINR(GINRConfig(**{**SMALL, "pixel_filter": 4}, decoder=DEC["scent"])).eval()
    with torch.no_grad():
        scent.pixel_filter.net[-1].weight.normal_(generator=torch.Generator().manual_seed(seed))
        z, q = scent.encode(x), make_grid((8, 8))
        out, w = scent.decode(z, q, images=x, return_attention=True)
        plain, feats = scent.decoder(z[:, :scent.config.num_lp], q[None], lp_coords=scent.lp_coords,
                                     tokens=z[:, scent.config.num_lp:] if scent.config.reads_tokens else None,
                                     cell=torch.full((1, 64, 2), 1 / 32), return_features=True)
    assert w.shape[-1] == scent.config.num_lp and out.shape == (1, 64, 3)
    assert torch.allclose(out, plain + scent.pixel_filter(feats, x, q[None], torch.full((1, 64, 2), 1 / 32)), atol=1e-6)
    assert (out - plain).abs().max() > 1e-4


def test_neighbour_reader_pools_the_k_nearest_points_in_float64(seed):
    """Against a brute-force reading, query by query in float64: the k nearest points (by distance
    in cells of the unit grid), each read by the MLP from [feature, Fourier features of offset / 4,
    offset, cell] with the offset point - query, pooled by the softmax of their logits; queries in
    chunks of 3 and a cell per query give the same; too few points are named."""
    g = torch.Generator().manual_seed(seed)
    reader = NeighbourReader(2, 5, 8, k=3, chunk=3).double()
    points = torch.rand(2, 9, 2, generator=g, dtype=torch.float64)
    feats = torch.randn(2, 9, 5, generator=g, dtype=torch.float64)
    queries = torch.rand(2, 7, 2, generator=g, dtype=torch.float64)
    cell = torch.rand(2, 7, 2, generator=g, dtype=torch.float64) / 8
    unit = (8, 6)
    h, index = reader(points, feats, queries, cell, unit)
    u = torch.tensor(unit, dtype=torch.float64)
    for b in range(2):
        for q in range(7):
            off = (points[b] - queries[b, q]) * u                          # (N, 2)
            nearest = off.norm(dim=-1).argsort()[:3]
            assert index[b, q].tolist() == nearest.tolist()
            o = off[nearest]
            r = reader.net(torch.cat([feats[b, nearest], reader.ff(o / 4), o, (cell[b, q] * u).expand(3, -1)], -1))
            expected = (torch.softmax(r[:, -1], 0)[:, None] * r[:, :-1]).sum(0)
            assert torch.allclose(h[b, q], expected)
    shared, _ = reader(points, feats, queries, cell[:, :1], unit)          # one cell for every query
    assert torch.allclose(shared[:, 0], h[:, 0]) and not torch.allclose(shared, h)
    with pytest.raises(ValueError, match="the k=3 nearest points, got 2 points"):
        reader(points[:, :2], feats[:, :2], queries, cell, unit)


def test_a_reconstruction_over_the_neighbour_reader_trains(tmp_path):
    """The flow's reader of scattered points decodes a reconstruction model (points at the patch
    centres, the encoded patch tokens their features, with the pixel filter): it trains through
    fit (the loss falls on the embedded photos), and its checkpoint reloads and renders at any size."""
    from ginr_common.configs import get_config, with_settings
    from ginr_common.train import fit
    cfg = with_settings(get_config("standard_fourier", "smoke"), {"model.decoder": {"kind": "neighbours", "hidden": 32},
                                                                  "steps": 30, "val_every": 30, "ckpt_every": 30})
    m = fit(cfg, out=tmp_path, progress=False)
    losses = [h["loss"] for h in m["history"]]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    model, _ = load_checkpoint(tmp_path / "best.pt")
    assert type(model.decoder).__name__ == "NeighbourDecoder" and model.pixel_filter is not None
    x = torch.rand(1, 3, 32, 32)
    assert model.render(x, (48, 40)).shape == (1, 3, 48, 40)


def test_a_new_decoder_is_one_class_and_one_registry_line(monkeypatch, tmp_path):
    """A decoder that declares the protocol (its config class, whether it returns features) and is
    registered by one line builds into MambaGINR, renders, saves and loads, takes --set style
    settings; the model asks the decoder, not a list of known kinds."""
    from dataclasses import dataclass

    from torch import nn

    from ginr_common.configs import get_config, with_settings
    from ginr_common.fourier import FourierFeatures

    @dataclass
    class MeanConfig:
        kind: str = "mean"
        n_freqs: int = 4
        reads_tokens = False          # a class attribute: not a stored field

    class MeanDecoder(nn.Module):
        """The mean of the LP latents and Fourier features of the query, through one linear layer."""
        config_class, returns_features = MeanConfig, False

        def __init__(self, config, *, latent_dim, coord_dim=2, out_dim=3, lattice=None, token_grid=None):
            super().__init__()
            self.ff = FourierFeatures(coord_dim, config.n_freqs)
            self.net = nn.Linear(latent_dim + self.ff.out_dim, out_dim)

        def forward(self, latents, coords, *, lp_coords=None, tokens=None, cell=None, return_attention=False):
            pooled = latents.mean(1, keepdim=True).expand(-1, coords.shape[1], -1)
            return self.net(torch.cat([pooled, self.ff(coords)], -1))

    monkeypatch.setitem(DECODERS, "mean", MeanDecoder)          # the registry line
    model = MambaGINR(GINRConfig(**SMALL, decoder=MeanConfig())).eval()
    x = torch.rand(2, 3, 32, 32)
    assert isinstance(model.decoder, MeanDecoder) and model.render(x, (40, 40)).shape == (2, 3, 40, 40)
    save_checkpoint(tmp_path / "m.pt", model)
    again, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["config"]["decoder"] == {"kind": "mean", "n_freqs": 4}
    assert isinstance(again.decoder.ff, FourierFeatures) and torch.equal(again.render(x, 40), model.render(x, 40))
    cfg = get_config("standard_fourier", "smoke")
    cfg.model = GINRConfig(**SMALL, decoder=MeanConfig())
    assert with_settings(cfg, {"model.decoder.n_freqs": 6}).model.decoder == MeanConfig(n_freqs=6)
    with pytest.raises(ValueError, match="pixel_filter=4 needs a decoder that returns its features"):
        GINRConfig(**{**SMALL, "pixel_filter": 4}, decoder=MeanConfig())
    monkeypatch.delitem(DECODERS, "mean")
    with pytest.raises(TypeError, match="decoder must be the config of a registered decoder"):
        GINRConfig(**SMALL, decoder=MeanConfig())
    with pytest.raises(ValueError, match="decoder kind must be one of"):
        load_checkpoint(tmp_path / "m.pt")
