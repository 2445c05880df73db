"""Sparse-field reconstruction by flow matching: observe a fraction of an image's pixels and
learn the flow that carries (the model's estimate + noise) to the field, at any resolution.

Training stages (``stages``): the first ``options.estimate_steps`` train the grid refiner's
estimate alone (batches without time or noise, at s = 1), then everything jointly.

Batch (a pure function of the step): high-resolution training crops and a render scale s (1 on
NATIVE_SHARE of the steps and in the estimate stage, else s ~ U(cfg.sr_scales)). The input: at
s = 1 a window of 1/w of each crop (w drawn from ``options.native_windows``, so the inputs span
the scales of the evaluation tiles), else the whole crop, antialiased down to the model's input
size, with a fresh random mask observing ``observe_frac`` of its pixels. The queries: at s = 1 the
input grid, else a window of at most input_size pixels of the crop resized to input_size * s
(their targets and cell size); the noise field at the queries and the times (t = 1 - (1 -
u)^``options.time_power``, u uniform). With sr_scales=() the queries are the input-size image
itself.

Validation: PSNR on the unobserved pixels of one eight-step sample, averaged over 4 samples (two
antithetic pairs, see ``flow.sampler.samples``) on up to VAL_TILES validation tiles: a sample's error is
the posterior mean's plus its own spread, so the checkpoint kept is the one whose draws are
closest to the truth. Evaluation: see ``SparseFlowTask.evaluate``.
"""
import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from ginr_common.baselines import bicubic, interpolate_sparse
from ginr_common.curves import take_rows
from ginr_common.data import resize, sparse_masks
from ginr_common.flow import FlowConfig, flow_matching_loss
from ginr_common.flow.noise import noise_for
from ginr_common.fourier import make_grid
from ginr_common.metrics import chroma, masked_psnr, psnr, ssim, ssim_torch, total_variation
from ginr_common.tasks.base import Task
from ginr_common.viz import image_grid, sparse_figure, zero_shot_figure

EVAL_MASK_SEED = 42
NATIVE_SHARE = 0.5     # with sr_scales: the share of steps supervised at the input size itself (s = 1)
VAL_TILES = 32         # validation tiles (spread over the validation split)


