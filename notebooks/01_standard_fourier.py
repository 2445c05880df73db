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
# # 01 · Standard Fourier features + ResidualBlock decoder: reconstruction at any resolution
#
# Each image is cut into 4x4 patches (64 tokens); learnable position tokens (LPs) are interleaved with them at equal spacing, and a bidirectional Mamba (BiMamba) stack reads the sequence both ways, so the LPs summarise the image in linear time. Every LP also has a home: a point of a lattice over the image, consistent with where it sits in the sequence. The decoder is local, in the manner of LIIF: a query reads the 4 LPs and the 4 encoded patch tokens around it, each with fixed log-spaced Fourier features of its offset (in lattice units) and of the query's cell size (its pixel footprint at the output resolution), blends them by area, and a trunk of ResidualBlocks predicts the colour, plus the weights of an 8x8 filter over the input pixels around the query (zero DC gain: it adds the detail that the latents blur and never shifts the mean; `pixel_filter=0` gives the latent-only decoder). It is trained to reconstruct its input and to render the real photograph at random scales x1-x4 (targets resampled from high-resolution crops), so renders above 32x32 are learned.
#
# References: Mamba (Gu & Dao, 2023, arXiv:2312.00752); LIIF, local implicit image functions (Chen, Liu & Wang, CVPR 2021).

# %%
import torch
from skimage import data as photos

from ginr_common import load_pretrained, notebook, viz
from ginr_common.configs import get_config
from ginr_common.data import load_sr_pairs, resize
from ginr_common.tasks import evaluate_sr

CONFIG = "standard_fourier"
PROFILE, TRAIN = notebook.settings()   # GINR_PROFILE=smoke|cpu|long|full; TRAIN = True (or GINR_TRAIN=1) trains at the end

# %% [markdown]
# ## The model
# The weights shipped with the package (`ginr_common/weights/`), trained with the `long` profile (9,000 steps: 32 minutes on two CPU cores) on the embedded photographs, each input a random degradation of a high-resolution crop: antialiased bicubic (40%), bilinear (20%) or box (40%) downsampling, noise of std up to 0.01 on 15% of them (`ginr_common.degradations`); the target is always the real crop. So a box-averaged input, what a camera's pixels are, renders well too: with seeds 0 and 1 this recipe gains +0.87 / +0.57 dB over bicubic at x2 / x4 on bicubic-made inputs and +0.57 / +0.36 dB on box-made ones (the mean of the two; docs/results.md). The `cpu` profile (ten minutes, bicubic-made inputs only: `GINR_PROFILE=cpu`, `TRAIN = True`, or `make run`) gains +0.71 / +0.45 dB and +0.26 / +0.15 dB (one seed). The figure shows where the LPs sit: in the token sequence, and their homes on the lattice over the image, which the decoder reads around each query.

# %%
model = load_pretrained(CONFIG)
print(notebook.shipped(CONFIG))
viz.lp_placement_figure(model);

# %% [markdown]
# ## Results on held-out photographs
# The test photographs (a portrait and a street scene) were never used for training or model selection. PSNR in dB against the real image; the sentences below the table are read from the numbers. The table is the shipped model's manifest (the README's row), which the test suite measures again: reconstruction of the held-out 32x32 test tiles, and 46 32x32 downsamples of held-out 128x128 crops rendered at 64 and 128 against the real crop, bicubic upsampling beside them.

# %%
lr, hr = load_sr_pairs("test")
_, renders = evaluate_sr(model, lr[:3], hr[:3])   # three of those crops, rendered here
viz.sr_figure(lr, renders, n=3, title=f"{CONFIG} (shipped): held-out photographs, |error| x4 maps");

# %% [markdown]
# ## One latent, any resolution
# The image is encoded once; the same latent is decoded on grids of 1x, 2x and 4x its size, each query with its own cell size.

# %%
viz.render_grid(model, lr[5], scales=(1, 2, 4));

# %% [markdown]
# ## Your own image
# Any image, any output size or scale factor: overlapping tiles of the model's input size are encoded and every output pixel is decoded at its own coordinate, so non-integer factors need nothing special. Pass a PIL image (`PIL.Image.open(path)`), an (H, W, C) NumPy array (uint8, or floats in [0, 1]) or a (C, H, W) tensor, at least 32x32; RGBA loses its alpha channel, grayscale is repeated to RGB. Here a crop of a held-out photograph, downsampled 4x, rendered back at 3.7x beside bicubic and the real photograph at that size.

# %%
crop = torch.from_numpy(photos.astronaut()[40:232, 150:342]).permute(2, 0, 1).float() / 255   # 192x192
notebook.render_comparison(model, resize(crop[None], (48, 48))[0], scale=3.7, truth=crop);

# %% [markdown]
# ## What the LPs hold: the LP latent alone
# The model above decodes from the LPs *and* the patch tokens, and its pixel filter reads the input pixels, so its reconstruction says little about what the LPs carry. `lp_latent` is the reference design's GINR: its decoder reads only the 4 LP vectors around each query (no patch tokens, no pixel filter, no input skip), so everything it renders passes through the 64 LPs of 64 numbers each (1.33x the 32x32x3 pixels). Each LP enters the sequence as its learned vector plus a projection of the mean patch embedding of its lattice cell (`lp_content`), then the BiMamba stack mixes the whole sequence. Its table is its manifest; the figure shows, for four LPs, where the decoded field changes when that one LP is replaced by the mean of the image's LPs: each LP holds the neighbourhood of its home (+).

# %%
lp_model = load_pretrained("lp_latent")
print(notebook.shipped("lp_latent"))
viz.lp_footprint_figure(lp_model, lr[5]);

# %% [markdown]
# ### How many LPs, and where
# Two seeds each at a third of the cpu budget (1,000 steps), the committed results of `python benchmarks/quality.py --experiments lp/count-16 lp/count-32 lp/count-64 lp/count-128 lp/count-256 --seeds 0 1 --out benchmarks/results/lp_count` and of the placement table in docs/results.md (each row an experiment file in `ginr_common/experiments/lp/`). Nothing is trained here.

# %%
for table, title in (("lp_count", "the LP latent alone, by LP count"),
                     ("lp_placement", "the LP latent alone, by placement of 64 LPs")):
    viz.ablation_figure(notebook.results(table)["summary"], title=title)

# %% [markdown]
# ## Train from scratch
# AdamW, warm-up + cosine, gradient clipping; `last.pt`, `best.pt` (on the validation photographs) and `metrics.json` in a run folder named after the settings (an edit trains a new run), written atomically; a finished run is reused, a partial one resumed.

# %%
cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment (or configs.with_settings)
notebook.train_from_scratch(cfg, TRAIN);
