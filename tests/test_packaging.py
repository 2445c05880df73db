"""environment.yml and pyproject.toml name the same dependencies."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(pp["dependencies"]) | set(pp["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if not p.startswith("-e")}
    assert listed == wanted
    assert "python=3.11" in env["dependencies"]
    assert any(p.startswith("-e .") for p in pip)


def test_cuda_extra_is_optional_mamba_ssm():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [re.split("[<>=]", d)[0] for d in pp["optional-dependencies"]["cuda"]] == ["mamba-ssm"]
    assert not any(d.startswith("mamba-ssm") for d in pp["dependencies"])
