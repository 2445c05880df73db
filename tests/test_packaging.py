"""environment.yml and pyproject.toml name the same dependencies with the same version ranges, each
bounded above; constraints.txt pins every one of them (and everything they pull in) inside them."""
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(pp["dependencies"]) | set(pp["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if not p.startswith("-")}
    assert listed == wanted
    assert "-c constraints.txt" in pip
    assert "python=3.11" in env["dependencies"]
    assert any(p.startswith("-e .") for p in pip)


def test_cuda_extra_is_optional_mamba_ssm():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [re.split("[<>=]", d)[0] for d in pp["optional-dependencies"]["cuda"]] == ["mamba-ssm"]
    assert not any(d.startswith("mamba-ssm") for d in pp["dependencies"])


def test_every_dependency_is_bounded_and_pinned_inside_its_range():
    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in pp["dependencies"] + pp["optional-dependencies"]["dev"]]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    for r in reqs:
        assert any(s.operator in ("<", "<=", "~=", "==") for s in r.specifier), f"{r} has no upper bound"
        name = canonicalize_name(r.name)
        assert name in pins, f"{r.name} is not pinned in constraints.txt"
        assert r.specifier.contains(pins[name], prereleases=True), f"constraints.txt pins {r.name}=={pins[name]}, " \
                                                                   f"outside pyproject's {r.specifier}"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile                  # what make installs is the pinned stack


def test_one_version_number():
    import importlib.metadata

    import ginr_common

    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pp["project"] and pp["project"]["dynamic"] == ["version"]
    assert pp["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ginr_common.__version__"}
    assert importlib.metadata.version("ginr-common") == ginr_common.__version__


def test_every_experiment_file_ships_with_the_package():
    """The experiment files are package data: every one matches a pattern of pyproject's package-data
    (a file in a deeper folder would be left out of a wheel)."""
    from fnmatch import fnmatch

    pp = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pp["tool"]["setuptools"]["package-data"]["ginr_common"]
    files = [p.relative_to(ROOT / "ginr_common").as_posix() for p in (ROOT / "ginr_common/experiments").rglob("*.json")]
    assert len(files) > 50
    missing = [f for f in files if not any(fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert not missing, f"not package data: {missing}"
