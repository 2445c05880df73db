"""Writes notebooks 01-03 from the cell texts below (``python notebooks/_build.py``). The notebooks
are thin on purpose: every function they call lives in ginr_common and has a test."""
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent

SETUP = '''import json

import matplotlib.pyplot as plt
import torch

from ginr_common import MambaGINR, load_checkpoint, viz
from ginr_common.configs import config_json, default_profile, get_config, run_name
from ginr_common.data import {data_imports}
from ginr_common.evaluate import evaluate_checkpoint
from ginr_common.tasks import evaluate_sr
from ginr_common.train import CHECKPOINTS, fit

CONFIG = "{config}"
PROFILE = default_profile()   # GINR_PROFILE=smoke|cpu|full; default: full on CUDA, else cpu
DATA = {data}
cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment
torch.manual_seed(cfg.seed)
plt.rcParams["figure.dpi"] = 72     # small inline figures keep the saved notebook small
print(f"profile {{PROFILE}}, data {{DATA}}")
print(config_json(cfg))'''

DATA_CELL = '''data = load_dataset(DATA)
print({{k: len(v) for k, v in data.items() if k != "val_sr"}})
viz.image_row([data["{split}"][i * 37 % len(data["{split}"])][0] for i in range(8)]);'''

MODEL_CELL = '''model = MambaGINR(cfg.model)
n_enc = sum(p.numel() for p in model.encoder.parameters())
n_dec = sum(p.numel() for p in model.decoder.parameters())
print(f"encoder {n_enc / 1e6:.3f} M + decoder {n_dec / 1e6:.3f} M parameters; {cfg.model.num_lp} LPs of dim {cfg.model.dim}")
assert n_enc > 0 and n_dec > 0 and len(list(model.decoder.buffers())) + len(list(model.decoder.parameters())) > 0
model.decoder'''

TRAIN_CELL = '''# the run folder is named after the settings: re-running continues (or reuses) this run, and any
# edit of cfg above trains a new one in its own folder
OUT = CHECKPOINTS / run_name(cfg, DATA)
print(f"run folder: {OUT}")
metrics = fit(cfg, DATA, out=OUT, resume=True, on_step=viz.LiveCurves(every=max(cfg.steps // 8, 1), title=CONFIG))
viz.training_curves(metrics["history"], f"{CONFIG} ({PROFILE}): best validation {metrics['best_val_psnr']:.2f} dB at step {metrics['best_step']}");'''

EVAL_CELL = '''# test split at native resolution + super-resolution on the HR test crops; writes eval.json and sr.png
results, _ = evaluate_checkpoint(OUT / "best.pt", DATA, sizes=(64, 128))
model, _ = load_checkpoint(OUT / "best.pt")
assert set(results["super_resolution"]) == {"64", "128"} and results["test"]["n"] > 0
print(f"test: PSNR {results['test']['psnr']:.2f} dB, SSIM {results['test']['ssim']:.3f}")'''

SR_CELL = '''# the 32x32 input, bicubic and the model at x2, x4, x8, and the real HR image (x8 = 256 is above
# the crops' 128x128 resolution: rendered, no ground truth, no number)
lr, hr = load_sr_pairs("test")
pick = [0, 5, 9, 14]
_, renders = evaluate_sr(model, lr[pick], hr[pick], sizes=(64, 128, 256))
viz.sr_figure(lr[pick], renders, title=f"{CONFIG}: held-out photographs");'''

CIFAR_SR_CELL = '''if DATA == "cifar10":  # CIFAR-10 has no ground truth above 32x32: renders only, no numbers
    x = torch.stack([data["test"][i][0] for i in range(4)])
    _, renders = evaluate_sr(model, x, None, sizes=(64, 128, 256))
    viz.sr_figure(x, renders, title="CIFAR-10 test images (no high-resolution ground truth)");'''

