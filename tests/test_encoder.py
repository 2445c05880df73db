import pytest
import torch

from ginr_common import FourierFeatures, GaussianFourierFeatures, MambaEncoder, PatchTokenizer, make_grid


def test_make_grid_pixel_centres():
    g = make_grid((2, 4))
    assert g.shape == (8, 2)
    assert torch.allclose(g[:4, 0], torch.full((4,), 0.25)) and torch.allclose(g[:4, 1], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert make_grid(3).shape == (3, 1) and make_grid((2, 2, 2)).shape == (8, 3)
    with pytest.raises(ValueError):
        make_grid((0, 3))


def test_patchify_2d_and_3d_match_explicit_loops(seed):
    tok = PatchTokenizer((4, 6), 2, 3, dim=8)
    x = torch.randn(2, 3, 4, 6)
    p = tok.patchify(x)
    assert p.shape == (2, 6, 12)
    assert torch.equal(p[:, 1 * 3 + 2], x[:, :, 2:4, 4:6].reshape(2, -1))  # patch (row 1, col 2)
    assert torch.allclose(tok.centres[1 * 3 + 2], torch.tensor([0.75, 5 / 6]))
    tok3 = PatchTokenizer((4, 4, 6), (2, 2, 3), 1, dim=8)
    v = torch.randn(1, 1, 4, 4, 6)
    p3 = tok3.patchify(v)
    assert p3.shape == (1, 8, 12)
    assert torch.equal(p3[0, 7], v[0, :, 2:4, 2:4, 3:6].reshape(-1))


def test_tokenizer_errors():
    with pytest.raises(ValueError, match=r"\(30, 32\) is not divisible by patch size \(4, 4\)"):
        PatchTokenizer((30, 32), 4, 3, dim=8)
    tok = PatchTokenizer((8, 8), 2, 3, dim=8)
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 8, 8\)"):
        tok(torch.randn(1, 3, 8, 9))


@pytest.mark.parametrize("size, patch, ch", [((16, 16), 2, 3), ((8, 8, 8), 2, 1)])
def test_encoder_2d_and_3d(size, patch, ch, seed):
    enc = MambaEncoder(size, ch, patch, dim=16, depth=2, num_lp=8, d_state=4)
    x = torch.rand(2, ch, *size)
    z = enc(x)
    assert z.shape == (2, 8, 16)
    z.square().mean().backward()
    assert enc.lp.lps.grad is not None and enc.lp.lps.grad.abs().sum() > 0
    assert enc.tokenizer.embed.weight.grad.abs().sum() > 0
    assert enc.lp_coords.shape == (8, len(size))
    # a different image gives a different latent
    assert not torch.allclose(enc(torch.rand(2, ch, *size)), z)


def test_encoder_state_dict_round_trip_keeps_buffers(seed):
    enc = MambaEncoder((8, 8), 3, 2, dim=16, depth=1, num_lp=4, d_state=4)
    sd = enc.state_dict()
    assert "tokenizer.pos_enc" in sd
    torch.manual_seed(123)
    enc2 = MambaEncoder((8, 8), 3, 2, dim=16, depth=1, num_lp=4, d_state=4)
    enc2.load_state_dict(sd)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(enc(x), enc2(x))


def test_fourier_features(seed):
    ff = FourierFeatures(2, 4)
    c = torch.rand(5, 2)
    out = ff(c)
    assert out.shape == (5, ff.out_dim) == (5, 2 + 16)
    assert torch.allclose(out[:, 2 + 3], torch.sin(torch.pi * 2.0 ** 3 * c[:, 0]), atol=1e-5)
    # B ~ N(0, sigma^2): randn * sigma, not randn / sigma. 8192 draws: std within 9.5..10.5
    # is more than 6 standard errors (~0.08) from failing by chance.
    assert 9.5 < GaussianFourierFeatures(2, 4096, sigma=10.0).B.std() < 10.5
    g = GaussianFourierFeatures(2, 16, sigma=10.0)
    x = 2 * torch.pi * c @ g.B.t()
    assert torch.allclose(g(c), torch.cat([x.sin(), x.cos()], -1))
    assert "B" in g.state_dict()
    assert isinstance(GaussianFourierFeatures(2, 4, learnable=True).B, torch.nn.Parameter)
    with pytest.raises(ValueError, match="end in 2 dims"):
        ff(torch.rand(3, 3))


def test_fourier_features_stay_float32_under_autocast(seed):
    """Under bfloat16 autocast the phases (up to hundreds of radians) would lose their fraction."""
    coords = torch.rand(4, 500, 2)
    for ff in (FourierFeatures(2, 16, max_freq=32), GaussianFourierFeatures(2, 64, sigma=8.0)):
        ref = ff(coords)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = ff(coords)
            out_bf16_in = ff(coords.bfloat16())
        assert out.dtype == torch.float32
        assert (out - ref).abs().max() < 1e-5
        # bfloat16 coordinates carry their own rounding; the features are still computed in float32
        assert out_bf16_in.dtype == torch.float32
        assert torch.allclose(out_bf16_in, ff(coords.bfloat16().float()), atol=1e-5)


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("size, patch, num_lp", [((32, 32), 4, 16), ((32, 32), 4, 64), ((32, 32), 4, 256),
                                                 ((8, 8, 8), 2, 8)])
