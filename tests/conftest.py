import os
import zlib

import pytest
import torch

if not torch.cuda.is_available():
    # Triton runs on the CPU only through its interpreter, which must be chosen before triton is first
    # imported (some libraries import it, e.g. torchvision.utils): tests/test_scan_triton.py uses it
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(int(os.environ.get("GINR_TEST_THREADS", torch.get_num_threads())))


@pytest.fixture
def seed(request):
    """A fresh, reproducible seed per test, derived from the test id (crc32, not the salted
    built-in hash, so a failure reproduces in the next run)."""
    s = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(s)
    return s


MAMBA_SSM_VERSION = "2.3.2.post1"


@pytest.fixture(scope="session")
def mamba_ssm_src():
    """The real mamba-ssm source (its sdist, from the package index): its Python-level reference
    scan and Mamba module are the compatibility oracle. Cached under .cache/."""
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    root = Path(os.environ.get("GINR_CACHE", Path(__file__).resolve().parents[1] / ".cache")) / "mamba_ssm_src"
    pkg = root / f"mamba_ssm-{MAMBA_SSM_VERSION}"
    if not (pkg / "mamba_ssm").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "-q", "-d", str(root), f"mamba-ssm=={MAMBA_SSM_VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "MAMBA_SKIP_CUDA_BUILD": "TRUE"})
        archives = list(root.glob("mamba_ssm-*.tar.gz"))
        if not archives:
            pytest.skip(f"mamba-ssm sdist not obtainable from the package index: {r.stderr[-300:]}")
        with tarfile.open(archives[0]) as tf:
            tf.extractall(root, filter="data")
    return pkg


@pytest.fixture
def fake_mamba_ssm(mamba_ssm_src, monkeypatch):
    """Import mamba_ssm from its source without its CUDA extension: selective_scan_fn is replaced
    by the package's own Python reference (selective_scan_ref)."""
    import importlib
    import importlib.machinery
    import sys
    import types

    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)
    pkg = types.ModuleType("mamba_ssm")
    pkg.__path__ = [str(mamba_ssm_src / "mamba_ssm")]
    pkg.__spec__ = importlib.machinery.ModuleSpec("mamba_ssm", None, is_package=True)
    monkeypatch.setitem(sys.modules, "mamba_ssm", pkg)
    monkeypatch.setitem(sys.modules, "selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    iface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
    monkeypatch.setattr(iface, "selective_scan_fn", iface.selective_scan_ref)
    monkeypatch.setattr(simple, "selective_scan_fn", iface.selective_scan_ref)
    return types.SimpleNamespace(iface=iface, simple=simple)


# The suite runs on one worker per core with ``--dist loadscope``: a test file (or notebook) is one unit of work,
# kept on one worker. The cases below take minutes each (every shipped model's manifest measured again, every
# configuration trained from the command line): each is a unit of its own, queued before the rest, so the workers
# share them instead of one worker running a whole file of them while the other idles at the end.
OWN_UNITS = ("tests/test_pretrained.py::test_shipped_model_reproduces_every_number_of_its_manifest[",
             "tests/test_train.py::test_cli_trains_and_evaluates_every_config[")


def _own_unit(nodeid):
    return nodeid.startswith(OWN_UNITS)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not _own_unit(item.nodeid))   # stable: the long cases first, then collection order


@pytest.hookimpl(optionalhook=True)     # xdist's hook: pytest without xdist (-p no:xdist) runs these tests too
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OwnUnitsFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return nodeid if _own_unit(nodeid) else super()._split_scope(nodeid)

    config.option.loadscopereorder = False     # the queue keeps the collection order above
    return OwnUnitsFirst(config, log)
