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
# # 04 · Flow matching for sparse field reconstruction
#
# Observe 20% of an image's pixels and sample the whole continuous field at any resolution. The observed pixels (value + Fourier features of the coordinate), ordered along a Hilbert curve with LPs interleaved, pass once through a BiMamba encoder. A guide, the linear interpolation of the observations, is refined in context: the guide, a mask of the observed pixels and their values pass through a few convolution blocks on the 32x32 grid, whose features and correction of the guide are read at any coordinate. Each query also reads its 8 nearest observations (in the manner of LIIF); the guide plus the correction plus a linear head on top is the model's one-shot estimate mu. The flow is a bridge from mu plus noise to the image (flow matching, Lipman et al., ICLR 2023; rectified flow, Liu et al., ICLR 2023): x_t = (1 - t) x0 + t x1 with x0 = mu + s z. The network predicts x1 from x_t with the preconditioning of EDM (Karras et al., NeurIPS 2022), and at every step BiMamba blocks mix the queries in Hilbert order, so a sample is spatially coherent; samples are drawn by a solver that integrates the Gaussian part of this flow exactly, so they settle by 8 steps (shown below). The refiner also predicts how unsure the estimate is at every point (a spread a, trained by the likelihood of the estimate's error): the noise is s a z, so samples vary where the estimate is unsure and stay flat where it is sure. The noise z is a Gaussian-process field of the coordinate, so renders at different sizes are samples of one field. Training draws fresh masks on 32x32 downsamples of high-resolution crops (whole, or a half or quarter of one, so the inputs span the scales of the test tiles) and supervises the input or a window of the crop at a random scale x1-x4, so rendering above 32x32 is learned. The first steps train the grid refiner's estimate alone (guide plus correction, a few times cheaper than a joint step), so the flow starts from an estimate that already beats the guide. The checkpoint kept is the one whose single samples come closest to the truth on the validation photographs.
#
# The weights shipped with the package are trained with the `long` profile: 3,000 steps of batch 16, the first 1,800 of them the estimate alone, 45 minutes on two CPU cores. With seeds 0 and 1 this recipe's mean of 16 samples is 1.60 dB above linear interpolation on the unobserved pixels of 32 held-out tiles (SSIM 0.835 on the whole tile), and one sample's colour varies 0.81x as much as the truth's from pixel to pixel, with its colour temperature calibrated on the validation photographs (1.48x at temperature 1, the model's own draws; docs/results.md). The `cpu` profile (1,000 steps, 600 of them the estimate: about 20 minutes; `GINR_PROFILE=cpu`, `TRAIN = True`, or `make run`) gives +1.05 dB, SSIM 0.818 and 1.76x (seed 0, at temperature 1).

# %%
import os

import torch

from ginr_common import describe_pretrained, load_pretrained, make_grid, notebook, pretrained_manifest, viz
from ginr_common.configs import get_config
from ginr_common.data import load_dataset, resize
from ginr_common.evaluate import evaluate_model
from ginr_common.tasks.sparse_flow import observe

CONFIG = "flow_sparse"
PROFILE, TRAIN = notebook.settings()   # GINR_PROFILE=smoke|cpu|long|full; TRAIN = True (or GINR_TRAIN=1) trains at the end
# the figures' evaluation: test tiles at 32x32, samples per tile (the mean of 4 and of K are drawn), ODE steps
N_EVAL, K, STEPS = (4, 2, 2) if PROFILE == "smoke" else (4, 16, 8)
data = load_dataset("photos")

# %% [markdown]
# ## The model and the observations

# %%
model = load_pretrained(CONFIG)
print(describe_pretrained(CONFIG))
images = torch.stack([data["test"][i * 97 % len(data["test"])][0] for i in range(4)])
oc, ov, grid, unobserved = observe(images, model.config.observe_frac)   # the evaluation masks (seed 42)
SIZE = model.config.input_size                                         # the model's base grid, (32, 32)
viz.image_row([*images, *(images * (~unobserved).reshape(len(images), 1, *SIZE))],
              ["held-out tile"] * 4 + ["observed 20%"] * 4, size=1.5);

