import itertools
import pickle
import tarfile

import numpy as np
import pytest
import torch

from ginr_common.data import (PHOTO_SPLITS, resize, build_photo_set, load_cifar10, load_dataset, load_photos,
                              load_sr_pairs, photo_fingerprint)


def test_photo_splits_are_disjoint_by_photograph():
    names = [n for v in PHOTO_SPLITS.values() for n in v]
    assert len(names) == len(set(names))


def test_photo_set_is_deterministic_and_well_formed():
    sets = load_photos()
    assert photo_fingerprint({"val": build_photo_set(PHOTO_SPLITS["val"])}) == photo_fingerprint({"val": sets["val"]})
    for split, s in sets.items():
        assert s["tiles"].dtype == torch.uint8 and s["tiles"].shape[1:] == (3, 32, 32) and len(s["tiles"]) > 20
        assert s["hr"].shape[1:] == (3, 128, 128) and s["lr"].shape == (len(s["hr"]), 3, 32, 32)
    lr, hr = load_sr_pairs("test")
    assert torch.allclose(lr, resize(hr, (32, 32)), atol=1 / 255 + 1e-6)  # LR = antialiased downsample of HR
    ds = load_dataset("photos")
    x, _ = ds["train"][0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1


def _write_tiny_cifar(root, n=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batches[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(n))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname="cifar-10-batches-py")
    import shutil

    shutil.rmtree(folder)
    return batches


def test_cifar10_loader_on_a_tiny_archive(tmp_path):
    batches = _write_tiny_cifar(tmp_path)
    ds = load_cifar10(tmp_path, download=False, val_size=5)
    assert len(ds["train"]) == 15 and len(ds["val"]) == 5 and len(ds["test"]) == 4
    x, y = ds["test"][1]
    expect = torch.from_numpy(batches["test_batch"][1].reshape(3, 32, 32)).float() / 255
    assert x.shape == (3, 32, 32) and torch.allclose(x, expect) and y == 1
    train_ids = set(ds["train"].indices) | set(ds["val"].indices)
    assert len(train_ids) == 20 and not set(ds["train"].indices) & set(ds["val"].indices)


def test_cifar10_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="put it"):
        load_cifar10(tmp_path, download=False)


def test_augment_is_a_seeded_symmetry_of_each_image(seed):
    from ginr_common.data import augment

    x = torch.rand(6, 3, 8, 8)
    a = augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(5)))  # reproducible per step
    assert not torch.equal(a, x)
    perms = list(itertools.permutations(range(3)))
    for xi, ai in zip(x, a):
        # each output is one of the 8 flips/rotations of its input with its channels reordered
        cands = [torch.rot90(xi, k, (-2, -1)) for k in range(4)]
        cands += [c.flip(-1) for c in cands]
        assert sum(torch.equal(ai, c[list(p)]) for c in cands for p in perms) >= 1
    with pytest.raises(ValueError, match="square"):
        augment(torch.rand(1, 3, 4, 8), torch.Generator())


def photo_crop(i, size, rng):
    """A crop of one of scikit-image's training photographs (real texture), uint8 (size, size, 3)."""
    from skimage import data as photos

    img = [photos.coffee(), photos.rocket(), photos.chelsea()][i % 3]
    y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
    return img[y:y + size, x:x + size]