LP_CELLS = ['''viz.lp_placement_figure(model);''',
            '''viz.lp_similarity_figure(model.encoder.lp.lps);''',
            '''image = data["test"][3][0]
viz.attention_figure(model, image, query=(0.3, 0.7));''',
            '''viz.render_grid(model, image, sizes=(32, 64, 128, 256));''']
LOCAL_LP_CELLS = [LP_CELLS[0], LP_CELLS[1], '''image = data["test"][3][0]
viz.render_grid(model, image, sizes=(32, 64, 128, 256));''']

RESULTS_CELL = '''print(json.dumps({k: results[k] for k in ("test", "super_resolution", "super_resolution_note")}, indent=1))
print(f"figures and metrics: {sorted(p.name for p in OUT.iterdir())}")'''


def notebook(title, intro, config, data, split="train", extra=(), lp_cells=LP_CELLS):
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [md(f"# {title}\n\n{intro}\n\nRun with `GINR_PROFILE=smoke` (seconds, what CI runs), `cpu` "
                "(about ten minutes on two cores; the default without a GPU) or `full` (the reference "
                "configuration's hyperparameters: patch 2, width 256, depth 6; the default on a GPU)."),
             md("## Configuration"), code(SETUP.format(config=config, data=data, data_imports=", ".join(
                 (["cifar10_available"] if "cifar10_available" in data else []) + ["load_dataset", "load_sr_pairs"]))),
             md("## Data"), code(DATA_CELL.format(split=split)),
             md("## Model"), code(MODEL_CELL),
             md("## Training\nAdamW, warm-up + cosine, gradient clipping; `last.pt`, `best.pt` (on validation) and "
                "`metrics.json` in `OUT`, written atomically. The plot refreshes while it trains."),
             code(TRAIN_CELL), *extra,
             md("## Evaluation"), code(EVAL_CELL),
             md("## Super-resolution"), code(SR_CELL), code(CIFAR_SR_CELL),
             md("## LP diagnostics\nWhere the LPs sit in the sequence and in the image plane, how distinct they "
                "are, and what one query attends to; then one latent rendered at several resolutions."),
             *[code(c) for c in lp_cells],
             md("## Results"), code(RESULTS_CELL)]
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


NOTEBOOKS = {
    "01_standard_fourier.ipynb": notebook(
        "01 · Standard Fourier features + ResidualBlock decoder: reconstruction at any resolution",
        "2x2 patch tokens, LPs interleaved equidistantly, each with a home on a lattice over the image, and a "
        "BiMamba encoder. The decoder is local (in the manner of LIIF): a query reads the 4 LPs and the 4 encoded "
        "patch tokens around it, each with fixed log-spaced Fourier features of its offset in lattice units and "
        "the query's cell size, blends them by area, and a ResidualBlock trunk predicts RGB. It is trained to "
        "reconstruct its input and to render the real photograph at random scales x1-x4 (targets resampled from "
        "high-resolution crops), so renders above 32x32 are learned, not hoped for. Trains on the embedded "
        "photographs (multi-scale training needs high-resolution crops).",
        "standard_fourier", '"photos"  # multi-scale training needs real HR crops', split="train_hr",
        lp_cells=LOCAL_LP_CELLS),
    "02_gaussian_fourier.ipynb": notebook(
        "02 · Gaussian Fourier features: super-resolution as a correction on top of bicubic",
        "The local decoder of notebook 1 with random Fourier features B ~ N(0, sigma^2), gamma = [sin(2 pi c B^T), "
        "cos(2 pi c B^T)] of the offsets (a buffer, so checkpoints reload it), predicting a residual over bicubic "
        "interpolation of the input. Supervised with real high-resolution targets: half the loss on the 32x32 input "
        "grid, half on random pixels of the real HR crop resized to a random scale between x1 and x4, so one "
        "model serves x2, x3, x4 and non-integer scales. Trains on the embedded photographs.",
        "gaussian_fourier", '"photos"  # super-resolution training needs real HR targets', split="train_hr",
        lp_cells=LOCAL_LP_CELLS),
    "03_scent_decoder.ipynb": notebook(
        "03 · SCENT-style decoder with a 2-D locality bias",
        "The same encoder with a SCENT-style decoder: Gaussian Fourier features of the query plus the 4 nearest "
        "encoded patch tokens (read as in notebook 1), pre-norm cross-attention to the LPs with a skip of the query "
        "features, GEGLU feed-forwards (optionally self-attention over the latents, never among the queries), and "
        "a locality bias on the attention logits computed from continuous coordinates: the query's position "
        "against each LP's home on the lattice, so it is the same function at every output resolution. Trained "
        "like notebook 1, at random scales x1-x4 of the real photographs.",
        "scent", '"photos"  # multi-scale training needs real HR crops', split="train_hr"),
}