# %% [markdown]
# ## Results on held-out photographs
# The shipped model's numbers on 32 held-out tiles, as its manifest records them (the README's row; the test suite measures them again). PSNR on the whole tile and on the unobserved pixels, SSIM, and a sample's total variation against the truth's (above 1: speckle; below 1: blur), for the model's one-shot estimate, one sample, the means of 4 and K samples, free or holding the observed pixels on their values; nearest and linear interpolation (scipy's griddata) on the same observations. The samples are drawn in antithetic pairs (noise z, then -z, which is as likely): every sample is a draw of the model, and a pair's mean cancels what is odd in the noise, so the mean of K estimates the posterior mean with less variance than K independent draws (`python benchmarks/sparse_quality.py` measures both; docs/results.md). The sentences under the table are read from the numbers.

# %%
# the shipped model's numbers, as its manifest records them (32 test tiles, 8 HR crops for the zero-shot
# rows; python -m ginr_common.release --verify measures every one of them again, in about two and a half minutes)
shipped = pretrained_manifest(CONFIG)["results"]
print(f"{shipped['n_images']} held-out tiles, {shipped['solver']} {shipped['steps']} steps, means of 4 and {shipped['k']}:")
print(viz.sparse_summary(shipped))
# the figures below come from a quicker evaluation of N_EVAL of those tiles (its numbers are in results)
results, predictions = evaluate_model(model, CONFIG, data=data, n_images=N_EVAL, k=K, steps=STEPS, n_hr=2, k_hr=4,
                                      sizes=(64, 128), progress=False)

# %%
viz.sparse_figure(predictions["sparse"], predictions["truth"], n=4, errors=True,
                  title=f"{CONFIG} (shipped): 20% observed; one sample, means of 4 and {K}, spread over {K}; "
                        "under each row, every method's error");

# %% [markdown]
# ## The colour temperature
# Drawn from the model's own distribution (temperature 1), a sample's colour varies from pixel to pixel much more than the truth's: colour grain. The noise's colour (each channel's difference from the channel mean) is drawn at a lower temperature, calibrated on the validation photographs so that a sample's colour varies, relative to the truth's, no more than the image as a whole does (`ginr_common.tasks.sparse_flow.calibrate`); it is shipped with the weights, and `temperature=(1, 1)` in `sample`/`samples` draws the model's own distribution. Below: one sample of three tiles from the same noise at both temperatures, each with its colour's total variation over the truth's.

# %%
from ginr_common.tasks.sparse_flow import tv_ratios

shipped_t = tuple(round(v, 2) for v in model.temperature.tolist())
rows = {}
for t in ((1.0, 1.0), shipped_t):
    x = model.sample(oc[:3], ov[:3], grid[:3], steps=STEPS, generator=torch.Generator().manual_seed(0), temperature=t)
    rows[t] = x.transpose(1, 2).reshape(images[:3].shape)
    print(f"temperature {t} (brightness, colour): colour TV / truth's {tv_ratios(rows[t], images[:3])['chroma_tv_ratio']:.2f}")
viz.image_row([*images[:3], *rows[(1.0, 1.0)], *rows[shipped_t]],
              ["truth"] * 3 + ["temperature 1"] * 3 + [f"colour temperature {shipped_t[1]}"] * 3, size=1.5);

# %% [markdown]
# ## A sample as the solver refines
# The network predicts the field as mu + c_skip (x_t - mu) + c_out F. The middle term is the flow of a Gaussian field around the estimate, and the default solver ("exponential", `ginr_common.flow.sampler`) integrates it exactly: in w = (x_t - mu) / sigma(t) and an angle phi(t) the flow is dw/dphi = F, stepped in equal angles. So a sample settles by 8 steps, and its scores at 16 and 32 steps are those at 8. Euler steps in t (the solver of earlier releases) miss that curved part by less at every doubling, so their sample keeps changing: grainier and further from the truth as the steps grow. Below: PSNR on the unobserved pixels and total variation over the truth's of one sample (the mean of an antithetic pair's scores) on the tiles above, and the first tile's sample from the same noise.

