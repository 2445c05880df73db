"""Shipped weights: every notebook model loads offline, its files are the ones its manifest hashed,
every number its manifest reports is measured again (``release.verify``), and the README's results
block is the one the manifests generate; save_pretrained / from_pretrained round-trip any model."""
import json
import shutil

import pytest
import torch

from ginr_common import GINRConfig, MambaGINR
from ginr_common.checkpoints import (PRETRAINED, WEIGHTS, describe_pretrained, file_sha256, from_pretrained,
                                     load_pretrained, pretrained_manifest, save_pretrained)
from ginr_common.data import dataset_identity, load_dataset
from ginr_common.release import BLOCK, README, compare, readme_block, verify


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_model_reproduces_every_number_of_its_manifest(name):
    manifest = pretrained_manifest(name)
    size = sum(f.stat().st_size for f in (WEIGHTS / name).iterdir())
    assert size < 10 * 2**20, f"{name}: {size / 2**20:.1f} MB"
    assert manifest["name"] == name and len(manifest["commit"]) == 40
    assert manifest["training_command"].startswith("python -m ginr_common.train")
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    split, data = manifest["data"]["split"], manifest["data"]["name"]    # trained on the data this version builds
    model = load_pretrained(name)
    built = load_dataset(data, size=model.config.input_size, channels=model.config.in_channels)
    assert manifest["data"] == dataset_identity(built[split], data, split)
    assert manifest["training_command"] in describe_pretrained(name)
    assert verify(name) == []


def test_compare_names_every_number_that_moved():
    """What ``verify`` calls a difference: dB beyond 0.05, SSIM beyond 0.002, ratios beyond 1%, any
    count; timings and where the weights came from are not compared."""
    recorded = {"checkpoint": "a/best.pt", "n_images": 32, "seconds_per_image": 1.0,
                "free": {"sample": {"psnr_unobserved": 21.6, "ssim": 0.73, "tv_ratio": 1.24}}}
    same = {"checkpoint": "b/best.pt", "n_images": 32, "seconds_per_image": 9.0,
            "free": {"sample": {"psnr_unobserved": 21.64, "ssim": 0.7315, "tv_ratio": 1.245}}}
    assert compare(same, recorded) == []
    moved = json.loads(json.dumps(same))
    moved["free"]["sample"].update(psnr_unobserved=21.9, ssim=0.735, tv_ratio=1.3)
    moved["n_images"] = 16
    bad = compare(moved, recorded)
    assert [b.split(":")[0] for b in bad] == ["n_images", "free.sample.psnr_unobserved", "free.sample.ssim",
                                              "free.sample.tv_ratio"]
    assert compare({}, recorded)[0].startswith("n_images: 32 recorded, not measured")


def test_readme_results_are_generated_from_the_manifests():
    block = BLOCK.search(README.read_text())
    assert block, "README.md lacks its generated results block"
    assert block.group(2) == readme_block(), "README.md's results differ from the manifests: python -m " \
                                             "ginr_common.release --readme rewrites them"
    text = readme_block()
    sf = pretrained_manifest("standard_fourier")["results"]["super_resolution"]["64"]
    assert f"{sf['model']['psnr']:.2f} / " in text and f"{sf['bicubic']['psnr']:.2f} / " in text


@pytest.mark.parametrize("target", ["model.safetensors", "config.json"])
def test_a_changed_weights_file_is_refused_by_name(target, tmp_path):
    folder = tmp_path / "standard_fourier"
    shutil.copytree(WEIGHTS / "standard_fourier", folder)
    assert from_pretrained(folder) is not None                 # the untouched copy loads
    path = folder / target
    data = bytearray(path.read_bytes())
    if target == "model.safetensors":                          # 1000 bytes inside the tensors overwritten
        data[len(data) // 2:len(data) // 2 + 1000] = b"\x7f" * 1000
    else:                                                      # a value changed, still valid JSON
        data = data.replace(b'"dim": 64', b'"dim": 65')
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{target} has changed since its manifest was written: sha256 "
                                         rf"{file_sha256(path)}"):
        from_pretrained(folder)
    path.unlink()
    with pytest.raises((ValueError, FileNotFoundError), match=target):
        from_pretrained(folder)


def test_load_pretrained_refuses_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="must be one of"):
        load_pretrained("imagenet")
    with pytest.raises(FileNotFoundError, match="lacks"):
        from_pretrained(tmp_path)


