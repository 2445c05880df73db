import pytest
import torch
import torch.nn.functional as F

from ginr_common.checkpoints import load_checkpoint, save_checkpoint
from ginr_common.decoders import LAINRConfig
from ginr_common.fourier import make_grid
from ginr_common.model import GINRConfig, MambaGINR, SimpleMambaGINR, render_image

SMALL = dict(dim=16, depth=1, num_lp=8, d_state=4, patch_size=2, pixel_filter=0, decoder=LAINRConfig(hidden=32, n_freqs=4, heads=2, n_blocks=1))


def small_model(**kw):
    return MambaGINR(GINRConfig(**(SMALL | kw)))


def test_grid_convention_is_the_interpolation_convention(seed):
    img = torch.rand(1, 3, 32, 32)
    for size in (32, 64, 96):
        g = make_grid((size, size)).flip(-1) * 2 - 1  # grid_sample wants (x, y) in [-1, 1]
        sampled = F.grid_sample(img, g.view(1, size, size, 2), mode="bilinear", padding_mode="border",
                                align_corners=False)
        interp = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
        assert torch.allclose(sampled, interp, atol=1e-5)
    assert torch.allclose(F.grid_sample(img, (make_grid((32, 32)).flip(-1) * 2 - 1).view(1, 32, 32, 2),
                                        align_corners=False), img, atol=1e-6)


def test_decode_chunks_and_per_image_coords(seed):
    m = small_model(query_chunk=100).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        lat = m.encode(x)
        coords = torch.rand(2, 333, 2)
        a = m.decode(lat, coords)
        m.config.query_chunk = 10**6
        b = m.decode(lat, coords)
        assert a.shape == (2, 333, 3) and torch.allclose(a, b, atol=1e-6)
        for i in range(2):  # each image really uses its own coordinates
            assert torch.allclose(a[i], m.decode(lat[i:i + 1], coords[i])[0], atol=1e-6)
        r = m.render(x, (32, 32))
        assert r.shape == (2, 3, 32, 32)
        assert torch.allclose(r, m(x, make_grid((32, 32))).transpose(1, 2).reshape(2, 3, 32, 32), atol=1e-6)
        assert m.render(x, 64).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"coords must be \(Q, 2\)"):
        m.decode(lat, torch.rand(3, 5, 2))


def test_simple_mamba_ginr_quickstart(seed):
    model = SimpleMambaGINR(input_dim=3, hidden_dim=32, output_dim=3, num_lp=8, mamba_depth=1)
    feats = torch.randn(2, 256, 3)
    out = model(feats, make_grid((32, 32)).expand(2, -1, -1))
    assert out.shape == (2, 1024, 3)
    assert model.tokenize(torch.rand(2, 3, 16, 16)).shape == (2, 256, 3)
    assert model.lps.shape == (8, 32)


def test_checkpoint_round_trip_and_errors(tmp_path, seed):
    m = small_model()
    p = tmp_path / "m.pt"
    save_checkpoint(p, m, train_state={"step": 7})
    m2, ckpt = load_checkpoint(p)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(m2.render(x, 32), m.render(x, 32)) and ckpt["train_state"]["step"] == 7
    # truncated
    (tmp_path / "cut.pt").write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    # not a checkpoint
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="not a MAMBA-GINR checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")
    # config that does not match the weights
    bad = torch.load(p, weights_only=True)
    bad["config"]["dim"] = 24
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match the stored weights"):
        load_checkpoint(tmp_path / "bad.pt")


def test_save_is_atomic(tmp_path, monkeypatch, seed):
    m = small_model()
    p = tmp_path / "last.pt"
    save_checkpoint(p, m, train_state={"step": 1})

    def dying_save(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, small_model(), train_state={"step": 2})
    monkeypatch.undo()
    _, ckpt = load_checkpoint(p)
    assert ckpt["train_state"]["step"] == 1


def test_input_skip_is_a_residual_over_the_bicubic_baseline(seed):
    from ginr_common.baselines import sample_bicubic

    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    for s in (32, 64, 96):  # the same kernel and pixel-centre convention as the bicubic baseline
        a = sample_bicubic(x, make_grid((s, s), dtype=torch.float64).expand(2, -1, -1))
        b = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        assert torch.allclose(a.transpose(1, 2).reshape(2, 3, s, s), b, atol=1e-12)
    model = MambaGINR(GINRConfig(**SMALL, input_skip=True))
    torch.nn.init.zeros_(model.decoder.head[1].weight)
    torch.nn.init.zeros_(model.decoder.head[1].bias)
    img = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.render(img, 64), F.interpolate(img, size=(64, 64), mode="bicubic"), atol=1e-5)
    with pytest.raises(ValueError, match="pass images="):
        model.decode(model.encode(img), make_grid((4, 4)))