def test_curve_order_puts_each_lp_beside_its_cells_tokens_and_returns_raster_order(size, patch, num_lp, seed):
    """With order="curve" the sequence reads LP j, then the tokens of LP j's lattice cell (fewer LPs than
    tokens) or the LPs of a token's cell, then that token (more); the encoder still returns the LPs by
    home (``lp_coords``) and the tokens in raster order: with the stack taken out, exactly the inputs."""
    from ginr_common.encoder import sequence_order

    enc = MambaEncoder(size, 1, patch, dim=8, depth=1, num_lp=num_lp, d_state=4, order="curve")
    n = enc.tokenizer.num_patches
    lp_pos, tok_pos, _ = enc.lp.indices(n)
    homes, centres = enc.lp_coords[enc.lp_order], enc.tokenizer.centres[enc.token_order]
    fine, coarse = (enc.tokenizer.grid, enc.lattice) if num_lp <= n else (enc.lattice, enc.tokenizer.grid)
    cell = lambda p, g: tuple((p * torch.tensor(g)).floor().long().tolist())  # noqa: E731
    for j, pos in enumerate(tok_pos.tolist()):
        k = int((lp_pos < pos).sum()) - 1       # the LP read last before token j
        if num_lp <= n:
            assert cell(homes[k], coarse) == cell(centres[j], coarse)
    if num_lp > n:
        for k, pos in enumerate(lp_pos.tolist()):
            j = int((tok_pos < pos).sum())      # the token read next after LP k
            assert cell(homes[k], coarse) == cell(centres[j], coarse)
    assert fine  # both grids exist
    enc.stack = _Identity()
    x = torch.rand(2, 1, *size)
    lps, tokens = enc(x, with_tokens=True)
    assert torch.equal(tokens, enc.tokenizer(x))
    assert torch.equal(lps, enc.lp.lps[enc.lp_inverse].expand(2, -1, -1))
    assert torch.equal(sequence_order(enc.tokenizer.centres, "raster"), torch.arange(n))
    with pytest.raises(ValueError, match=r"order must be one of \('raster', 'curve'\), got 'hilbert'"):
        MambaEncoder(size, 1, patch, dim=8, depth=1, num_lp=num_lp, order="hilbert")


@pytest.mark.parametrize("order", ["raster", "curve"])
@pytest.mark.parametrize("num_lp", [16, 64, 256])
def test_lp_content_starts_each_lp_from_its_cells_patches(order, num_lp, seed):
    """With lp_content, LP i enters the sequence as its learned vector plus a projection of the mean
    embedding of the patches in its lattice cell (or of the patch holding its home, with more LPs
    than patches): checked against a loop over the pixels, with the stack taken out."""
    enc = MambaEncoder((32, 32), 3, 4, dim=8, depth=1, num_lp=num_lp, d_state=4, order=order, lp_content=True)
    enc.stack = _Identity()
    x = torch.rand(2, 3, 32, 32)
    lps = enc(x)
    emb = enc.tokenizer(x)                                  # raster order
    ly, lx = enc.lattice
    for i in (0, num_lp // 3, num_lp - 1):
        hy, hx = enc.lp_coords[i].tolist()
        if num_lp <= 64:       # the patches whose centres fall in LP i's cell
            members = [j for j, (cy, cx) in enumerate(enc.tokenizer.centres.tolist())
                       if int(cy * ly) == int(hy * ly) and int(cx * lx) == int(hx * lx)]
        else:                  # the patch holding LP i's home
            members = [int(hy * 8) * 8 + int(hx * 8)]
        want = enc.lp.lps[enc.lp_inverse[i]] + enc.lp_content(emb[:, members].mean(1))
        assert torch.allclose(lps[:, i], want, atol=1e-6), i
    assert len(members) == max(1, 64 // num_lp)


def test_a_moving_average_of_the_weights_keeps_the_sequence_order(seed):
    """The order's index tensors are not buffers: a moving average of the weights (which averages
    buffers, rounding integer ones) leaves the curve order intact, so the averaged encoder equals
    a copy with the same weights."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    enc = MambaEncoder((32, 32), 3, 4, dim=8, depth=1, num_lp=16, d_state=4, order="curve", lp_content=True)
    ema = AveragedModel(enc, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        ema.update_parameters(enc)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ema.module(x), enc(x), atol=1e-6)
    assert torch.equal(ema.module.token_order, enc.token_order)