def test_save_and_from_pretrained_round_trip(tmp_path, seed):
    model = MambaGINR(GINRConfig(dim=16, depth=1, num_lp=4, d_state=4)).eval()
    save_pretrained(model, tmp_path / "mine", manifest={"note": "mine"})
    again = from_pretrained(tmp_path / "mine")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.render(x, (40, 40)), again.render(x, (40, 40)))
    files = {f: file_sha256(tmp_path / "mine" / f) for f in ("model.safetensors", "config.json")}
    assert json.loads((tmp_path / "mine" / "manifest.json").read_text()) == {"note": "mine", "files": files}
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    (tmp_path / "mine" / "manifest.json").unlink()             # a folder without a manifest loads unchecked
    cfg = json.loads((tmp_path / "mine" / "config.json").read_text())
    cfg["dim"] = 32
    (tmp_path / "mine" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        from_pretrained(tmp_path / "mine")


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_the_profile_named_in_the_manifest_is_what_the_shipped_weights_were_trained_with(name):
    """The dataclass defaults plus each config's stated differences plus those of the profile the
    manifest names give exactly the training configuration recorded in its shipped manifest."""
    from ginr_common.checkpoints import config_dict
    from ginr_common.configs import get_config, train_config_from_checkpoint

    manifest = pretrained_manifest(name)
    stored = {"train_config": json.loads(manifest["train_config"]), "config": config_dict(load_pretrained(name))}
    trained = train_config_from_checkpoint(stored)
    assert trained == get_config(name, manifest["profile"])
    assert manifest["training_command"].endswith(f"--profile {manifest['profile']} --seed {trained.seed}")


def test_shipped_flow_velocity_is_joint_and_its_sample_coherent():
    """In the shipped flow model (sampling as it samples: with its per-query spread) a change of the
    noisy value at one pixel moves the velocity at its 4 neighbours, on average, ten times more than
    at the pixels 8 or more away (at three pixels of a held-out tile); a sample of the tile is neither
    speckled nor flat (total variation within [0.5, 2] of the truth's)."""
    from ginr_common.fourier import make_grid
    from ginr_common.metrics import total_variation
    from ginr_common.tasks.sparse_flow import observe

    model = load_pretrained("flow_sparse")
    x = load_dataset("photos")["test"][300][0][None]
    oc, ov, grid, _ = observe(x, model.config.observe_frac)
    rows, cols = torch.arange(32)[:, None], torch.arange(32)[None]
    with torch.no_grad():
        ctx = model.context(oc, ov, grid)
        xt = ctx.mu + 0.1 * torch.randn(ctx.mu.shape, generator=torch.Generator().manual_seed(0))
        v = model.velocity(ctx, xt, 0.5)
        for r, c in ((16, 16), (10, 20), (22, 9)):
            kicked = xt.clone()
            kicked[0, r * 32 + c] += 0.5
            change = (model.velocity(ctx, kicked, 0.5) - v)[0].abs().amax(-1).view(32, 32)
            near = change[[r - 1, r + 1, r, r], [c, c, c - 1, c + 1]]
            far = change[((rows - r).abs() >= 8) | ((cols - c).abs() >= 8)]
            assert near.mean() > 1e-4 and near.mean() > 10 * far.mean(), ((r, c), near, far.mean())
    y = model.sample(oc, ov, make_grid((32, 32))[None], generator=torch.Generator().manual_seed(0))
    ratio = float(total_variation(y.transpose(1, 2).reshape(1, 3, 32, 32)) / total_variation(x))
    assert 0.5 < ratio < 2, ratio


def test_shipped_flow_sample_converges_as_the_solver_refines():
    """On 8 fixed held-out tiles, one sample of the shipped flow (the default solver, the same
    noise) scores within 0.3 dB (PSNR on the unobserved pixels) and 0.05 (total variation over the
    truth's) at 16 and 32 steps of what it scores at 8, its colour varying at most 1.3x as much as the
    truth's at every count (at the temperatures calibrated on the validation photographs)."""
    from ginr_common.tasks.sparse_flow import one_sample_by_steps

    test = load_dataset("photos")["test"]
    tiles = torch.stack([test[int(i)][0] for i in torch.linspace(0, len(test) - 1, 8).long()])
    by = one_sample_by_steps(load_pretrained("flow_sparse"), tiles, (8, 16, 32))
    for n in (16, 32):
        assert abs(by[n]["psnr_unobserved"] - by[8]["psnr_unobserved"]) <= 0.3, by
        assert abs(by[n]["tv_ratio"] - by[8]["tv_ratio"]) <= 0.05, by
    assert all(by[n]["chroma_tv_ratio"] <= 1.3 for n in by), by
