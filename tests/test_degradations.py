import pytest
import torch

from ginr_common.configs import get_config, with_settings
from ginr_common.data import ImageTensorDataset, resize
from ginr_common.degradations import EVALUATED, KINDS, degrade, random_degradation


def test_each_degradation_is_what_its_name_says(seed):
    hr = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    box = hr.reshape(2, 3, 8, 4, 8, 4).mean((3, 5))                       # the average of each 4x4 footprint
    assert torch.allclose(degrade(hr, (8, 8), "box"), box, atol=1e-12)
    assert torch.equal(degrade(hr, (8, 8), "bicubic"), resize(hr, (8, 8)))  # what the data sets' inputs are
    bil = degrade(hr, (8, 8), "bilinear")
    assert bil.shape == (2, 3, 8, 8) and not torch.allclose(bil, box, atol=1e-3)
    flat = torch.full((1, 3, 32, 32), 0.5, dtype=torch.float64)
    assert torch.allclose(degrade(flat, (8, 8), "box", blur=1.0), flat[..., :8, :8], atol=1e-12)  # blur keeps DC
    assert degrade(hr, (8, 8), "box", blur=1.0).std() < box.std()           # and removes detail
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    noisy = degrade(flat, (8, 8), "box", noise=0.02, generator=g())
    assert torch.equal(noisy, degrade(flat, (8, 8), "box", noise=0.02, generator=g()))
    assert 0.015 < float((noisy - 0.5).std()) < 0.025


def test_bad_degradations_are_named():
    with pytest.raises(ValueError, match=r"images \(B, C, H, W\), got shape \(3, 8, 8\)"):
        degrade(torch.rand(3, 8, 8), (4, 4))
    with pytest.raises(ValueError, match="kind must be one of"):
        degrade(torch.rand(1, 3, 8, 8), (4, 4), "lanczos")
    with pytest.raises(ValueError, match="blur and noise must be >= 0"):
        degrade(torch.rand(1, 3, 8, 8), (4, 4), blur=-1)


@pytest.mark.parametrize("blur_share", [0.0, 0.5])
def test_random_degradations_are_reproducible_and_drawn_in_their_shares(seed, blur_share):
    from ginr_common.degradations import KIND_SHARES, P_NOISE

    n = 1600
    hr = torch.rand(n, 3, 16, 16)
    a = random_degradation(hr, (4, 4), torch.Generator().manual_seed(seed), blur_share)
    assert torch.equal(a, random_degradation(hr, (4, 4), torch.Generator().manual_seed(seed), blur_share))
    plain = {k: degrade(hr, (4, 4), k) for k in KINDS}
    exact = {k: sum(torch.equal(a[i], plain[k][i]) for i in range(n)) for k in KINDS}   # neither blur nor noise
    share = (1 - blur_share) * (1 - P_NOISE)
    for k in KINDS:      # each kind drawn in its share (4 standard deviations of a binomial count)
        p = KIND_SHARES[k] * share
        assert abs(exact[k] - n * p) < 4 * (n * p * (1 - p)) ** 0.5, (k, exact[k], n * p)
    with pytest.raises(ValueError, match=r"blur_share is the share of the images blurred, in \[0, 1\], got 1.5"):
        random_degradation(hr, (4, 4), torch.Generator(), 1.5)


def test_training_on_random_degradations(seed):
    from ginr_common.tasks import make_task

    cfg = with_settings(get_config("gaussian_fourier", "smoke"), {"options.degrade": True})
    task = make_task(cfg)
    hr = ImageTensorDataset((torch.rand(16, 3, 128, 128) * 255).to(torch.uint8))
    b1, b2 = task.batch(hr, 3), task.batch(hr, 3)
    assert torch.equal(b1["images"], b2["images"])                      # a step's batch is reproducible
    plain = make_task(get_config("gaussian_fourier", "smoke")).batch(hr, 3)
    assert b1["images"].shape == plain["images"].shape and not torch.equal(b1["images"], plain["images"])
    # the input grid's target is the antialiased downsample of the crops, not the degraded input
    from ginr_common.fourier import make_grid
    crops, _, _ = task.images(hr, 3)
    clean = resize(crops, cfg.model.input_size).flatten(2).transpose(1, 2)
    n = cfg.options.lr_queries
    idx = (b1["queries"][0, :n, None] - make_grid(cfg.model.input_size)[None]).abs().sum(-1).argmin(-1)
    assert torch.equal(b1["target"][:, :n], clean[:, idx])
    assert not torch.equal(b1["images"].flatten(2).transpose(1, 2)[:, idx], clean[:, idx])
    # options.degrade_blur blurs that share of the inputs (all of them: every image differs from none of them)
    blurred, sharp = (make_task(with_settings(cfg, {"options.degrade_blur": b})).batch(hr, 3)["images"] for b in (1, 0))
    assert all(not torch.equal(x, y) for x, y in zip(blurred, sharp))
    with pytest.raises(ValueError, match="options.degrade makes the inputs from high-resolution crops"):
        with_settings(get_config("standard_fourier", "smoke"), {"options.degrade": True, "sr_scales": []})
    with pytest.raises(ValueError, match=r"options.degrade_blur is the share .* in \[0, 1\], got 1.5"):
        with_settings(get_config("gaussian_fourier", "smoke"), {"options.degrade_blur": 1.5})


def test_evaluation_reports_the_gain_for_each_degradation(seed):
    from ginr_common.model import MambaGINR
    from ginr_common.tasks.recon import evaluate_degradations, evaluate_sr

    cfg = get_config("standard_fourier", "smoke")
    model = MambaGINR(cfg.model).eval()
    hr = torch.rand(3, 3, 128, 128)
    res = evaluate_degradations(model, hr, (32, 32), (64, 128))
    assert set(res) == set(EVALUATED) and all(set(r) == {"64", "128"} for r in res.values())
    same, _ = evaluate_sr(model, resize(hr, (32, 32)), hr, (64, 128), with_ssim=False)
    for s in ("64", "128"):
        assert res["bicubic"][s]["model"] == same[s]["model"]["psnr"]
        assert res["bicubic"][s]["bicubic"] == same[s]["bicubic"]["psnr"]
        assert abs(res["box"][s]["gain"] - (res["box"][s]["model"] - res["box"][s]["bicubic"])) < 1e-9
    assert res["box"]["64"]["bicubic"] != res["bicubic"]["64"]["bicubic"]


def test_super_resolution_trained_on_degradations_validates_on_them(seed):
    """The sr task selects a model trained on random degradations by the mean PSNR over inputs made
    by each of EVALUATED (bicubic-made inputs alone otherwise)."""
    from ginr_common.model import MambaGINR
    from ginr_common.tasks import make_task
    from ginr_common.tasks.recon import evaluate_degradations, evaluate_sr

    plain_cfg = get_config("gaussian_fourier", "smoke")
    cfg = with_settings(plain_cfg, {"options.degrade": True})
    model = MambaGINR(cfg.model).eval()
    hr = torch.rand(3, 3, 128, 128)
    datasets = {"val_sr": (resize(hr, (32, 32)), hr)}
    each = evaluate_degradations(model, hr, (32, 32), (128,))
    assert make_task(cfg).validate(model, datasets) == pytest.approx(
        sum(r["128"]["model"] for r in each.values()) / len(EVALUATED), abs=1e-9)
    plain, _ = evaluate_sr(model, *datasets["val_sr"], (128,), with_ssim=False)
    assert make_task(plain_cfg).validate(model, datasets) == plain["128"]["model"]["psnr"]
