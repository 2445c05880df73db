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
