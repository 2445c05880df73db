"""Every code block of the README and docs/ runs. Python blocks run in order, one namespace per
file, on small inputs named as the text names them (an image, observations, scan inputs...); in
bash blocks, every ``python -m ginr_common.train`` line must parse and resolve its configuration
(run with --print-config, on the smoke profile's step counts) and every ``python -m
ginr_common.evaluate`` line must parse."""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ginr_common import evaluate, train
from ginr_common.data import load_dataset
from ginr_common.tasks.sparse_flow import observe

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(path, language):
    return [m.group(2) for m in BLOCK.finditer(path.read_text()) if m.group(1) == language]


def inputs(tmp):
    """The names the docs' examples use, bound to small inputs."""
    g = torch.Generator().manual_seed(0)
    tile = load_dataset("photos")["test"][0][0][None]
    oc, ov, grid, _ = observe(tile, 0.2)
    folder = tmp / "my_photos"
    for split in ("train", "val", "test"):
        (folder / split).mkdir(parents=True)
        for i in range(2):
            pixels = (torch.rand(128, 128, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / split / f"{i}.png")
    return {"torch": torch, "np": np, "image": (torch.rand(3, 48, 40, generator=g) * 255).to(torch.uint8),
            "obs_coords": oc, "obs_values": ov, "query_coords": grid,
            "u": torch.randn(1, 4, 16, generator=g), "delta": torch.rand(1, 4, 16, generator=g),
            "A": -torch.rand(4, 3, generator=g), "B": torch.randn(1, 3, 16, generator=g),
            "C": torch.randn(1, 3, 16, generator=g), "D": torch.randn(4, generator=g), "z": torch.randn(1, 4, 16),
            "d_model": 16, "dim": 16, "depth": 1, "x": torch.randn(1, 16, 8, generator=g),
            "weight": torch.randn(8, 1, 4, generator=g), "tokens": torch.randn(1, 64, 256, generator=g),
            "encoded": torch.randn(1, 80, 256, generator=g), "images": torch.rand(2, 3, 32, 32, generator=g),
            "H": 48, "W": 40, "coords": torch.rand(50, 2, generator=g), "folder": folder, "run": tmp}


WITH_PYTHON = [p for p in DOCS if blocks(p, "python")]


def test_the_docs_with_examples_are_found():
    assert {p.name for p in WITH_PYTHON} >= {"README.md", "api.md"}


@pytest.mark.parametrize("path", WITH_PYTHON, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    code = blocks(path, "python")
    monkeypatch.chdir(tmp_path)
    namespace = inputs(tmp_path)
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"{path.name} python block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{path.name}, python block {i + 1} fails: {type(e).__name__}: {e}\n{block}") from e


def commands(path, module):
    """The argument lists of the ``python -m <module>`` lines of the bash blocks of ``path``."""
    out = []
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" > ")[0].split("  #")[0]
            if f"-m {module}" in line and "|" not in line.split(f"-m {module}")[1]:
                out.append(shlex.split(line.split(f"-m {module}", 1)[1]))
    return out


WITH_COMMANDS = [p for p in DOCS if commands(p, "ginr_common.train") or commands(p, "ginr_common.evaluate")]


@pytest.mark.parametrize("path", WITH_COMMANDS, ids=lambda p: p.name)
def test_bash_blocks_name_real_options(path, tmp_path, monkeypatch, capsys):
    trains, evaluates = commands(path, "ginr_common.train"), commands(path, "ginr_common.evaluate")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.json").write_text("")
    for argv in trains:
        if "--config-file" in argv:     # the file the line before printed
            train.main(["--config", "scent", "--profile", "smoke", "--print-config"])
            (tmp_path / "mine.json").write_text(capsys.readouterr().out)
        train.main([a for a in argv if a != "--print-config"] + ["--print-config"])
        assert '"model"' in capsys.readouterr().out, argv
    parser_error = []
    monkeypatch.setattr(evaluate, "evaluate_checkpoint", lambda *a, **k: parser_error.append(a) or ({}, {}))
    monkeypatch.setattr(evaluate, "load_checkpoint", lambda *a, **k: (None, {}))
    monkeypatch.setattr(evaluate, "train_config_from_checkpoint", lambda ckpt: train.get_config("scent", "smoke"))
    for argv in evaluates:
        evaluate.main(argv)
    assert len(parser_error) == len(evaluates)
