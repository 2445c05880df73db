"""Writes notebooks 01-03 from the cell texts below (``python notebooks/_build.py``). The notebooks
are thin on purpose: every function they call lives in ginr_common and has a test."""
from pathlib import Path

import nbformat as nbf

from ginr_common.configs import get_config

HERE = Path(__file__).resolve().parent

SETUP = """import os

import matplotlib.pyplot as plt
import torch

from ginr_common import describe_pretrained, load_checkpoint, load_pretrained, pretrained_manifest, render_image, viz
from ginr_common.baselines import bicubic
from ginr_common.configs import config_json, default_profile, get_config, run_name
from ginr_common.data import load_dataset, load_sr_pairs, resize
from ginr_common.evaluate import evaluate_model
from ginr_common.metrics import psnr
from ginr_common.tasks import evaluate_sr
from ginr_common.train import CHECKPOINTS, fit

CONFIG = "{config}"
PROFILE = default_profile()   # GINR_PROFILE=smoke|cpu|full; default: full on CUDA, else cpu
# TRAIN = True trains this model from scratch at the end (GINR_TRAIN=1 does the same); the smoke
# profile (what CI runs) always trains, for seconds
TRAIN = os.environ.get("GINR_TRAIN", "1" if PROFILE == "smoke" else "0") == "1"
plt.rcParams["figure.dpi"] = 120
data = load_dataset("photos")
print(f"profile {{PROFILE}}; train from scratch: {{TRAIN}}")"""

SHIPPED = """model = load_pretrained(CONFIG)
print(describe_pretrained(CONFIG))
viz.lp_placement_figure(model);"""

RESULTS = """# the shipped model's numbers, as its manifest records them: reconstruction of the held-out 32x32 test tiles,
# and 46 32x32 downsamples of held-out 128x128 crops rendered at 64 and 128 against the real crop, bicubic
# upsampling beside them (python -m ginr_common.release --verify measures every number again, in about 30 s)
print(viz.recon_summary(pretrained_manifest(CONFIG)["results"]))"""

FIGURE = """lr, hr = load_sr_pairs("test")
_, renders = evaluate_sr(model, lr[:3], hr[:3])   # three of those crops, rendered here
viz.sr_figure(lr, renders, n=3, title=f"{{CONFIG}} (shipped): held-out photographs, |error| x4 maps");"""

OWN = """# your own image, at least 32x32: a PIL image (PIL.Image.open(path)), an (H, W, C) NumPy array (uint8, or
# floats in [0, 1]) or a (C, H, W) tensor; RGBA loses its alpha channel, grayscale is repeated to RGB. It is
# rendered at any size or scale factor beside bicubic. Here a crop of a held-out photograph, downsampled
# 4x, rendered back at 3.7x and compared with the real photograph at that size.
from skimage import data as photos
crop = torch.from_numpy(photos.astronaut()[40:232, 150:342]).permute(2, 0, 1).float() / 255   # 192x192
image = resize(crop[None], (48, 48))[0]
SCALE = 3.7
ours = render_image(model, image, scale=SCALE)
ref = bicubic(image[None], tuple(ours.shape[1:]))[0]
truth = resize(crop[None], tuple(ours.shape[1:]))[0]
db = lambda x: float(psnr(x[None], truth[None]))
viz.image_row([image, ref, ours, truth], [f"input {{tuple(image.shape[1:])}}", f"bicubic x{{SCALE}}: {{db(ref):.1f}} dB",
              f"model x{{SCALE}}: {{db(ours):.1f}} dB", "real photograph"], size=2.6);"""

TRAIN = """if TRAIN:
    cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment
    print(config_json(cfg))
    RUN = CHECKPOINTS / run_name(cfg, "photos")   # named after the settings: an edit trains a new run
    metrics = fit(cfg, "photos", out=RUN, resume=True, on_step=viz.LiveCurves(every=max(cfg.steps // 8, 1), title=CONFIG))
    viz.training_curves(metrics["history"], f"{{CONFIG}} ({{PROFILE}}): best validation {{metrics['best_val_psnr']:.2f}} dB")
    trained, _ = load_checkpoint(RUN / "best.pt")
    mine, _ = evaluate_model(trained, cfg, RUN, data, progress=False)
    print(viz.recon_summary(mine))
else:
    print("Set TRAIN = True in the first cell (or GINR_TRAIN=1) to train this model from scratch: "
          "about 10 minutes on 2 CPU cores with the cpu profile, the full profile on a GPU.")"""


