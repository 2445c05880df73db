"""Training engine: smoke run, exact resume after a hard kill, NaN stop, DDP with 2 gloo processes,
evaluation reproducing the recorded metrics."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ginr_common.evaluate import evaluate_reconstruction, psnr, ssim
from ginr_common.model import load_checkpoint
from ginr_common.train import batch_indices, fit, get_config, lr_factor

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GINR_TEST_THREADS": "1"}


def cli(*args, env=None, check=True):
    r = subprocess.run([sys.executable, "-m", "ginr_common.train", "--profile", "smoke", *args],
                       capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_schedule_and_batches():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5) and lr_factor(100, 10, 100) == pytest.approx(0.0)
    b = batch_indices(3, 100, 8, seed=0)
    assert b == batch_indices(3, 100, 8, seed=0) and len(set(b)) == 8
    shards = [batch_indices(3, 100, 8, 0, r, 2) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(b) and not set(shards[0]) & set(shards[1])


def test_smoke_training_learns_and_writes_everything(tmp_path):
    cli("--out", str(tmp_path), "--steps", "40")
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["steps"] == 40 and m["best_step"] in (10, 20, 30, 40)
    first, last = m["history"][0]["loss"], sum(h["loss"] for h in m["history"][-5:]) / 5
    assert last < 0.7 * first, (first, last)
    model, ckpt = load_checkpoint(tmp_path / "best.pt")
    from ginr_common.data import load_dataset

    val = evaluate_reconstruction(model, load_dataset("photos")["val"], with_ssim=False)
    assert val["psnr"] == pytest.approx(m["best_val_psnr"], abs=1e-4)  # evaluation reproduces training's number
    r = subprocess.run([sys.executable, "-m", "ginr_common.evaluate", "--checkpoint", str(tmp_path / "best.pt"),
                        "--sizes", "64", "128"], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert set(ev["super_resolution"]) == {"64", "128"} and ev["test"]["n"] > 0
    assert (tmp_path / "sr.png").stat().st_size > 10_000


def test_resume_after_hard_kill_matches_uninterrupted_run(tmp_path):
    cli("--out", str(tmp_path / "a"))
    r = cli("--out", str(tmp_path / "b"), env={"GINR_KILL_AFTER_STEP": "13"}, check=False)
    assert r.returncode != 0  # killed
    _, mid = load_checkpoint(tmp_path / "b" / "last.pt")
    assert mid["train_state"]["step"] == 10
    cli("--out", str(tmp_path / "b"), "--resume")
    a, ca = load_checkpoint(tmp_path / "a" / "last.pt")
    b, cb = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ca["train_state"]["step"] == cb["train_state"]["step"] == 20
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = get_config("standard_fourier", "smoke")
    cfg.steps, cfg.ckpt_every, cfg.val_every = 8, 3, 100
    from ginr_common.data import load_dataset

    data = load_dataset("photos")
    poisoned = {"train": [(x * float("nan"), y) if i % 2 else (x, y) for i, (x, y) in
                          ((i, data["train"][i]) for i in range(64))], "val": data["val"]}
    # every odd image is NaN: the first batch that holds one gives a NaN loss
    with pytest.raises(FloatingPointError, match=r"at step 1\b"):
        fit(cfg, datasets=poisoned, out=tmp_path, progress=False)
    clean = {"train": [data["train"][i] for i in range(64)], "val": data["val"]}
    fit(cfg, datasets=clean, out=tmp_path, progress=False)
    cfg.steps = 12
    with pytest.raises(FloatingPointError, match=r"at step 9\b"):
        fit(cfg, datasets=poisoned, out=tmp_path, resume=True, progress=False)
    model, ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["train_state"]["step"] == 8
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_ddp_two_gloo_processes_end_identical(tmp_path):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29531", "-m", "ginr_common.train", "--profile", "smoke", "--steps", "6",
                        "--out", str(tmp_path / "ck"), "--dump-weights", str(tmp_path / "w")],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / "w" / f"rank{i}.pt", weights_only=True) for i in range(2))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    m = json.loads((tmp_path / "ck" / "metrics.json").read_text())
    assert m["processes"] == 2 and m["steps"] == 6
    # and the weights changed from initialisation
    init = get_config("standard_fourier", "smoke")
    from ginr_common.model import MambaGINR

    torch.manual_seed(init.seed)
    w_init = MambaGINR(init.model).state_dict()
    assert any(not torch.equal(w_init[k], w0[k]) for k in w0)


def test_metrics():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(psnr(x, x), torch.full((3,), 120.0))  # mse floored at 1e-12
    # predictions are clamped to [0, 1] before the error: 2.0 -> 1.0, error 0.1 -> 20 dB
    assert psnr(torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 4, 4), 0.9)).item() == pytest.approx(20.0, abs=1e-3)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert (ssim(torch.full_like(x, 0.5), x) < 0.2).all()


def test_sr_batches_are_reproducible_and_supervise_hr(seed):
    from ginr_common.data import ImageTensorDataset, resize
    from ginr_common.fourier import make_grid
    from ginr_common.train import batch_indices, make_batch

    cfg = get_config("gaussian_fourier", "smoke")
    assert not cfg.augment and cfg.jitter > 0 and cfg.sr_scales
    ds = ImageTensorDataset((torch.rand(10, 3, 128, 128) * 255).to(torch.uint8))
    for step in (3, 4, 11):
        a, b = make_batch(cfg, ds, step), make_batch(cfg, ds, step)
        assert all(torch.equal(x, y) for x, y in zip(a[:3], b[:3]))  # a pure function of the step
        images, queries, target, n_lr = a
        hr = torch.stack([ds[i][0] for i in batch_indices(step, len(ds), cfg.batch_size, cfg.seed)])
        assert torch.equal(images, resize(hr, (32, 32))) and n_lr == 32 * 32
        assert queries.shape == (cfg.batch_size, n_lr + cfg.sr_queries, 2) == target.shape[:2] + (2,)
        # LR part: the input's own pixels, at pixel centres shifted by one offset for the batch
        assert torch.equal(target[:, :n_lr], images.flatten(2).transpose(1, 2))
        off = queries[:, :n_lr] - make_grid((32, 32))
        assert 0 < off.abs().max() < 1 / 32 and torch.allclose(off, off[:1, :1].expand_as(off))
        # HR part: exact pixel centres of one trained scale's grid, with that resized image's values
        hq = queries[0, n_lr:]
        scale = [s for s in cfg.sr_scales if ((hq * 32 * s - 0.5) - (hq * 32 * s - 0.5).round()).abs().max() < 1e-4]
        assert len(scale) == 1
        s = scale[0]
        idx = ((hq * 32 * s - 0.5).round().long() * torch.tensor([32 * s, 1])).sum(-1)
        hr_s = hr if s == 4 else resize(hr, (32 * s, 32 * s))
        assert torch.allclose(target[:, n_lr:], hr_s.flatten(2).transpose(1, 2)[:, idx])
        assert len(set(idx.tolist())) == cfg.sr_queries


@pytest.mark.parametrize("name", ["gaussian_fourier", "scent"])
def test_every_config_trains_and_its_checkpoint_reproduces_validation(name, tmp_path):
    from ginr_common.train import validate

    cfg = get_config(name, "smoke")
    m = fit(cfg, out=tmp_path, progress=False)
    assert m["steps"] == cfg.steps and m["config"] == name
    first, last = m["history"][0]["loss"], sum(h["loss"] for h in m["history"][-5:]) / 5
    assert last < first, (first, last)
    model, ckpt = load_checkpoint(tmp_path / "best.pt")
    from ginr_common.data import load_dataset

    assert validate(model, cfg, load_dataset("photos")) == pytest.approx(m["best_val_psnr"], abs=1e-4)
    # resuming into a folder that holds another config is refused, naming both
    other = get_config("standard_fourier", "smoke")
    with pytest.raises(ValueError, match="cannot resume"):
        fit(other, out=tmp_path, resume=True, progress=False)