FLOW_SETUP = '''import json

import matplotlib.pyplot as plt
import torch

from ginr_common import load_checkpoint, make_grid, viz
from ginr_common.checkpoints import model_for
from ginr_common.configs import config_json, default_profile, get_config, run_name
from ginr_common.data import cifar10_available, load_dataset, sparse_masks
from ginr_common.evaluate import evaluate_checkpoint
from ginr_common.train import CHECKPOINTS, fit

CONFIG = "flow_sparse"
PROFILE = default_profile()   # GINR_PROFILE=smoke|cpu|full; default: full on CUDA, else cpu
DATA = "cifar10" if cifar10_available() else "photos"
# evaluation budget: test images at 32x32, samples per image (posterior mean), Heun steps
N_EVAL, K, STEPS = {"smoke": (8, 2, 4), "cpu": (32, 4, 20), "full": (1000, 16, 100)}[PROFILE]
cfg = get_config(CONFIG, PROFILE)
torch.manual_seed(cfg.seed)
plt.rcParams["figure.dpi"] = 72     # small inline figures keep the saved notebook small
print(f"profile {PROFILE}, data {DATA}")
print(config_json(cfg))'''

FLOW_DATA = '''data = load_dataset(DATA)
images = torch.stack([data["test"][i][0] for i in range(4)])
obs, sup = sparse_masks(range(4), 32 * 32, cfg.model.observe_frac, seed=42)   # the evaluation masks
shown = torch.zeros(4, 32 * 32, 3).scatter_(1, obs[..., None].expand(-1, -1, 3), images.flatten(2).transpose(1, 2).gather(1, obs[..., None].expand(-1, -1, 3)))
sup_map = torch.zeros(4, 32 * 32, 3)
sup_map[..., 1] = torch.zeros(4, 32 * 32).scatter_(1, sup, 1.0)
print(f"{obs.shape[1]} observed and {sup.shape[1]} (disjoint) supervised pixels of {32 * 32} per image")
viz.image_row([*images, *shown.transpose(1, 2).reshape(4, 3, 32, 32), *sup_map.transpose(1, 2).reshape(4, 3, 32, 32)],
              ["image"] * 4 + ["observed 20%"] * 4 + ["disjoint 20% (green)"] * 4, size=1.2);'''

FLOW_MODEL = '''model = model_for(cfg.model)
n_params = sum(p.numel() for p in model.parameters())
print(f"{n_params / 1e6:.3f} M parameters; {cfg.model.num_lp} LPs; training masks redrawn every step: {cfg.mask_redraw}")
assert n_params > 0
model'''

FLOW_EVAL = '''results, task = evaluate_checkpoint(OUT / "best.pt", DATA, n_images=N_EVAL, k=K, steps=STEPS, n_hr=4)
figs = task.figures
model, _ = load_checkpoint(OUT / "best.pt")
for mode in ("free", "hold_known"):
    for name, r in results[mode].items():
        print(f"{mode:10s} {name:13s} PSNR {r['psnr']:6.2f}  unobserved {r['psnr_unobserved']:6.2f}  SSIM {r['ssim']:.3f}")
assert {"nearest", "linear", "model_sample"} <= set(results["free"])'''

