"""Sparse-field reconstruction by flow matching: observe a fraction of an image's pixels and
learn the velocity field that carries noise to the unobserved values.

Batch: per image, observed pixels (coordinates, values), supervised query pixels, their targets,
and the step's noise x0 and times t (all drawn from the step's generator, so the batch is a pure
function of the step). Masks are redrawn every step with every unobserved pixel supervised
(cfg.mask_redraw), or fixed per image with a disjoint 20% supervised. Validation: PSNR on the
unobserved pixels of one 10-step Heun sample of the first 64 validation images. Evaluation:
one sample and the posterior mean against nearest and linear interpolation at the input size,
free and holding the known pixels, and zero-shot renders at larger sizes against the real
high-resolution crops (eval.json, sparse.png)."""
import matplotlib.pyplot as plt
import torch

from ginr_common.baselines import bicubic, interpolate_sparse
from ginr_common.data import resize, sparse_masks, take_rows
from ginr_common.flow import coordinate_noise, flow_matching_loss
from ginr_common.fourier import make_grid
from ginr_common.metrics import masked_psnr, psnr, ssim
from ginr_common.tasks.base import Task, write_json
from ginr_common.viz import sparse_figure

EVAL_MASK_SEED = 42


class SparseFlowTask(Task):
    name = "sparse_flow"

    def batch(self, train_set, step):
        cfg, mcfg = self.cfg, self.cfg.model
        images, g, idx = self.images(train_set, step)
        grid, values = make_grid(mcfg.input_size), images.flatten(2).transpose(1, 2)
        if cfg.mask_redraw:
            ids = [step * cfg.batch_size + j for j in range(len(idx))]
            obs, sup = sparse_masks(ids, grid.shape[0], mcfg.observe_frac, seed=cfg.seed + 1, supervise="rest")
        else:
            obs, sup = sparse_masks(idx, grid.shape[0], mcfg.observe_frac, seed=EVAL_MASK_SEED, supervise="disjoint")
        grid_b = grid.expand(len(idx), -1, -1)
        query_coords = take_rows(grid_b, sup)
        return {"obs_coords": take_rows(grid_b, obs), "obs_values": take_rows(values, obs),
                "query_coords": query_coords, "targets": take_rows(values, sup),
                "t": torch.rand(len(idx), generator=g),
                "x0": coordinate_noise(query_coords, mcfg.input_size, mcfg.in_channels, g)}

    def loss(self, net, batch):
        loss, estimate = flow_matching_loss(net, batch["obs_coords"], batch["obs_values"], batch["query_coords"],
                                            batch["targets"], batch["x0"], batch["t"])
        return loss, psnr(estimate, batch["targets"]).mean()

    def validate(self, model, datasets):
        val = datasets["val"]
        images = torch.stack([val[i][0] for i in range(min(64, len(val)))])
        return evaluate_sparse(model, images, k=1, steps=10)["model_sample"]["psnr_unobserved"]

    def evaluate(self, model, datasets, out, progress=True, sr_pairs=None, n_images=64, k=4, steps=50,
                 sizes=(64, 96, 128), n_hr=8, k_hr=1):
        """At the input size on the first ``n_images`` test images, with and without holding known
        pixels, against nearest and linear interpolation; zero-shot at ``sizes`` on ``n_hr`` of the
        HR test crops ``sr_pairs``. Writes eval.json and sparse.png; returns the results (and keeps
        the predictions in ``self.figures``)."""
        test = datasets["test"]
        images = torch.stack([test[i][0] for i in range(min(n_images, len(test)))])
        results = {"n_images": len(images), "k": k, "steps": steps, "solver": "heun"}
        preds = {}
        for hold in (False, True):
            r = evaluate_sparse(model, images, k=k, steps=steps, hold_known=hold, baselines=not hold, with_ssim=True)
            preds[hold] = r.pop("images")
            results["hold_known" if hold else "free"] = r
        figures = {"sparse": preds[False]}
        if sr_pairs is not None:
            lr, hr = sr_pairs
            pick = torch.linspace(0, len(lr) - 1, min(n_hr, len(lr))).long()
            results["zero_shot"], figures["zero_shot"] = evaluate_sparse_zero_shot(model, lr[pick], hr[pick], sizes,
                                                                                   k=k_hr, steps=steps)
            results["zero_shot_note"] = (f"{len(pick)} HR test crops; {model.config.observe_frac:.0%} of the "
                                         f"{lr.shape[-1]}x{lr.shape[-1]} downsample observed; model: mean of {k_hr} "
                                         "sample(s); baseline: bicubic upsampling of the linear interpolation")
            figures["lr"] = lr[pick]
        fig = sparse_figure(preds[False], images, n=4, title=f"{model.config.name}: {model.config.observe_frac:.0%} "
                            f"observed, {k} samples, Heun {steps} steps")
        fig.savefig(out / "sparse.png", dpi=120)
        plt.close(fig)
        write_json(results, out / "eval.json")
        self.figures = figures
        return results


