"""Keep executed notebooks small enough to commit: every PNG figure becomes a JPEG at most 1000
pixels wide. Execute a notebook on its shipped weights, then shrink it into notebooks/:

    GINR_PROFILE=cpu GINR_TRAIN=0 .venv/bin/jupyter nbconvert --to notebook --execute \\
        notebooks/01_standard_fourier.ipynb --output-dir /tmp/out
    .venv/bin/python notebooks/_shrink.py /tmp/out/01_standard_fourier.ipynb

(``make notebooks`` does both for all of them.) The notebooks are their own source: edit them in
JupyterLab, or edit the paired percent-format .py files beside them and run ``jupytext --sync``.
"""
import sys
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent


def shrink(path, width=1000, quality=75):
    """Keep an executed notebook's outputs small enough to commit: each PNG figure becomes a JPEG at
    most ``width`` pixels wide; the notebook is written into notebooks/ under its own name.
    ``python notebooks/_shrink.py /tmp/out/01_standard_fourier.ipynb``"""
    import base64
    import io

    from PIL import Image

    nb = nbf.read(path, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).pop("image/png", None)
            if png is None:
                continue
            im = Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")
            if im.width > width:
                im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=quality)
            out["data"]["image/jpeg"] = base64.b64encode(buf.getvalue()).decode()
            out.get("metadata", {}).pop("image/png", None)
    nbf.write(nb, HERE / Path(path).name)
    print("wrote", HERE / Path(path).name)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        shrink(p)