def mixed_folder(folder, n=9, sizes=(384, 128, 32)):
    """PNGs in RGB, RGBA and grayscale of 384, 128 and 32 pixels; the name split puts a 384-pixel one in test."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.fromarray(photo_crop(i, sizes[i % len(sizes)], rng))
        im = [im, im.convert("RGBA"), im.convert("L")][(i // len(sizes)) % 3]
        im.save(folder / f"img{i:02d}.png")
    return folder


def test_folder_reads_every_format_and_names_what_it_cannot(tmp_path):
    from PIL import Image

    from ginr_common.data import folder_splits, load_folder, read_image

    rgb = photo_crop(0, 40, np.random.default_rng(1))
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "b.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "c.bmp")
    np.save(tmp_path / "d.npy", rgb.transpose(2, 0, 1))                      # (C, H, W) uint8
    np.savez(tmp_path / "e.npz", image=rgb[..., 1].astype(np.float32) / 255)  # (H, W) floats
    x = read_image(tmp_path / "a.png")
    assert x.shape == (3, 40, 40) and torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert torch.equal(read_image(tmp_path / "b.png"), x)                       # alpha dropped
    assert torch.equal(read_image(tmp_path / "d.npy"), x)
    gray = read_image(tmp_path / "c.bmp")
    assert gray.shape == (3, 40, 40) and torch.equal(gray[0], gray[2])          # grayscale repeated
    assert read_image(tmp_path / "c.bmp", channels=1).shape == (1, 40, 40)
    assert torch.allclose(read_image(tmp_path / "e.npz")[1], x[1], atol=1e-6)
    splits = folder_splits(tmp_path)
    assert sorted(p.name for s in splits.values() for p in s) == ["a.png", "b.png", "c.bmp", "d.npy", "e.npz"]
    assert splits == folder_splits(tmp_path) and all(splits.values())           # by name: the same every time
    (tmp_path / "f.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"f.png: not a readable image"):
        load_folder(tmp_path, progress=False)
    (tmp_path / "f.png").unlink()
    np.save(tmp_path / "g.npy", np.full((40, 40), 3.0))
    with pytest.raises(ValueError, match=r"g.npy must hold values in \[0, 1\]"):
        read_image(tmp_path / "g.npy")
    np.save(tmp_path / "g.npy", np.zeros((2, 3, 40, 40)))
    with pytest.raises(ValueError, match=r"g.npy must be \(C, H, W\) or \(H, W\), got shape \(2, 3, 40, 40\)"):
        read_image(tmp_path / "g.npy")
    (tmp_path / "g.npy").unlink()
    with pytest.raises(ValueError, match=r"every (train|val|test) image is smaller than the model's input size 48x48: "):
        load_folder(tmp_path, size=(48, 48), progress=False)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match=r"no image or volume files .* for the train split"):
        folder_splits(tmp_path / "nothing")
    for s in ("train", "val", "test"):                                          # subfolders are the splits
        (tmp_path / "split" / s).mkdir(parents=True)
        Image.fromarray(rgb).save(tmp_path / "split" / s / f"{s}.png")
    assert {s: [p.name for p in f] for s, f in folder_splits(tmp_path / "split").items()} == \
        {"train": ["train.png"], "val": ["val.png"], "test": ["test.png"]}


def test_a_folder_of_mixed_pngs_trains_evaluates_and_renders_at_any_input_size(tmp_path):
    """The command line on a folder of RGB, RGBA and grayscale PNGs of 32, 128 and 256 pixels: train,
    evaluate (PSNR reported); with model.input_size [64, 64], renders of 64x64 inputs at 128x128;
    a resume on a changed folder is refused."""
    import json
    import os
    import subprocess
    import sys

    from ginr_common.checkpoints import load_checkpoint
    from ginr_common.configs import get_config
    from ginr_common.train import fit

    folder = mixed_folder(tmp_path / "mine")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args, module="ginr_common.train"):
        r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    for out, extra in (("run32", []), ("run64", ["--set", "model.input_size=[64, 64]"])):
        r = run("--config", "standard_fourier", "--profile", "smoke", "--data", str(folder), "--out",
                str(tmp_path / out), *extra)
        assert "train" in r.stdout and "tiles of" in r.stdout                   # the split, printed
        assert ("smaller than a tile skipped" in r.stdout) == (out == "run64")  # the 32-pixel images
        run("--checkpoint", str(tmp_path / out / "best.pt"), "--data", str(folder), module="ginr_common.evaluate")
        ev = json.loads((tmp_path / out / "eval.json").read_text())
        assert ev["test"]["n"] > 0 and 5 < ev["test"]["psnr"] < 60
    assert set(ev["super_resolution"]) == {"128", "256"} and ev["input_size"] == 64
    model, _ = load_checkpoint(tmp_path / "run64" / "best.pt")
    assert model.render(torch.rand(1, 3, 64, 64), (128, 128)).shape == (1, 3, 128, 128)
    cfg = get_config("standard_fourier", "smoke")
    (folder / "img00.png").write_bytes((folder / "img01.png").read_bytes())    # the folder changed
    with pytest.raises(ValueError, match=r"(?s)different run.*data\.files_sha256"):
        fit(cfg, str(folder), out=tmp_path / "run32", resume=True, progress=False)


@pytest.mark.parametrize("volumes", [False, True])
def test_a_folder_read_on_demand_gives_the_same_items_and_trains(tmp_path, volumes):
    """lazy=True: the training split's tiles and HR crops are read from the files on demand, item for
    item the ones read into memory, with their own identity; the other splits are unchanged; a
    model trains on it; above LAZY_PIXELS the choice is made by itself."""
    from ginr_common import data
    from ginr_common.configs import get_config
    from ginr_common.train import fit

    if volumes:
        rng = np.random.default_rng(0)
        for i in range(5):
            np.save(tmp_path / f"v{i}.npy", rng.random((1, 40, 40, 40), dtype=np.float32))
        size, ch = (16, 16, 16), 1
    else:
        mixed_folder(tmp_path, n=6, sizes=(48, 96))
        size, ch = (16, 16), 3
    eager = data.load_dataset(str(tmp_path), size=size, channels=ch, lazy=False)
    lazy = data.load_dataset(str(tmp_path), size=size, channels=ch, lazy=True)
    assert isinstance(lazy["train"], data.LazyTiles) and isinstance(lazy["train_hr"], data.LazyTiles)
    for split in ("train", "train_hr"):
        assert len(lazy[split]) == len(eager[split]) > 0
        for k in range(len(eager[split])):
            assert torch.equal(lazy[split][k][0], eager[split][k][0]), (split, k)
        ident = data.dataset_identity(lazy[split], str(tmp_path), split)
        assert ident["n"] == len(eager[split]) and ident == data.dataset_identity(lazy[split], str(tmp_path), split)
    for split in ("val", "test"):
        assert torch.equal(lazy[split].images, eager[split].images)
    assert all(torch.equal(a, b) for a, b in zip(lazy["test_sr"], eager["test_sr"]))
    if not volumes:
        cfg = get_config("standard_fourier", "smoke")
        cfg.model.input_size, cfg.steps, cfg.val_every, cfg.batch_size = size, 4, 4, 4
        fit(cfg, str(tmp_path), out=tmp_path / "run", datasets=lazy, progress=False)
        assert (tmp_path / "run" / "best.pt").exists()
    old = data.LAZY_PIXELS
    try:
        data.LAZY_PIXELS = 1
        assert isinstance(data.load_dataset(str(tmp_path), size=size, channels=ch)["train"], data.LazyTiles)
    finally:
        data.LAZY_PIXELS = old
    assert not isinstance(data.load_dataset(str(tmp_path), size=size, channels=ch)["train"], data.LazyTiles)
