"""The committed notebooks show what the shipped models score: each was executed on its shipped
weights (cpu profile, no training), and the description and the results table it printed are the
ones its manifest gives (whose numbers ``release.verify`` measures again, tests/test_pretrained.py)."""
import json
from pathlib import Path

import pytest

from ginr_common import viz
from ginr_common.checkpoints import PRETRAINED, describe_pretrained, pretrained_manifest
from ginr_common.release import NOTEBOOKS

HERE = Path(__file__).resolve().parents[1] / "notebooks"


def printed(path):
    """Everything the code cells of an executed notebook printed, in order."""
    nb = json.loads(path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.parametrize("name", PRETRAINED)
def test_committed_notebook_prints_its_shipped_models_numbers(name):
    text = printed(HERE / NOTEBOOKS[name][1])
    assert "profile cpu; train from scratch: False" in text
    assert describe_pretrained(name) in text
    results = pretrained_manifest(name)["results"]
    summary = viz.sparse_summary(results) if "free" in results else viz.recon_summary(results)
    assert summary in text, f"{NOTEBOOKS[name][1]} prints numbers its manifest does not hold: re-execute it"


def test_a_changed_number_in_a_notebook_is_caught(tmp_path):
    nb = json.loads((HERE / NOTEBOOKS["standard_fourier"][1]).read_text())
    results = pretrained_manifest("standard_fourier")["results"]
    shown = f"{results['test']['psnr']:.2f} dB"
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                o["text"] = "".join(o["text"]).replace(shown, "45.00 dB")
    (tmp_path / "nb.ipynb").write_text(json.dumps(nb))
    assert viz.recon_summary(results) not in printed(tmp_path / "nb.ipynb")


@pytest.mark.parametrize("name", [n[1] for n in NOTEBOOKS.values()])
def test_notebook_and_its_percent_script_hold_the_same_cells(name):
    """Each notebook is paired with a percent-format script (jupytext): both hold the same cells,
    so either can be edited and reviewed (``jupytext --sync`` after an edit of one)."""
    import jupytext
    import nbformat

    nb = nbformat.read(HERE / name, as_version=4)
    script = jupytext.read(HERE / name.replace(".ipynb", ".py"))
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in script.cells], \
        f"{name} and its .py differ: run jupytext --sync notebooks/{name}"
