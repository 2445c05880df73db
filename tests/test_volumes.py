"""3-D volumes: reading .npy / .npz / NIfTI volumes and their errors, the MNI152 slabs, resizing,
augmentation, the trilinear baseline, rendering in chunks, the slice figure, and the command line
on a folder of volumes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ginr_common.baselines import sample_upsample, upsample
from ginr_common.data import (MNI_SLABS, augment, build_image_set, load_dataset, load_mni152, mni152_files,
                              read_volume, resize)
from ginr_common.fourier import make_grid
from ginr_common.model import GINRConfig, MambaGINR

SMALL = GINRConfig(input_size=(8, 8, 8), in_channels=1, patch_size=2, dim=16, depth=1, num_lp=8, d_state=4,
                   pixel_filter=2, input_skip=True)


def test_volumes_are_read_from_npy_npz_and_nifti(tmp_path):
    """(D, H, W) and (C, D, H, W) arrays, uint8 or floats in [0, 1]; NIfTI scaled by its 99.9th
    percentile; every bad volume is named with what was expected."""
    import nibabel

    g = np.random.default_rng(0)
    vol = g.random((6, 7, 8), dtype=np.float32)
    np.save(tmp_path / "a.npy", (vol * 255).round().astype(np.uint8))
    np.savez(tmp_path / "b.npz", vol[None])
    assert torch.allclose(read_volume(tmp_path / "a.npy"), torch.from_numpy(vol)[None], atol=1 / 255)
    assert torch.equal(read_volume(tmp_path / "b.npz"), torch.from_numpy(vol)[None])
    assert read_volume(tmp_path / "b.npz", channels=3).shape == (3, 6, 7, 8)      # one channel repeated
    mri = (vol * 1000).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(mri, np.eye(4)), tmp_path / "c.nii.gz")
    x = read_volume(tmp_path / "c.nii.gz")
    assert x.shape == (1, 6, 7, 8) and float(x.max()) == 1.0
    assert torch.allclose(x[0], torch.from_numpy(np.clip(mri / np.percentile(mri, 99.9), 0, 1)), atol=1e-6)
    np.save(tmp_path / "flat.npy", vol[0])
    with pytest.raises(ValueError, match=r"flat.npy: a volume must be \(D, H, W\) or \(C, D, H, W\), got .* \(7, 8\)"):
        read_volume(tmp_path / "flat.npy")
    np.save(tmp_path / "hot.npy", vol * 3)
    with pytest.raises(ValueError, match="hot.npy"):
        read_volume(tmp_path / "hot.npy")
    (tmp_path / "broken.nii").write_bytes(b"not a volume")
    with pytest.raises(ValueError, match="broken.nii: not a readable volume"):
        read_volume(tmp_path / "broken.nii")
    np.save(tmp_path / "two.npy", np.stack([vol, vol]))
    with pytest.raises(ValueError, match="two.npy: 2 channels, the model reads 1"):
        read_volume(tmp_path / "two.npy")


def test_volume_resize_averages_down_and_interpolates_trilinearly_up():
    x = torch.rand(2, 1, 8, 6, 4, dtype=torch.float64)
    pooled = x.reshape(2, 1, 4, 2, 3, 2, 2, 2).mean((3, 5, 7))
    assert torch.allclose(resize(x, (4, 3, 2)), pooled)
    up = resize(x, (16, 12, 8))
    assert torch.allclose(up, upsample(x, (16, 12, 8)))
    # trilinear at coordinates is the same interpolation read anywhere
    q = make_grid((16, 12, 8), dtype=torch.float64).expand(2, -1, -1)
    assert torch.allclose(sample_upsample(x, q), up.flatten(2).transpose(1, 2))


def test_volume_augmentation_flips_axes_and_keeps_values():
    x = torch.rand(6, 1, 4, 5, 6)
    out = augment(x, torch.Generator().manual_seed(0))
    for a, b in zip(x, out):
        assert any(torch.equal(b, a.flip(dims)) for dims in ([], [1], [2], [3], [1, 2], [1, 3], [2, 3], [1, 2, 3]))
    assert not torch.equal(out, x)


def test_mni152_splits_are_disjoint_slabs_of_real_mri(tmp_path):
    """Each test and validation HR crop is the T1 template at a position inside its own slab (the
    slabs do not overlap), and the tiles hold brain, not background."""
    sets = load_mni152(tmp_path, (16, 16, 16), progress=False)
    t1 = read_volume(mni152_files()["t1"])
    (lo_t, hi_t), (lo_v, hi_v), (lo_tr, _) = MNI_SLABS["test"], MNI_SLABS["val"], MNI_SLABS["train"]
    assert hi_t <= lo_v and hi_v <= lo_tr
    for split, (lo, hi) in (("test", MNI_SLABS["test"]), ("val", MNI_SLABS["val"])):
        slab = (t1[:, :, lo:hi] * 255).round().to(torch.uint8)
        crops = sets[split]["hr"]
        assert len(crops) > 0 and crops.shape[2:] == (32, 32, 32)
        windows = slab.unfold(1, 32, 16).unfold(2, 32, 16).unfold(3, 32, 16).reshape(-1, 32, 32, 32)
        for c in crops:
            assert any(torch.equal(c[0], w) for w in windows), f"a {split} crop outside its slab"
    assert (sets["test"]["tiles"].float() / 255 > 0.05).float().mean((1, 2, 3, 4)).min() >= 0.25
    ds = load_dataset("mni152", root=tmp_path, size=(16, 16, 16), channels=1)
    assert ds["train_hr"][0][0].shape == (1, 32, 32, 32) and ds["test_sr"][0].shape[2:] == (16, 16, 16)
    with pytest.raises(ValueError, match=r"model.input_size must be \[S, S, S\]"):
        load_mni152(tmp_path, (16, 16), progress=False)


def test_volume_rendering_is_chunked_and_the_figure_shows_three_planes(seed):
    from ginr_common.viz import volume_figure

    model = MambaGINR(SMALL).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    with torch.no_grad():
        whole = model.render(x, (12, 16, 16))
        model.config.query_chunk = 100
        chunked = model.render(x, (12, 16, 16))
    assert whole.shape == (2, 1, 12, 16, 16) and torch.allclose(whole, chunked, atol=1e-6)
    fig = volume_figure(x, {16: (upsample(x, (16,) * 3), chunked[:, :, :, :, :], None)})
    assert len(fig.axes) == 3 * 3


def test_a_folder_of_npy_volumes_trains_evaluates_and_renders_at_64(tmp_path):
    """The command line on a folder of (1, 32, 32, 32) .npy volumes: train (at one scale with the
    recon task: the volumes are no larger than the input; the multi-scale default is refused
    naming the fix),
    evaluate (PSNR reported), render one latent at 64^3; volumes of mixed shapes are refused."""
    from ginr_common.checkpoints import load_checkpoint

    g = np.random.default_rng(0)
    folder = tmp_path / "vols"
    zz, yy, xx = np.meshgrid(*[np.linspace(0, 1, 32)] * 3, indexing="ij")
    for i in range(8):
        split = "train" if i < 6 else "val" if i == 6 else "test"
        (folder / split).mkdir(parents=True, exist_ok=True)
        f = 0.5 + 0.4 * np.sin(2 * np.pi * ((i % 3 + 1) * zz + yy * (i % 2 + 1) + xx) + i)
        np.save(folder / split / f"v{i}.npy", (f + 0.02 * g.standard_normal(f.shape)).clip(0, 1)[None].astype(np.float32))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args, module="ginr_common.train", check=True):
        r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0 or not check, r.stderr[-3000:]
        return r

    size = ["--set", "model.input_size=[32, 32, 32]"]            # the smoke profile's is 16^3
    r = run("--config", "volume", "--profile", "smoke", "--data", str(folder), "--out", str(tmp_path / "no"), *size,
            check=False)
    assert r.returncode != 0 and "--set task=recon --set 'sr_scales=[]'" in r.stderr
    one_scale = [*size, "--set", "task=recon", "--set", "sr_scales=[]"]
    run("--config", "volume", "--profile", "smoke", "--data", str(folder), "--out", str(tmp_path / "run"),
        *one_scale, "--set", "steps=10")
    run("--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(folder), module="ginr_common.evaluate")
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert ev["test"]["n"] > 0 and ev["test"]["psnr"] > 5 and ev["input_size"] == 32   # input_skip: exact at init
    model, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    v = torch.from_numpy(np.load(folder / "test" / "v7.npy"))[None]
    with torch.no_grad():
        assert model.render(v, (64, 64, 64)).shape == (1, 1, 64, 64, 64)
    np.save(folder / "train" / "v9.npy", np.zeros((1, 16, 32, 32), np.float32))
    r = run("--config", "volume", "--profile", "smoke", "--data", str(folder), "--out", str(tmp_path / "mixed"),
            *one_scale, check=False)
    assert r.returncode != 0 and "mixed shapes" in r.stderr