def test_checkpoints_with_the_older_decoder_kwargs_still_load(tmp_path, seed):
    """Checkpoints written before decoders had typed configs (decoder="lainr", decoder_kwargs={...})."""
    m = small_model()
    save_checkpoint(tmp_path / "m.pt", m)
    old = torch.load(tmp_path / "m.pt", weights_only=True)
    dec = old["config"].pop("decoder")
    old["config"]["decoder"], old["config"]["decoder_kwargs"] = dec.pop("kind"), dec
    torch.save(old, tmp_path / "old.pt")
    again, _ = load_checkpoint(tmp_path / "old.pt")
    assert again.config.decoder == m.config.decoder
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(again.render(x, 16), m.render(x, 16))
    old["config"]["decoder_kwargs"]["hiden"] = 3
    torch.save(old, tmp_path / "typo.pt")
    with pytest.raises(ValueError, match="cannot rebuild its model.*hiden"):
        load_checkpoint(tmp_path / "typo.pt")


def test_bad_inputs_are_answered_with_clear_errors(seed):
    m = small_model().eval()
    x = torch.rand(1, 3, 32, 32)
    nan = x.clone()
    nan[0, 1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="images must be finite"):
        m.render(nan, 32)
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*255"):
        m.render(x * 255, 32)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        m.render(x - 0.5, 32)
    with pytest.raises(TypeError, match="uint8"):
        m.render((x * 255).to(torch.uint8), 32)
    with torch.no_grad():   # float64 images are cast, not a dtype error deep inside
        assert torch.allclose(m.render(x.double(), 32), m.render(x, 32))
        lat = m.encode(x)
        with pytest.raises(ValueError, match="coords must be finite"):
            m.decode(lat, torch.tensor([[0.5, float("nan")]]))
        # outside [0, 1] is extrapolation: finite values, no error
        assert torch.isfinite(m.decode(lat, torch.tensor([[-0.2, 1.3]]))).all()


def test_render_image_of_any_size_and_scale(seed):
    """One tile (an image of the input size): exactly model.render. Larger images: every output
    pixel is covered, a constant image stays constant, and a non-integer scale gives its size."""
    model = small_model().eval()
    x = torch.rand(3, 32, 32)
    assert torch.allclose(render_image(model, x, size=(40, 40)), model.render(x[None], (40, 40))[0].clamp(0, 1),
                          atol=1e-5)
    big = torch.rand(3, 70, 45)
    y = render_image(model, big, scale=3.7)
    assert y.shape == (3, 259, 166) and torch.isfinite(y).all()
    # the blend is a convex combination of the tiles' predictions: with all tiles predicting the
    # same constant, the output is that constant everywhere (no seam, no hole)
    const = lambda latents, coords, images=None, cell=None: torch.full((1, coords.shape[0], 3), 0.25)  # noqa: E731
    model.decode = const
    assert torch.allclose(render_image(model, big, size=(100, 61)), torch.full((3, 100, 61), 0.25))
    with pytest.raises(ValueError, match="exactly one of size= or scale="):
        render_image(model, big)
    with pytest.raises(ValueError, match="at least the model's input size"):
        render_image(model, torch.rand(3, 20, 40), scale=2)


def test_the_lp_latent_decodes_from_its_lps_alone_and_shows_each_lps_footprint(seed):
    """With the decoder reading the LPs only, nothing but the LP latent reaches the output: the
    latent is (B, M, dim) and decoding needs no image; replacing one LP changes the field only
    around that LP's home (the local decoder reads the 2x2 LPs around a query), which is what
    ``viz.lp_footprint_figure`` draws; a model whose decoder reads the tokens is refused by name."""
    import matplotlib

    matplotlib.use("Agg")
    from ginr_common import viz
    from ginr_common.decoders import LocalConfig

    cfg = GINRConfig(dim=16, depth=1, num_lp=16, d_state=4, pixel_filter=0, lp_content=True,
                     decoder=LocalConfig(hidden=32, n_blocks=1, sources=("lps",)))
    model = MambaGINR(cfg).eval()
    x = torch.rand(1, 3, 32, 32)
    z = model.encode(x)
    assert z.shape == (1, 16, 16)
    grid = make_grid((32, 32))
    out = model.decode(z, grid)                      # no image needed
    swapped = z.clone()
    swapped[:, 5] = z[0].mean(0)
    change = (model.decode(swapped, grid) - out).abs().sum(-1)[0].reshape(32, 32)
    home = (model.lp_coords[5] * 32).long()          # LP 5: lattice (1, 1), home at pixel (12, 12)
    far = change.clone()
    far[max(0, home[0] - 16):home[0] + 16, max(0, home[1] - 16):home[1] + 16] = 0
    assert change.max() > 0 and far.max() == 0
    fig = viz.lp_footprint_figure(model, x[0], lps=[5, 10])
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="needs a model that decodes from its LPs alone"):
        viz.lp_footprint_figure(MambaGINR(GINRConfig(dim=16, depth=1, num_lp=16, d_state=4, pixel_filter=0)), x[0])
    fig = viz.ablation_figure({"a": {"test_psnr": [30.0, 0.1], "x2_model": [25.0, 0.2]},
                               "b": {"test_psnr": [31.0, 0.0], "x2_model": [24.0, 0.1]}}, title="t")
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]
