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
#
# %% [markdown]
# # 05 · Volumes: MRI at any resolution
#
# The same model in three dimensions. A 32x32x32 volume is cut into 4x4x4 patches (512 tokens); 64 learnable position tokens (LPs), whose homes form a 4x4x4 lattice over the volume, are interleaved with them, and a bidirectional Mamba (BiMamba) stack reads the sequence both ways: the cost grows linearly with the number of tokens, which is what makes 3-D inputs affordable. The decoder is the local decoder of notebook 1 in 3-D: a query reads the 8 LPs and the 8 encoded patch tokens around it (the corners of its lattice cell) with Fourier features of its offsets and its cell size, and predicts a residual over trilinear interpolation of the input, plus the weights of a 4x4x4 filter over the input voxels around it. It is trained to reconstruct its input and to render the real volume at random scales x1-x2.
#
# The data are real MRI volumes that install with nilearn (no download): the MNI152 T1 template and its grey- and white-matter maps at 1 mm (197 x 233 x 189). They are split into disjoint slabs along the anterior-posterior axis: the model trains on the slab y >= 144 (all three volumes), is selected on the T1 slab 80 <= y < 144, and is tested on the T1 slab 16 <= y < 80, which it never saw. The x2 test: 64^3 crops of the test slab, average-pooled to the 32^3 input, rendered back at 64^3 and compared with the real crop, beside trilinear interpolation of the same input.
#
# References: Mamba (Gu & Dao, 2023, arXiv:2312.00752); LIIF, local implicit image functions (Chen, Liu & Wang, CVPR 2021); the MNI ICBM 2009a template (Fonov et al., NeuroImage 2011).

# %%
from ginr_common import load_pretrained, notebook, viz
from ginr_common.baselines import upsample
from ginr_common.configs import get_config
from ginr_common.data import load_dataset
from ginr_common.tasks import evaluate_sr

CONFIG = "volume"
PROFILE, TRAIN = notebook.settings()   # GINR_PROFILE=smoke|cpu|long|full; TRAIN = True (or GINR_TRAIN=1) trains at the end
model = load_pretrained(CONFIG)        # the weights shipped in ginr_common/weights/, trained with the cpu profile
print(notebook.shipped(CONFIG))

# %% [markdown]
# ## Results on the held-out slab
# The table is the shipped model's manifest (the README's row), which the test suite measures again: reconstruction of the held-out 32^3 test tiles, and the 64^3 crops of the test slab rendered at x2 against the real crop, beside trilinear interpolation. The figure shows one crop: axial, coronal and sagittal middle slices, the absolute errors magnified four times.

# %%
data = load_dataset("mni152", size=model.config.input_size, channels=model.config.in_channels)
lr, hr = data["test_sr"]
_, renders = evaluate_sr(model, lr[1:2], hr[1:2], sizes=(hr.shape[-1],))   # one of those crops, rendered here
viz.volume_figure(lr[1:2], renders, title=f"{CONFIG} (shipped): a held-out MRI crop at x2");

# %% [markdown]
# ## One latent, any size
# The volume is encoded once and decoded on a grid of any size, here 2.5x its own along every axis (80^3 voxels, queries decoded in chunks, so memory stays bounded), beside trilinear interpolation.

# %%
size = tuple(5 * n // 2 for n in model.config.input_size)
viz.volume_figure(lr[1:2], {size[0]: (upsample(lr[1:2], size), model.render(lr[1:2], size), None)},
                  title=f"{CONFIG}: one latent decoded at {size[0]}^3");

# %% [markdown]
# ## Your own volumes
# `python -m ginr_common.train --config volume --data FOLDER` trains on a folder of volumes: NumPy arrays (`.npy`, `.npz`) shaped (D, H, W) or (C, D, H, W), uint8 or floats in [0, 1], or NIfTI files (`.nii`, `.nii.gz`, read with nibabel and scaled by their 99.9th percentile), with `train/`, `val/` and `test/` subfolders or split by file name. `ginr_common.data.read_volume(path)` reads one; `model.render(volume[None], (D, H, W))` renders it at any size.

# %% [markdown]
# ## Train from scratch
# AdamW, warm-up + cosine, gradient clipping; `last.pt`, `best.pt` (on the validation slab) and `metrics.json` in a run folder named after the settings, written atomically; a finished run is reused, a partial one resumed.

# %%
cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment (or configs.with_settings)
notebook.train_from_scratch(cfg, TRAIN);