@dataclass
class FlowOptions:
    """The options of sparse-field flow matching (defaults: notebook 4's cpu model)."""
    native_windows: tuple = (1, 2, 4)  # with sr_scales: the input of a step at s = 1 is a window of 1/w of each HR
                                       # crop (w drawn from these) resized to input_size; 1: the whole crop
    estimate_steps: int = 600          # the first steps train the grid refiner's estimate alone (0: none)
    time_power: float = 0.5            # training times t = 1 - (1 - u)^time_power, u ~ U(0, 1) (1: uniform; below 1
                                       # more of the early times, above 1 more of the late times)
    ssim_weight: float = 0.0           # adds ssim_weight x (1 - SSIM) of the estimate mu over each step's window of
                                       # queries (input_size pixels) to the loss (metrics.ssim_torch; 2-D fields of
                                       # 7+ pixels a side)

    def __post_init__(self):
        self.native_windows = tuple(self.native_windows)

    def check(self, cfg):
        """Raise ValueError when an option is out of range (``cfg``: the TrainConfig holding them)."""
        if not self.native_windows or not all(isinstance(w, int) and w >= 1 for w in self.native_windows):
            raise ValueError(f"options.native_windows must be integers >= 1 (1: the whole crop), got "
                             f"{self.native_windows}")
        if not 0 <= self.estimate_steps < cfg.steps:
            raise ValueError(f"options.estimate_steps must be in [0, steps={cfg.steps}), got {self.estimate_steps}")
        if self.estimate_steps and not cfg.model.grid_blocks:
            raise ValueError("options.estimate_steps > 0 trains the grid refiner alone: it needs model.grid_blocks > 0")
        if not self.ssim_weight >= 0:
            raise ValueError(f"options.ssim_weight must be >= 0 (0: the estimate's MSE alone), got {self.ssim_weight}")
        if self.ssim_weight and len(cfg.model.input_size) != 2:
            raise ValueError(f"options.ssim_weight > 0 needs 2-D fields (SSIM is of images), got input_size "
                             f"{tuple(cfg.model.input_size)}")
        if self.ssim_weight and min(cfg.model.input_size) < 7:
            raise ValueError(f"options.ssim_weight > 0 needs windows of at least 7 pixels a side (SSIM's window), "
                             f"got input_size {tuple(cfg.model.input_size)}")
        if not self.time_power > 0:
            raise ValueError(f"options.time_power must be > 0 (1: uniform training times), got {self.time_power}")

    def for_steps(self, steps, new_steps):
        """The options for a run of ``new_steps`` instead of ``steps``: the estimate stage keeps its share."""
        return dataclasses.replace(self, estimate_steps=self.estimate_steps * new_steps // steps)


class SparseFlowTask(Task):
    name = "sparse_flow"
    model_config, options_class = FlowConfig, FlowOptions

    def stages(self):
        e = self.cfg.options.estimate_steps
        return [("estimate", 0), ("joint", e)] if e else [("joint", 0)]

    def batch(self, train_set, step):
        cfg, mcfg, opt = self.cfg, self.cfg.model, self.cfg.options
        images, g, idx = self.images(train_set, step)
        size = mcfg.input_size
        hr = images
        B, n = len(idx), math.prod(size)
        estimating = step < opt.estimate_steps
        native = not cfg.sr_scales or float(torch.rand((), generator=g)) < NATIVE_SHARE or estimating
        src = images
        if cfg.sr_scales and native:   # a window of 1/r of the crop: inputs at the scales of the evaluation tiles
            r = opt.native_windows[int(torch.randint(len(opt.native_windows), (), generator=g))]
            win = [m // r for m in hr.shape[2:]]
            start = [int(torch.randint(0, m - k + 1, (), generator=g)) for m, k in zip(hr.shape[2:], win)]
            src = hr[(slice(None), slice(None), *(slice(o, o + k) for o, k in zip(start, win)))]
        lr = resize(src, size) if src.shape[2:] != size else src
        obs = sparse_masks([step * cfg.batch_size + j for j in range(B)], n, mcfg.observe_frac, seed=cfg.seed + 1)
        grid = make_grid(size).expand(B, -1, -1)
        target_img = lr
        if cfg.sr_scales:
            lo, hi = cfg.sr_scales
            s = 1.0 if native else lo + (hi - lo) * float(torch.rand((), generator=g))
            hr_size = tuple(max(m, round(m * s)) for m in size)
            target_img = lr if hr_size == size else hr if hr.shape[2:] == hr_size else resize(hr, hr_size)
        S = target_img.shape[2:]
        win = [min(a, b) for a, b in zip(S, size)]      # a window of at most input_size pixels
        start = [int(torch.randint(0, a - w + 1, (), generator=g)) for a, w in zip(S, win)]
        full = make_grid(S).view(*S, len(S))
        sl = tuple(slice(o, o + w) for o, w in zip(start, win))
        queries = full[sl].reshape(-1, len(S)).expand(B, -1, -1)
        targets = target_img[(slice(None), slice(None), *sl)].flatten(2).transpose(1, 2)
        values = lr.flatten(2).transpose(1, 2)
        out = {"obs_coords": take_rows(grid, obs), "obs_values": take_rows(values, obs),
               "query_coords": queries, "targets": targets,
               "cell": (1 / torch.tensor(S, dtype=torch.float32)).expand(B, -1)}
        if estimating:     # no time, no noise: the refiner's estimate alone
            return out
        return {**out, "t": 1 - (1 - torch.rand(B, generator=g)) ** opt.time_power,
                "z": noise_for(mcfg, queries, g)}

    def loss(self, net, batch):
        """The flow-matching loss (``flow.bridge.flow_matching_loss``) of the batch's stage: a batch
        without times trains the estimate alone."""
        out = net(batch["obs_coords"], batch["obs_values"], batch["query_coords"], batch["targets"], batch["cell"],
                  batch.get("z"), batch.get("t"), stage="joint" if "t" in batch else "estimate")
        m, w = self.cfg.model, self.cfg.options.ssim_weight
        loss = flow_matching_loss(out, m.residual_std, m.mu_weight)
        if w:    # the queries are a window of input_size pixels of the target, in row-major order
            shape = (len(out.mu), *m.input_size, out.mu.shape[-1])
            as_image = lambda v: v.reshape(shape).permute(0, 3, 1, 2)  # noqa: E731
            loss = loss + w * (1 - ssim_torch(as_image((out.mu + 1) / 2), as_image(batch["targets"]))).mean()
        mu = ((out.mu.detach() + 1) / 2).clamp(0, 1)
        return loss, psnr(mu, batch["targets"]).mean()

    def validate(self, model, datasets):
        return sample_psnr(model, self._val_tiles(datasets))

    @staticmethod
    def _val_tiles(datasets):
        """Up to VAL_TILES tiles (B, C, H, W) spread over the validation split."""
        val = datasets["val"]
        pick = torch.linspace(0, len(val) - 1, min(VAL_TILES, len(val))).long()
        return torch.stack([val[int(i)][0] for i in pick])

    def calibrate(self, model, datasets):
        """An RGB model's colour temperature (``calibrate``), on the tiles ``validate`` scores."""
        return calibrate(model, self._val_tiles(datasets)) if model.config.in_channels == 3 else None

    @torch.no_grad()
    def preview(self, model, datasets, n=4):
        """The first ``n`` validation tiles: what is observed, one sample (Euler 8 steps, seed 0) and
        the tile, one row each, (3, H, W) in [0, 1]."""
        model.eval()
        x = torch.stack([datasets["val"][i][0] for i in range(min(n, len(datasets["val"])))])
        oc, ov, grid, unobserved = observe(x, model.config.observe_frac)
        y = model.sample(oc, ov, grid, steps=8, generator=torch.Generator().manual_seed(0))
        as_image = lambda v: v.transpose(1, 2).reshape(x.shape)  # noqa: E731
        shown = x * (~unobserved).reshape(len(x), 1, *x.shape[2:])
        return image_grid(torch.cat([shown, as_image(y), x]), len(x))

    def evaluate(self, model, datasets, progress=True, sr_pairs=None, n_images=32, k=16, steps=8, solver="exponential",
                 sizes=(64, 128), n_hr=8, k_hr=4, independent=False):
        """At the input size, on ``n_images`` test tiles spread over the test split: the model's
        estimate, one sample and the means of 4 and ``k`` samples in antithetic pairs (free; holding the
        observed pixels: one sample and the mean of 4; with ``independent``, free also the mean of ``k`` independent draws), nearest and
        linear interpolation; zero-shot at ``sizes`` on ``n_hr`` HR test crops ``sr_pairs`` (mean
        of ``k_hr`` samples against linear + bicubic). -> (results, predictions {"sparse": the
        free rows' images, "truth": the tiles, "zero_shot": {size: (baseline, sample, mean, truth)}})."""
        test = datasets["test"]
        pick = torch.linspace(0, len(test) - 1, min(n_images, len(test))).long()
        images = torch.stack([test[int(i)][0] for i in pick])
        ks = tuple(sorted({1, 4, k}))
        results = {"n_images": len(images), "k": k, "steps": steps, "solver": solver,
                   "temperature": [round(v, 4) for v in model.temperature.tolist()]}
        preds = {}
        for hold in (False, True):    # holding the observed pixels: one sample and the mean of 4
            r = evaluate_sparse(model, images, ks=ks if not hold else (1, 4), steps=steps, solver=solver,
                                hold_known=hold, baselines=not hold, with_ssim=True, progress=progress)
            preds[hold] = r.pop("images")
            results["hold_known" if hold else "free"] = r
        if independent:
            iid = evaluate_sparse(model, images, ks=(k,), steps=steps, solver=solver, antithetic=False, with_ssim=True,
                                  progress=progress)
            results["free"][f"mean_{k}_independent"] = iid[f"mean_{k}"]   # the same k, independent draws
        predictions = {"sparse": preds[False], "truth": images}
        if sr_pairs is not None:
            lr, hr = sr_pairs
            pick = torch.linspace(0, len(lr) - 1, min(n_hr, len(lr))).long()
            results["zero_shot"], predictions["zero_shot"] = evaluate_sparse_zero_shot(
                model, lr[pick], hr[pick], sizes, k=k_hr, steps=steps, solver=solver)
            results["zero_shot_note"] = (f"{len(pick)} HR test crops; {model.config.observe_frac:.0%} of the "
                                         f"{lr.shape[-1]}x{lr.shape[-1]} downsample observed; model: mean of {k_hr} "
                                         "samples (antithetic pairs); baseline: bicubic upsampling of the linear "
                                         "interpolation")
        return results, predictions

    def figures(self, model, results, predictions):
        c = model.config
        out = {"sparse.png": sparse_figure(predictions["sparse"], predictions["truth"], n=4,
                                           title=f"{c.name}: {c.observe_frac:.0%} of each held-out tile observed; "
                                                 f"{results['solver']} {results['steps']} steps")}
        if "zero_shot" in predictions:
            out["zero_shot.png"] = zero_shot_figure(predictions["zero_shot"], title=f"{c.name}: zero-shot renders "
                                                    "of held-out crops")
        return out


def observe(images, frac, seed=EVAL_MASK_SEED):
    """The evaluation masks (per image index) applied to images (B, C, H, W): (obs coords,
    obs values, full grid (B, H*W, 2), unobserved mask (B, H*W))."""
    B, C, H, W = images.shape
    grid = make_grid((H, W)).expand(B, -1, -1)
    obs = sparse_masks(range(B), H * W, frac, seed=seed)
    values = images.flatten(2).transpose(1, 2)
    unobserved = torch.ones(B, H * W, dtype=torch.bool).scatter_(1, obs, False)
    return take_rows(grid, obs), take_rows(values, obs), grid, unobserved


@torch.no_grad()
def sample_psnr(model, images, k=4, steps=8, seed=0):
    """PSNR on the unobserved pixels of one sample of ``images`` (B, C, H, W) from the evaluation
    masks, averaged over k samples (antithetic pairs) and the images."""
    model.eval()
    B, C, H, W = images.shape
    oc, ov, grid, unobserved = observe(images, model.config.observe_frac)
    xs = model.samples(oc, ov, grid, k=k, generator=torch.Generator().manual_seed(seed), steps=steps)
    return float(torch.stack([masked_psnr(x.transpose(1, 2).reshape(B, C, H, W), images, unobserved)
                              for x in xs]).mean())


def tv_ratios(pred, truth):
    """{"tv_ratio": total variation of pred over truth's, "chroma_tv_ratio": the same of their
    colour (``metrics.chroma``; RGB only)}, means over the images. Speckle raises them, blur lowers them."""
    ratio = lambda f: float((total_variation(f(pred)) / total_variation(f(truth)).clamp_min(1e-8)).mean())  # noqa: E731
    return {"tv_ratio": ratio(lambda x: x), **({"chroma_tv_ratio": ratio(chroma)} if truth.shape[1] == 3 else {})}


def _scores(pred, images, unobserved, with_ssim):
    out = {"psnr": float(psnr(pred, images).mean()),
           "psnr_unobserved": float(masked_psnr(pred, images, unobserved).mean()), **tv_ratios(pred, images)}
    if with_ssim:
        out["ssim"] = float(ssim(pred, images).mean())
    return out


@torch.no_grad()
def evaluate_sparse(model, images, ks=(1, 4, 16), steps=8, solver="exponential", hold_known=False, seed=0,
                    baselines=False, with_ssim=False, batch_size=32, progress=False, antithetic=True):
    """Sparse-field reconstruction of ``images`` (B, C, H, W) at the model's input size from the
    evaluation masks. Rows: ``sample`` (one sample), ``mean_k`` (the mean of the first k samples
    for each k in ``ks``; ``antithetic``: drawn in pairs with the noise z and -z, see
    ``SparseFieldFlow.samples``), ``estimate`` (the model's one-shot estimate mu), and with
    ``baselines`` nearest and linear interpolation on the same masks. Each: PSNR on the full
    image and on the unobserved pixels, the total-variation ratio to the truth (, SSIM); the
    sampled rows also seconds per sample per image. Returns {row: scores, ..., "images":
    predictions incl. "std" over the largest k}."""
    model.eval()
    B, C, H, W = images.shape
    oc, ov, grid, unobserved = observe(images, model.config.observe_frac)
    as_img = lambda v: v.transpose(1, 2).reshape(B, C, H, W)  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    parts = [model.samples(oc[i:i + batch_size], ov[i:i + batch_size], grid[i:i + batch_size], k=max(ks),
                           generator=g, antithetic=antithetic, progress=progress, steps=steps, solver=solver,
                           hold_known=hold_known) for i in range(0, B, batch_size)]
    per_sample = (time.perf_counter() - t0) / (max(ks) * B)
    stacked = torch.stack([as_img(x) for x in torch.cat(parts, 1)])
    preds = {"sample": stacked[0], **{f"mean_{k}": stacked[:k].mean(0) for k in ks if k > 1}}
    preds["estimate"] = as_img(torch.cat([model.estimate(oc[i:i + batch_size], ov[i:i + batch_size],
                                                         grid[i:i + batch_size]) for i in range(0, B, batch_size)]))
    if baselines:
        for m in ("nearest", "linear"):
            preds[m] = as_img(interpolate_sparse(oc, ov, grid, m))
    res = {name: _scores(p, images, unobserved, with_ssim) for name, p in preds.items()}
    for name in preds:
        if name == "sample" or name.startswith("mean_"):
            res[name]["seconds_per_image"] = per_sample * (1 if name == "sample" else int(name.split("_")[1]))
    res["images"] = {**preds, "std": stacked.std(0) if len(stacked) > 1 else torch.zeros_like(stacked[0]),
                     "observed": images * (~unobserved).reshape(B, 1, H, W)}
    return res


@torch.no_grad()
def one_sample_by_steps(model, images, steps=(8, 16, 32), solver="exponential", seed=0, temperature=None):
    """How one sample of ``images`` (B, C, H, W) changes as the solver refines: at each number of
    ``steps``, from the same noise and the evaluation masks, the PSNR on the unobserved pixels and
    the (chroma) total-variation ratios to the truth of one draw, averaged over an antithetic pair
    (z and -z) -> {steps: scores}. A flow that converges gives nearly the same scores at every count.
    ``temperature``: see ``SparseFieldFlow.temper`` (default: the model's)."""
    model.eval()
    B, C, H, W = images.shape
    oc, ov, grid, unobserved = observe(images, model.config.observe_frac)
    out = {}
    for n in steps:
        xs = model.samples(oc, ov, grid, k=2, generator=torch.Generator().manual_seed(seed), steps=n, solver=solver,
                           temperature=temperature)
        scores = [_scores(x.transpose(1, 2).reshape(B, C, H, W), images, unobserved, False) for x in xs]
        out[n] = {key: sum(sc[key] for sc in scores) / 2 for key in scores[0]}
    return out


@dataclass
class Calibration:
    """What ``calibrate`` set: the temperatures (brightness, colour), and one sample's ratios to the
    truth (``tv_ratios``, with its PSNR on the unobserved pixels) on the calibration tiles at (1, 1)
    (``before``) and at the temperatures (``after``)."""
    temperature: tuple
    before: dict
    after: dict


@torch.no_grad()
def calibrate(model, images, steps=8, solver="exponential", iters=6, seed=0):
    """Set the model's colour temperature (``SparseFieldFlow.temper``) so that one sample of
    ``images`` (B, 3, H, W; validation tiles, never the test's) carries no colour grain: the total
    variation of its colour (``metrics.chroma``) over the truth's equals its total variation over
    the truth's (its colour varies, relative to the truth, as much as the image does), found by
    ``iters`` bisections of [0, 1]. If the draws at 1 have no excess of colour, it stays 1 (a
    temperature never adds noise). The brightness temperature is left at 1: lowered, it smooths the
    renders above the base grid, whose detail is the noise's (docs/results.md). Returns a
    ``Calibration``."""
    if images.shape[1] != 3:
        raise ValueError(f"calibrate sets the colour temperature of RGB images (B, 3, H, W), got shape "
                         f"{tuple(images.shape)}")

    def excess(tc):
        r = one_sample_by_steps(model, images, (steps,), solver, seed, temperature=(1.0, tc))[steps]
        return r, r["chroma_tv_ratio"] > r["tv_ratio"]

    before, grainy = excess(1.0)
    lo, hi = (0.0, 1.0) if grainy else (1.0, 1.0)
    for _ in range(iters if grainy else 0):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if excess(mid)[1] else (mid, hi)
    t = (1.0, (lo + hi) / 2)
    model.temperature.copy_(torch.tensor(t))
    return Calibration(t, before, excess(t[1])[0])


@torch.no_grad()
def evaluate_sparse_zero_shot(model, lr, hr, sizes=(64, 128), k=4, steps=8, solver="exponential", seed=0,
                              batch_size=4, antithetic=True):
    """Observe the evaluation mask of each input ``lr``, sample at each size (one noise field for
    every size) and compare with the real HR crop resized to that size; baseline: bicubic
    upsampling of the linearly interpolated input. ({size: {"mean_k": {psnr, ssim}, "sample":
    {..., tv_ratio}, "linear+bicubic": ...}}, {size: (baseline, sample, mean, truth)})."""
    model.eval()
    B, C, h, w = lr.shape
    oc, ov, grid, _ = observe(lr, model.config.observe_frac)
    lin = interpolate_sparse(oc, ov, grid, "linear").transpose(1, 2).reshape(B, C, h, w)
    res, renders = {}, {}
    for s in sizes:
        q = make_grid((s, s)).expand(B, -1, -1)
        means, firsts = [], []
        for i in range(0, B, batch_size):
            g = torch.Generator().manual_seed(seed)   # the same noise field at every size
            xs = model.samples(oc[i:i + batch_size], ov[i:i + batch_size], q[i:i + batch_size], k=k, generator=g,
                               antithetic=antithetic, steps=steps, solver=solver)
            firsts.append(xs[0])
            means.append(xs.mean(0))
        img = lambda v: v.transpose(1, 2).reshape(B, C, s, s)  # noqa: E731
        mean, first = img(torch.cat(means)), img(torch.cat(firsts))
        b = bicubic(lin, (s, s))
        gt = hr if s == hr.shape[-1] else resize(hr, (s, s))
        res[str(s)] = {name: {"psnr": float(psnr(p, gt).mean()), "ssim": float(ssim(p, gt).mean()),
                              **tv_ratios(p, gt)}
                       for name, p in ((f"mean_{k}", mean), ("sample", first), ("linear+bicubic", b))}
        renders[s] = (b, first, mean, gt)
    return res, renders
