# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · SCENT-style decoder with a 2-D locality bias
#
# Each image is cut into 2x2 patches (256 tokens); learnable position tokens (LPs) are interleaved with them at equal spacing, and a bidirectional Mamba (BiMamba) stack reads the sequence both ways, so the LPs summarise the image in linear time. Every LP also has a home: a point of a lattice over the image, consistent with where it sits in the sequence. The decoder follows SCENT (Park et al., ICML 2025, arXiv:2504.12262): Gaussian Fourier features of the query plus the 4 nearest encoded patch tokens, pre-norm cross-attention to the LPs with a skip of the query features, GEGLU feed-forwards, and a locality bias on the attention logits computed from the query's position against each LP's home, the same function at every output resolution. Trained like notebook 1, at random scales x1-x4 of the real photographs.
#
# References: Mamba (Gu & Dao, 2023, arXiv:2312.00752); LIIF, local implicit image functions (Chen, Liu & Wang, CVPR 2021).

# %%
import os

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

CONFIG = "scent"
PROFILE = default_profile()   # GINR_PROFILE=smoke|cpu|full; default: full on CUDA, else cpu
# TRAIN = True trains this model from scratch at the end (GINR_TRAIN=1 does the same); the smoke
# profile (what CI runs) always trains, for seconds
TRAIN = os.environ.get("GINR_TRAIN", "1" if PROFILE == "smoke" else "0") == "1"
plt.rcParams["figure.dpi"] = 120
data = load_dataset("photos")
print(f"profile {PROFILE}; train from scratch: {TRAIN}")

# %% [markdown]
# ## The model
# The weights shipped with the package (`ginr_common/weights/`), trained with the cpu profile on the embedded photographs. The figure shows where the LPs sit: in the token sequence, and their homes on the lattice over the image, which the decoder reads around each query.

# %%
model = load_pretrained(CONFIG)
print(describe_pretrained(CONFIG))
viz.lp_placement_figure(model);

# %% [markdown]
# ## Results on held-out photographs
# The test photographs (a portrait and a street scene) were never used for training or model selection. PSNR in dB against the real image; the sentences below the table are read from the numbers. The table is the shipped model's manifest (the README's row), which the test suite measures again; the figure renders three of the crops here.

# %%
# the shipped model's numbers, as its manifest records them: reconstruction of the held-out 32x32 test tiles,
# and 46 32x32 downsamples of held-out 128x128 crops rendered at 64 and 128 against the real crop, bicubic
# upsampling beside them (python -m ginr_common.release --verify measures every number again, in about 30 s)
print(viz.recon_summary(pretrained_manifest(CONFIG)["results"]))

# %%
lr, hr = load_sr_pairs("test")
_, renders = evaluate_sr(model, lr[:3], hr[:3])   # three of those crops, rendered here
viz.sr_figure(lr, renders, n=3, title=f"{CONFIG} (shipped): held-out photographs, |error| x4 maps");

# %% [markdown]
# ## Your own image
# Any image, any output size or scale factor: overlapping 32x32 tiles are encoded and every output pixel is decoded at its own coordinate, so non-integer factors need nothing special.

# %%
# your own image, at least 32x32: a PIL image (PIL.Image.open(path)), an (H, W, C) NumPy array (uint8, or
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
viz.image_row([image, ref, ours, truth], [f"input {tuple(image.shape[1:])}", f"bicubic x{SCALE}: {db(ref):.1f} dB",
              f"model x{SCALE}: {db(ours):.1f} dB", "real photograph"], size=2.6);

# %% [markdown]
# ## Train from scratch
# AdamW, warm-up + cosine, gradient clipping; `last.pt`, `best.pt` (on the validation photograph) and `metrics.json` in the run folder, written atomically; a finished run is reused, a partial one resumed.

# %%
if TRAIN:
    cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment
    print(config_json(cfg))
    RUN = CHECKPOINTS / run_name(cfg, "photos")   # named after the settings: an edit trains a new run
    metrics = fit(cfg, "photos", out=RUN, resume=True, on_step=viz.LiveCurves(every=max(cfg.steps // 8, 1), title=CONFIG))
    viz.training_curves(metrics["history"], f"{CONFIG} ({PROFILE}): best validation {metrics['best_val_psnr']:.2f} dB")
    trained, _ = load_checkpoint(RUN / "best.pt")
    mine, _ = evaluate_model(trained, cfg, RUN, data, progress=False)
    print(viz.recon_summary(mine))
else:
    print("Set TRAIN = True in the first cell (or GINR_TRAIN=1) to train this model from scratch: "
          f"the shipped weights trained {pretrained_manifest(CONFIG)['train_seconds'] / 60:.0f} minutes on 2 CPU cores "
          "with the cpu profile; the full profile is for a GPU.")
