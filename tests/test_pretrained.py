"""Shipped weights: every notebook model loads offline and reproduces its manifest's numbers on the
held-out test photographs; save_pretrained / from_pretrained round-trip any model."""
import json

import pytest
import torch

from ginr_common import GINRConfig, MambaGINR
from ginr_common.checkpoints import (PRETRAINED, WEIGHTS, from_pretrained, load_pretrained, pretrained_manifest,
                                     save_pretrained)
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