# %%
from ginr_common.tasks.sparse_flow import one_sample_by_steps

SOLVER_STEPS, SHOWN = ((2, 4), (2, 4)) if PROFILE == "smoke" else ((4, 8, 16, 32), (4, 8, 32))   # scored, drawn
for solver in ("exponential", "euler"):
    by = one_sample_by_steps(model, images, SOLVER_STEPS, solver)
    print(f"{solver:11s} " + "   ".join(f"{n} steps: {r['psnr_unobserved']:.2f} dB, TV {r['tv_ratio']:.2f}"
                                       for n, r in by.items()))
draws = [model.sample(oc[:1], ov[:1], grid[:1], steps=n, solver=solver, generator=torch.Generator().manual_seed(0))
         .transpose(1, 2).reshape(3, *SIZE) for solver in ("exponential", "euler") for n in SHOWN]
viz.image_row(draws, [f"{solver}, {n} steps" for solver in ("exponential", "euler") for n in SHOWN],
              size=1.5);

# %% [markdown]
# ## Zero-shot renders and one field at several resolutions

# %%
viz.zero_shot_figure(predictions["zero_shot"], n=1, title="zero-shot renders of a held-out crop (mean of 4)");

# %%
# one noise field, several resolutions: the same sample drawn at 1x, 2x and 4x the base grid
crop = predictions["zero_shot"][64][3][:1]            # a real 64x64 crop, downsampled to the base grid below
o_c, o_v, _, _ = observe(resize(crop, SIZE), model.config.observe_frac)
sizes = [tuple(f * n for n in SIZE) for f in (1, 2, 4)]
row = [model.sample(o_c, o_v, make_grid(s)[None], steps=STEPS, generator=torch.Generator().manual_seed(0))
       .transpose(1, 2).reshape(3, *s) for s in sizes]
viz.image_row(row, [f"sample at {sizes[0][0]}", f"the same sample at {sizes[1][0]}", f"at {sizes[2][0]}"], size=2.4);

# %% [markdown]
# ## Your own image
# Set `MY_IMAGE` to the path of a photograph of yours (PNG, JPEG, TIFF, BMP; or `GINR_IMAGE=path` in the environment): its centre square, resized to 4x the model's grid, is the truth; its downsample to the grid is what the model sees, of which the model's share of pixels (20%) is observed. The field is sampled from them at 2x and 4x the grid (one noise field for both sizes), beside linear interpolation of the same observations upsampled bicubically. Without a path, a held-out test crop stands in.

# %%
from ginr_common.data import read_image
from ginr_common.tasks.sparse_flow import evaluate_sparse_zero_shot

MY_IMAGE = os.environ.get("GINR_IMAGE")   # a path, or None
BIG = tuple(4 * n for n in SIZE)
if MY_IMAGE:
    img = read_image(MY_IMAGE)
    side = min(img.shape[1:])
    top, left = (img.shape[1] - side) // 2, (img.shape[2] - side) // 2
    truth = resize(img[None, :, top:top + side, left:left + side], BIG)
else:
    truth = resize(data["test_sr"][1][-1:], BIG)   # a held-out high-resolution crop
scores, renders = evaluate_sparse_zero_shot(model, resize(truth, SIZE), truth, sizes=(2 * SIZE[0], BIG[0]), k=4,
                                            steps=STEPS)
viz.zero_shot_figure(renders, n=1, title=f"{'your image' if MY_IMAGE else 'a held-out crop'}: "
                     f"{model.config.observe_frac:.0%} of its {SIZE[0]}x{SIZE[1]} downsample observed, mean of 4 samples");

# %% [markdown]
# ## Train from scratch

# %%
cfg = get_config(CONFIG, PROFILE)   # a dataclass: change fields here to experiment (or configs.with_settings)
# evaluated as the shipped model is (32 tiles, k = 16, 8 HR crops), so the numbers compare with the table above;
# seconds in the smoke profile
quick = dict(n_images=N_EVAL, k=K, steps=STEPS, n_hr=2, sizes=(64,)) if PROFILE == "smoke" else {}
notebook.train_from_scratch(cfg, TRAIN, data="photos", **quick);
