"""Shipped weights: every notebook model loads offline and reproduces its manifest's numbers on the
held-out test photographs; save_pretrained / from_pretrained round-trip any model."""
import json

import pytest
import torch

from ginr_common import GINRConfig, MambaGINR
from ginr_common.checkpoints import (PRETRAINED, WEIGHTS, describe_pretrained, from_pretrained, load_pretrained,
                                     pretrained_manifest, save_pretrained)
from ginr_common.data import dataset_identity, load_dataset
from ginr_common.release import check


@pytest.fixture(scope="module")
def datasets():
    return load_dataset("photos")


@pytest.mark.parametrize("name", PRETRAINED)
def test_shipped_model_reproduces_its_manifest(name, datasets):
    model = load_pretrained(name)
    manifest = pretrained_manifest(name)
    size = sum(f.stat().st_size for f in (WEIGHTS / name).iterdir())
    assert size < 10 * 2**20, f"{name}: {size / 2**20:.1f} MB"
    assert manifest["name"] == name and len(manifest["commit"]) == 40
    assert manifest["training_command"].startswith("python -m ginr_common.train")
    split = manifest["data"]["split"]       # trained on the photo set this version builds
    assert manifest["data"] == dataset_identity(datasets[split], "photos", split)
    assert manifest["training_command"] in describe_pretrained(name)
    got = check(model, datasets)
    assert got["protocol"] == manifest["check"]["protocol"]
    for key, want in manifest["check"]["psnr"].items():
        assert abs(got["psnr"][key] - want) < 0.1, (name, key, got["psnr"][key], want)


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
    assert json.loads((tmp_path / "mine" / "manifest.json").read_text()) == {"note": "mine"}
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "mine" / "config.json").read_text())
    cfg["dim"] = 32
    (tmp_path / "mine" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        from_pretrained(tmp_path / "mine")


def test_shipped_flow_velocity_is_joint_and_its_sample_coherent():
    """In the shipped flow model a change of the noisy value at one pixel moves the velocity at
    each of its 4 neighbours; a sample of a held-out tile is neither speckled nor flat (total
    variation within [0.5, 2] of the truth's)."""
    from ginr_common.flow import curve_orders
    from ginr_common.fourier import make_grid
    from ginr_common.metrics import total_variation
    from ginr_common.tasks.sparse_flow import observe

    model = load_pretrained("flow_sparse")
    x = load_dataset("photos")["test"][300][0][None]
    oc, ov, grid, _ = observe(x, model.config.observe_frac)
    with torch.no_grad():
        cond, mu, _ = model.condition(model.encode(oc, ov), grid)
        orders = curve_orders(grid, model.config.mixer_depth)
        xt = mu + 0.1 * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
        v = model.velocity(cond, mu, xt, 0.5, orders)
        xt[0, 16 * 32 + 16] += 0.5
        v2 = model.velocity(cond, mu, xt, 0.5, orders)
    for nb in (15 * 32 + 16, 17 * 32 + 16, 16 * 32 + 15, 16 * 32 + 17):
        assert (v2[0, nb] - v[0, nb]).abs().max() > 1e-4, nb
    y = model.sample(oc, ov, make_grid((32, 32))[None], generator=torch.Generator().manual_seed(0))
    ratio = float(total_variation(y.transpose(1, 2).reshape(1, 3, 32, 32)) / total_variation(x))
    assert 0.5 < ratio < 2, ratio
