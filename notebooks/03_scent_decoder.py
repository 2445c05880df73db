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
# Each image is cut into 2x2 patches (256 tokens); learnable position tokens (LPs) are interleaved with them at equal spacing, and a bidirectional Mamba (BiMamba) stack reads the sequence both ways, so the LPs summarise the image in linear time. Every LP also has a home: a point of a lattice over the image, consistent with where it sits in the sequence. The decoder follows SCENT (Park et al., ICML 2025, arXiv:2504.12262): Gaussian Fourier features of the query plus the 4 nearest encoded patch tokens, pre-norm cross-attention to the LPs with a skip of the query features, GEGLU feed-forwards, and a locality bias on the attention logits computed from the query's position against each LP's home, the same function at every output resolution. As in notebook 2, the decoder corrects bicubic upsampling of the input, and its features also predict an 8x8 filter over the input pixels around each query (the pixel filter); it is trained at random scales x1-x4 of the real photographs, a moving average of its weights is kept, and the checkpoint kept is the one that renders the validation photographs' crops best at x4.
#
# References: Mamba (Gu & Dao, 2023, arXiv:2312.00752); LIIF, local implicit image functions (Chen, Liu & Wang, CVPR 2021).

# %%
from ginr_common import load_pretrained, notebook, viz
from ginr_common.configs import get_config
from ginr_common.data import load_sr_pairs
from ginr_common.tasks import evaluate_sr

CONFIG = "scent"
PROFILE, TRAIN = notebook.settings()   # GINR_PROFILE=smoke|cpu|long|full; TRAIN = True (or GINR_TRAIN=1) trains at the end
model = load_pretrained(CONFIG)        # the weights shipped in ginr_common/weights/, trained with the cpu profile
print(notebook.shipped(CONFIG))

# %% [markdown]
# ## Results on held-out photographs
# The test photographs (a portrait and a street scene) were never used for training or model selection. PSNR in dB against the real image; the sentences below the table are read from the numbers. The table is the shipped model's manifest (the README's row), which the test suite measures again: reconstruction of the held-out 32x32 test tiles, and 46 32x32 downsamples of held-out 128x128 crops rendered at 64 and 128 against the real crop, bicubic upsampling beside them.

# %%
lr, hr = load_sr_pairs("test")
_, renders = evaluate_sr(model, lr[:3], hr[:3])   # three of those crops, rendered here
viz.sr_figure(lr, renders, n=3, title=f"{CONFIG} (shipped): held-out photographs, |error| x4 maps");

# %% [markdown]
# ## Where a query looks
# The first cross-attention layer's weights of one query over the LPs, drawn at each LP's home: the locality bias concentrates them around the query, at every output resolution.

# %%
for query in ((0.25, 0.25), (0.7, 0.6)):
    viz.attention_figure(model, lr[5], query=query);

# %% [markdown]
# ## Train from scratch
# AdamW, warm-up + cosine, gradient clipping; `last.pt`, `best.pt` (on the validation photographs) and `metrics.json` in a run folder named after the settings (an edit trains a new run), written atomically; a finished run is reused, a partial one resumed.

# %%
cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment (or configs.with_settings)
notebook.train_from_scratch(cfg, TRAIN);