def notebook(title, intro, config):
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [md(f"# {title}\n\n{intro}"),
             code(SETUP.format(config=config)),
             md("## The model\nThe weights shipped with the package (`ginr_common/weights/`), trained with the cpu "
                "profile on the embedded photographs. The figure shows where the LPs sit: in the token sequence, "
                "and their homes on the lattice over the image, which the decoder reads around each query."),
             code(SHIPPED.format()),
             md("## Results on held-out photographs\nThe test photographs (a portrait and a street scene) were never "
                "used for training or model selection. PSNR in dB against the real image; the sentences below the "
                "table are read from the numbers. The table is the shipped model's manifest (the README's row), "
                "which the test suite measures again; the figure renders three of the crops here."),
             code(RESULTS.format()), code(FIGURE.format()),
             md("## Your own image\nAny image, any output size or scale factor: overlapping 32x32 tiles are encoded "
                "and every output pixel is decoded at its own coordinate, so non-integer factors need nothing "
                "special."),
             code(OWN.format()),
             md("## Train from scratch\nAdamW, warm-up + cosine, gradient clipping; `last.pt`, `best.pt` (on the "
                "validation photograph) and `metrics.json` in the run folder, written atomically; a finished run is "
                "reused, a partial one resumed."),
             code(TRAIN.format())]
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def encoder(config):
    m = get_config(config, "cpu").model
    p = m.patch_size
    return (f"Each image is cut into {p}x{p} patches ({m.input_size[0] * m.input_size[1] // p ** 2} tokens); "
            "learnable position tokens (LPs) are interleaved with them at equal spacing, and a bidirectional Mamba "
            "(BiMamba) stack reads the sequence both ways, so the LPs summarise the image in linear time. Every LP "
            "also has a home: a point of a lattice over the image, consistent with where it sits in the sequence.")


REFS = ("\n\nReferences: Mamba (Gu & Dao, 2023, arXiv:2312.00752); LIIF, local implicit image functions (Chen, Liu & "
        "Wang, CVPR 2021).")
NOTEBOOKS = {
    "01_standard_fourier.ipynb": notebook(
        "01 · Standard Fourier features + ResidualBlock decoder: reconstruction at any resolution",
        encoder("standard_fourier") + " The decoder is local, in the manner of LIIF: a query reads the 4 LPs and the 4 encoded patch "
        "tokens around it, each with fixed log-spaced Fourier features of its offset (in lattice units) and of "
        "the query's cell size (its pixel footprint at the output resolution), blends them by area, and a trunk "
        "of ResidualBlocks predicts the colour, plus the weights of an 8x8 filter over the input pixels around "
        "the query (zero DC gain: it adds the detail that the latents blur and never shifts the mean; "
        "`pixel_filter=0` gives the latent-only decoder). It is trained to reconstruct its input and to render "
        "the real photograph at random scales x1-x4 (targets resampled from high-resolution crops), so renders "
        "above 32x32 are learned." + REFS,
        "standard_fourier"),
    "02_gaussian_fourier.ipynb": notebook(
        "02 · Gaussian Fourier features: super-resolution as a correction on top of bicubic",
        encoder("gaussian_fourier") + " The local decoder of notebook 1 with Gaussian random Fourier features of the offsets "
        "(B ~ N(0, sigma^2): [sin(2 pi c B^T), cos(2 pi c B^T)], Tancik et al., NeurIPS 2020) predicts a residual "
        "over bicubic interpolation of the input, and the weights of an 8x8 filter over the input pixels around "
        "the query (kernel prediction; the filter has zero DC gain, so it adds detail and never shifts the local "
        "mean): the part of the correction that undoes the blur of the downsampling is a filter of the input, "
        "whose weights the features make depend on position and content. 20% of the loss is on the 32x32 input "
        "grid, 80% on random pixels of the real crop resized to a random scale between x1 and x4, so one model "
        "serves x2, x3, x4 and non-integer scales. What is validated and shipped is an exponential moving "
        "average of the weights over training (decay 0.995), which generalises better than the last weights." + REFS,
        "gaussian_fourier"),
    "03_scent_decoder.ipynb": notebook(
        "03 · SCENT-style decoder with a 2-D locality bias",
        encoder("scent") + " The decoder follows SCENT (Park et al., ICML 2025, arXiv:2504.12262): Gaussian Fourier "
        "features of the query plus the 4 nearest encoded patch tokens, pre-norm cross-attention to the LPs with "
        "a skip of the query features, GEGLU feed-forwards, and a locality bias on the attention logits computed "
        "from the query's position against each LP's home, the same function at every output resolution. "
        "Trained like notebook 1, at random scales x1-x4 of the real photographs." + REFS,
        "scent"),
}