def _observe(images, frac):
    """The evaluation masks (seed 42, per image index) applied to images (B, C, H, W):
    (obs coords, obs values, full grid (B, H*W, 2), unobserved mask (B, H*W))."""
    B, C, H, W = images.shape
    grid = make_grid((H, W)).expand(B, -1, -1)
    obs, _ = sparse_masks(range(B), H * W, frac, seed=EVAL_MASK_SEED)
    values = images.flatten(2).transpose(1, 2)
    unobserved = torch.ones(B, H * W, dtype=torch.bool).scatter_(1, obs, False)
    return take_rows(grid, obs), take_rows(values, obs), grid, unobserved


def _scores(pred, images, unobserved, with_ssim):
    out = {"psnr": float(psnr(pred, images).mean()),
           "psnr_unobserved": float(masked_psnr(pred, images, unobserved).mean())}
    if with_ssim:
        out["ssim"] = float(ssim(pred, images).mean())
    return out


@torch.no_grad()
def evaluate_sparse(model, images, k=8, steps=50, solver="heun", hold_known=False, seed=0, baselines=False,
                    with_ssim=False, batch_size=64):
    """Sparse-field reconstruction of ``images`` (B, C, H, W) at the model's input size from the
    evaluation masks: the model's first sample, the mean of ``k`` samples, and with ``baselines``
    nearest and linear interpolation on the same masks. Each: PSNR on the full image, PSNR on the
    unobserved pixels only (, SSIM). Returns {method: scores, ..., "images": predictions}."""
    model.eval()
    B, C, H, W = images.shape
    oc, ov, grid, unobserved = _observe(images, model.config.observe_frac)
    as_img = lambda v: v.transpose(1, 2).reshape(B, C, H, W)  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(k):
        parts = [model.sample(oc[i:i + batch_size], ov[i:i + batch_size], grid[i:i + batch_size],
                              steps=steps, solver=solver, generator=g, hold_known=hold_known)
                 for i in range(0, B, batch_size)]
        samples.append(as_img(torch.cat(parts)))
    preds = {"model_sample": samples[0]}
    if k > 1:
        stacked = torch.stack(samples)
        preds["model_mean"], preds["model_std"] = stacked.mean(0), stacked.std(0)
    if baselines:
        for m in ("nearest", "linear"):
            preds[m] = as_img(interpolate_sparse(oc, ov, grid, m))
    res = {name: _scores(p, images, unobserved, with_ssim) for name, p in preds.items() if name != "model_std"}
    res["images"] = {**preds, "observed": images * (~unobserved).reshape(B, 1, H, W)}
    return res


@torch.no_grad()
def evaluate_sparse_zero_shot(model, lr, hr, sizes=(64, 96, 128), k=4, steps=50, seed=0):
    """Observe the evaluation mask of each input ``lr``, sample at each size and compare with the
    real HR crop resized to that size; baseline: bicubic upsampling of the linearly interpolated
    input. ({size: {"model_mean": psnr/ssim, "linear+bicubic": ...}}, renders)."""
    model.eval()
    B, C, h, w = lr.shape
    oc, ov, grid, _ = _observe(lr, model.config.observe_frac)
    lin = interpolate_sparse(oc, ov, grid, "linear").transpose(1, 2).reshape(B, C, h, w)
    res, renders = {}, {}
    for s in sizes:
        q = make_grid((s, s)).expand(B, -1, -1)
        g = torch.Generator().manual_seed(seed)   # the same noise field at every size
        mean, _ = model.posterior(oc, ov, q, k=k, generator=g, steps=steps)
        y = mean.transpose(1, 2).reshape(B, C, s, s)
        b = bicubic(lin, (s, s))
        gt = hr if s == hr.shape[-1] else resize(hr, (s, s))
        res[str(s)] = {n: {"psnr": float(psnr(p, gt).mean()), "ssim": float(ssim(p, gt).mean())}
                       for n, p in (("model_mean", y), ("linear+bicubic", b))}
        renders[s] = (b, y, gt)
    return res, renders
