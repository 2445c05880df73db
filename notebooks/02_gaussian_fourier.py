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
# # 02 · Gaussian Fourier features: super-resolution as a correction on top of bicubic
#
# Each image is cut into 2x2 patches (256 tokens); learnable position tokens (LPs) are interleaved with them at equal spacing, and a bidirectional Mamba (BiMamba) stack reads the sequence both ways, so the LPs summarise the image in linear time. Every LP also has a home: a point of a lattice over the image, consistent with where it sits in the sequence. The local decoder of notebook 1 with Gaussian random Fourier features of the offsets (B ~ N(0, sigma^2): [sin(2 pi c B^T), cos(2 pi c B^T)], Tancik et al., NeurIPS 2020) predicts a residual over bicubic interpolation of the input, and the weights of an 8x8 filter over the input pixels around the query (kernel prediction; the filter has zero DC gain, so it adds detail and never shifts the local mean): the part of the correction that undoes the blur of the downsampling is a filter of the input, whose weights the features make depend on position and content. 20% of the loss is on the 32x32 input grid, 80% on random pixels of the real crop resized to a random scale between x1 and x4, so one model serves x2, x3, x4 and non-integer scales. What is validated and shipped is an exponential moving average of the weights over training (decay 0.995), which generalises better than the last weights.
#
# A small image is made in more than one way: data sets downsample with an antialiased bicubic filter, a camera's pixels are box averages, some inputs are noisy or blurred. The shipped weights are trained with the `long` profile (4,500 steps: 39 minutes on two CPU cores) on a random degradation of each crop: antialiased bicubic (40% of the crops), bilinear (20%) or box (40%) downsampling, noise of std up to 0.01 on 15% of them (`ginr_common.degradations`, after Real-ESRGAN's first-order model); the target is always the real crop, and the weights kept are those whose renders of the validation photographs (a cat and a portrait, 22 crops) are best on the mean over the degradations measured below (step 3,250). A Gaussian blur before the downsampling is an option (`options.degrade_blur`: the share of the inputs blurred), off by default: a model trained with a quarter of its inputs blurred learns to sharpen, and paints texture onto soft photographs (its last weights render the cat's fur 3.5 dB below bicubic). With seeds 0 and 1 this recipe gains +1.50 / +0.93 dB over bicubic at x2 / x4 on bicubic-made inputs and +1.10 / +0.68 dB on box-made ones (the mean of the two; docs/results.md). The `cpu` profile (ten minutes, bicubic-made inputs only: `GINR_PROFILE=cpu`, `TRAIN = True`) gains +1.08 / +0.65 dB over bicubic at x2 / x4 on bicubic-made inputs (two seeds) and +0.54 / +0.35 dB on box-made ones.
#
# References: Mamba (Gu & Dao, 2023, arXiv:2312.00752); LIIF, local implicit image functions (Chen, Liu & Wang, CVPR 2021).

# %%
import torch
from skimage.data import stereo_motorcycle

from ginr_common import load_pretrained, notebook, viz
from ginr_common.configs import get_config
from ginr_common.data import load_sr_pairs, resize
from ginr_common.tasks import evaluate_sr

CONFIG = "gaussian_fourier"
PROFILE, TRAIN = notebook.settings()   # GINR_PROFILE=smoke|cpu|long|full; TRAIN = True (or GINR_TRAIN=1) trains at the end
model = load_pretrained(CONFIG)        # the weights shipped in ginr_common/weights/, trained with the long profile
print(notebook.shipped(CONFIG))

# %% [markdown]
# ## Results on held-out photographs
# The test photographs (a portrait and a street scene) were never used for training or model selection. PSNR in dB against the real image; the sentences below the table are read from the numbers. The tables are the shipped model's manifest (the README's row), which the test suite measures again: reconstruction of the held-out 32x32 test tiles, and 46 32x32 downsamples of held-out 128x128 crops rendered at 64 and 128 against the real crop, bicubic upsampling beside them; then the same crops made into 32x32 inputs each way (box averaging after a blur of 0.6 output pixels; box with noise of std 0.01), the gain over bicubic upsampling of the same input.

# %%
lr, hr = load_sr_pairs("test")
_, renders = evaluate_sr(model, lr[:3], hr[:3], sizes=(64, 96, 128))   # three of those crops, at x2, x3 and x4
viz.sr_figure(lr, renders, n=3, title=f"{CONFIG} (shipped): held-out photographs at x2, x3, x4, |error| x4 maps");

# %% [markdown]
# ## Your own image
# Any image at any scale factor (non-integer ones included): a PIL image, an (H, W, C) NumPy array or a (C, H, W) tensor, at least 32x32. Here a crop of a held-out photograph (the stereo motorcycle), downsampled 4x and rendered back at 3.7x beside bicubic and the real photograph at that size.

# %%
street = torch.from_numpy(stereo_motorcycle()[0][100:292, 300:492]).permute(2, 0, 1).float() / 255   # 192x192
notebook.render_comparison(model, resize(street[None], (48, 48))[0], scale=3.7, truth=street);

# %% [markdown]
# ## Train from scratch
# AdamW, warm-up + cosine, gradient clipping; `last.pt`, `best.pt` (on the validation photographs) and `metrics.json` in a run folder named after the settings (an edit trains a new run), written atomically; a finished run is reused, a partial one resumed.

# %%
cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment (or configs.with_settings)
notebook.train_from_scratch(cfg, TRAIN);