FLOW_FIG = '''test = torch.stack([data["test"][i][0] for i in range(N_EVAL)])
viz.sparse_figure(figs["sparse"], test, n=4, title=f"{CONFIG}: 20% observed, {K} samples, Heun {STEPS} steps");'''

FLOW_MULTI = '''# the same observations and the same noise field sampled at 32, 64, 96, 128 (zero-shot above 32)
_ = viz.sr_figure(figs["lr"], figs["zero_shot"], n=3, baseline="linear+bicubic",
                  title="posterior mean at 64 / 96 / 128 against the real HR crop")
lr = figs["lr"][:1]
o, _ = sparse_masks([0], 32 * 32, cfg.model.observe_frac, seed=42)
grid = make_grid((32, 32))
oc, ov = grid[o], lr.flatten(2).transpose(1, 2).gather(1, o[..., None].expand(-1, -1, 3))
row = [model.sample(oc, ov, make_grid((s, s))[None], steps=STEPS, generator=torch.Generator().manual_seed(0))
       .transpose(1, 2).reshape(3, s, s) for s in (32, 64, 96, 128)]
viz.image_row(row, ["32", "64", "96", "128"], size=2.2);'''

FLOW_RESULTS = '''print(json.dumps({k: results[k] for k in ("free", "hold_known", "zero_shot", "zero_shot_note")}, indent=1))'''


def flow_notebook():
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [md("# 04 · Flow matching for sparse field reconstruction\n\nObserve 20% of an image's pixels and sample "
                "the whole continuous field at any resolution. The observed pixels (value + Fourier features of the "
                "coordinate) are tokens in raster order, with LPs, through the BiMamba encoder, once per sample; each "
                "query (coordinate, noisy value x_t, time t) is decoded by cross-attention to the encoded tokens with "
                "time-modulated blocks and a residual path for x_t. Flow matching: x_t = (1 - t) x0 + t x1, target "
                "velocity x1 - x0; Euler or Heun sampling. Noise is a function of the coordinate, so renders at "
                "different sizes are samples of the same field.\n\nRun with `GINR_PROFILE=smoke`, `cpu` or `full`."),
             md("## Configuration"), code(FLOW_SETUP),
             md("## Data and masks\nEvaluation masks are fixed per image (seed 42): 20% observed, a disjoint 20% "
                "supervised (the reference configuration's protocol). Training redraws the masks every step and supervises every "
                "unobserved pixel (`cfg.mask_redraw`)."), code(FLOW_DATA),
             md("## Model"), code(FLOW_MODEL),
             md("## Training"), code(TRAIN_CELL),
             md("## Evaluation at 32x32\nPSNR on the whole image and on the unobserved pixels only, for one sample and "
                "the posterior mean, free or holding the known pixels on their values; nearest and linear "
                "interpolation (scipy's griddata) on the same masks."), code(FLOW_EVAL), code(FLOW_FIG),
             md("## Multi-scale"), code(FLOW_MULTI),
             md("## Results"), code(FLOW_RESULTS)]
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


NOTEBOOKS["04_flow_matching_sparse.ipynb"] = flow_notebook()

def shrink(path, width=560, quality=70):
    """Keep an executed notebook's outputs small enough to commit: each PNG figure becomes a JPEG at
    most ``width`` pixels wide; the notebook is written into notebooks/ under its own name.
    ``python notebooks/_build.py --shrink /tmp/out/01_standard_fourier.ipynb``"""
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
    import sys

    if sys.argv[1:2] == ["--shrink"]:
        for p in sys.argv[2:]:
            shrink(p)
    else:
        for name, nb in NOTEBOOKS.items():
            nbf.write(nb, HERE / name)
            print("wrote", HERE / name)