FLOW_SETUP = """import os

import matplotlib.pyplot as plt
import torch

from ginr_common import describe_pretrained, load_checkpoint, load_pretrained, make_grid, pretrained_manifest, viz
from ginr_common.configs import config_json, default_profile, get_config, run_name
from ginr_common.data import load_dataset
from ginr_common.evaluate import evaluate_model
from ginr_common.tasks.sparse_flow import observe
from ginr_common.train import CHECKPOINTS, fit

CONFIG = "flow_sparse"
PROFILE = default_profile()   # GINR_PROFILE=smoke|cpu|full; default: full on CUDA, else cpu
TRAIN = os.environ.get("GINR_TRAIN", "1" if PROFILE == "smoke" else "0") == "1"   # train from scratch at the end
# the figures' evaluation: test tiles at 32x32, samples per tile (the mean of 4 and of K are drawn), ODE steps
N_EVAL, K, STEPS = {"smoke": (4, 2, 2), "cpu": (4, 16, 8), "full": (16, 16, 8)}[PROFILE]
plt.rcParams["figure.dpi"] = 120
data = load_dataset("photos")
print(f"profile {PROFILE}; train from scratch: {TRAIN}")"""

FLOW_SHIPPED = """model = load_pretrained(CONFIG)
print(describe_pretrained(CONFIG))
images = torch.stack([data["test"][i * 97 % len(data["test"])][0] for i in range(4)])
oc, ov, grid, unobserved = observe(images, model.config.observe_frac)   # the evaluation masks (seed 42)
viz.image_row([*images, *(images * (~unobserved).reshape(4, 1, 32, 32))], ["held-out tile"] * 4 + ["observed 20%"] * 4,
              size=1.5);"""

FLOW_RESULTS = """# the shipped model's numbers, as its manifest records them (32 test tiles, 8 HR crops for the zero-shot
# rows; python -m ginr_common.release --verify measures every one of them again, in about four minutes)
shipped = pretrained_manifest(CONFIG)["results"]
print(f"{shipped['n_images']} held-out tiles, {shipped['solver']} {shipped['steps']} steps, means of 4 and {shipped['k']}:")
print(viz.sparse_summary(shipped))
# the figures below come from a quicker evaluation of N_EVAL of those tiles (its numbers are in results)
OUT = CHECKPOINTS / f"{CONFIG}-shipped"
results, task = evaluate_model(model, CONFIG, OUT, data, n_images=N_EVAL, k=K, steps=STEPS, n_hr=2, k_hr=4,
                               sizes=(64, 128), progress=False)"""

FLOW_FIG = """viz.sparse_figure(task.figures["sparse"], task.figures["truth"], n=4,
                  title=f"{CONFIG} (shipped): 20% observed; one sample, means of 4 and {K}, spread over {K}");"""

FLOW_ZERO = """viz.zero_shot_figure(task.figures["zero_shot"], n=1, title="zero-shot renders of a held-out crop (mean of 4)");"""

FLOW_ONE_FIELD = """# one noise field, several resolutions: the same sample drawn at 32, 64 and 128
lr = task.figures["zero_shot"][64][3][:1]            # the real 64x64 crop, downsampled below
from ginr_common.data import resize
small = resize(lr, (32, 32))
o_c, o_v, _, _ = observe(small, model.config.observe_frac)
row = [model.sample(o_c, o_v, make_grid((s, s))[None], steps=STEPS, generator=torch.Generator().manual_seed(0))
       .transpose(1, 2).reshape(3, s, s) for s in (32, 64, 128)]
viz.image_row(row, ["sample at 32", "the same sample at 64", "at 128"], size=2.4);"""

FLOW_TRAIN = """if TRAIN:
    cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment
    print(config_json(cfg))
    RUN = CHECKPOINTS / run_name(cfg, "photos")
    metrics = fit(cfg, "photos", out=RUN, resume=True, on_step=viz.LiveCurves(every=max(cfg.steps // 8, 1), title=CONFIG))
    trained, _ = load_checkpoint(RUN / "best.pt")
    # the shipped model's protocol (32 tiles, k = 16, 8 HR crops), so the numbers compare with the table above;
    # seconds in the smoke profile
    quick = dict(n_images=N_EVAL, k=K, steps=STEPS, n_hr=2, sizes=(64,)) if PROFILE == "smoke" else {}
    mine, _ = evaluate_model(trained, cfg, RUN, data, progress=False, **quick)
    print(viz.sparse_summary(mine))
else:
    print("Set TRAIN = True in the first cell (or GINR_TRAIN=1) to train this model from scratch: "
          "about 14 minutes on 2 CPU cores with the cpu profile.")"""


def flow_notebook():
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [md("# 04 · Flow matching for sparse field reconstruction\n\nObserve 20% of an image's pixels and sample "
                "the whole continuous field at any resolution. The observed pixels (value + Fourier features of the "
                "coordinate), ordered along a Hilbert curve with LPs interleaved, pass once through a BiMamba "
                "encoder. A guide, the linear interpolation of the observations, is refined in context: the guide, a "
                "mask of the observed pixels and their values pass through a few convolution blocks on the 32x32 "
                "grid, whose features and correction of the guide are read at any coordinate. Each query also "
                "reads its 8 nearest observations (in the manner of LIIF); the guide plus the correction plus a "
                "linear head on top is the model's one-shot estimate mu. The flow is a bridge from mu plus noise to the image (flow matching, Lipman et al., "
                "ICLR 2023; rectified flow, Liu et al., ICLR 2023): x_t = (1 - t) x0 + t x1 with x0 = mu + s z. The "
                "network predicts x1 from x_t with the preconditioning of EDM (Karras et al., NeurIPS 2022), and at "
                "every step BiMamba blocks mix the queries in Hilbert order, so a sample is spatially coherent. The "
                "refiner also predicts how unsure the estimate is at every point (a spread a, trained by the "
                "likelihood of the estimate's error): the noise is s a z, so samples vary where the estimate is "
                "unsure and stay flat where it is sure. The "
                "noise z is a Gaussian-process field of the coordinate, so renders at different sizes are samples of "
                "one field. Training draws fresh masks on 32x32 downsamples of high-resolution crops (whole, or a half or "
                "quarter of one, so the inputs span the scales of the test tiles) and supervises the input or a "
                "window of the crop at a random scale x1-x4, so rendering above 32x32 is learned. The first steps "
                "train the grid refiner's estimate alone (guide plus correction, a few times cheaper than a joint "
                "step), so the flow starts from an estimate that already beats the guide. The checkpoint kept is the "
                "one whose single samples come closest to the truth on the validation photograph."),
             code(FLOW_SETUP),
             md("## The model and the observations"), code(FLOW_SHIPPED),
             md("## Results on held-out photographs\nThe shipped model's numbers on 32 held-out tiles, as its manifest "
                "records them (the README's row; the test suite measures them again). "
                "PSNR on the whole tile and on the unobserved pixels, SSIM, and "
                "a sample's total variation against the truth's (above 1: speckle; below 1: blur), for the model's "
                "one-shot estimate, one sample, the means of 4 and K samples, free or holding the observed pixels on "
                "their values; nearest and linear interpolation (scipy's griddata) on the same observations. The "
                "samples are drawn in antithetic pairs (noise z, then -z, which is as likely): every sample is a "
                "draw of the model, and a pair's mean cancels what is odd in the noise, so the mean of K estimates "
                "the posterior mean with less variance; the row `mean_K_independent` is the mean of K independent "
                "draws. The sentences under the table are read from the numbers."),
             code(FLOW_RESULTS), code(FLOW_FIG),
             md("## Zero-shot renders and one field at several resolutions"), code(FLOW_ZERO), code(FLOW_ONE_FIELD),
             md("## Train from scratch"), code(FLOW_TRAIN)]
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


NOTEBOOKS["04_flow_matching_sparse.ipynb"] = flow_notebook()


def shrink(path, width=1000, quality=75):
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
