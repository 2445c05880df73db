"""Reconstruction: encode an image, decode it at its own pixel centres (jittered when
cfg.jitter), MSE. Validation: PSNR at native resolution. Evaluation: the test split at native
resolution, and renders at larger sizes against the real high-resolution photograph beside
bicubic upsampling of the same input (eval.json, sr.png)."""
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ginr_common.baselines import bicubic
from ginr_common.data import resize
from ginr_common.fourier import make_grid
from ginr_common.metrics import psnr, ssim
from ginr_common.tasks.base import Task, write_json
from ginr_common.viz import sr_figure


class ReconstructionTask(Task):
    name = "recon"

    def batch(self, train_set, step):
        images, g, _ = self.images(train_set, step)
        size = self.cfg.model.input_size
        grid = make_grid(size)
        queries = grid.expand(images.shape[0], -1, -1)
        if self.cfg.jitter:  # one offset for the whole batch, in input pixels; the target is unchanged
            queries = queries + torch.randn(grid.shape[-1], generator=g) * self.cfg.jitter / torch.tensor(size)
        return {"images": images, "queries": queries, "target": images.flatten(2).transpose(1, 2)}

    def loss(self, net, batch):
        pred = net(batch["images"], batch["queries"]).float()
        return F.mse_loss(pred, batch["target"]), psnr(pred.detach(), batch["target"]).mean()

    def validate(self, model, datasets):
        return evaluate_reconstruction(model, datasets["val"], with_ssim=False)["psnr"]

    def evaluate(self, model, datasets, out, progress=True, sr_pairs=None, sizes=(64, 128)):
        """Test-split reconstruction + renders at ``sizes`` of the HR test crops ``sr_pairs``
        (lr, hr); writes eval.json and sr.png in ``out``."""
        results = {"test": evaluate_reconstruction(model, datasets["test"], progress=progress)}
        if sr_pairs is not None:
            lr, hr = sr_pairs
            results["super_resolution"], renders = evaluate_sr(model, lr, hr, sizes)
            results["super_resolution_note"] = (f"{len(lr)} HR test crops {hr.shape[-1]}x{hr.shape[-1]} from the "
                                                f"test photographs, input = antialiased {lr.shape[-1]}x{lr.shape[-1]} "
                                                "downsample; baseline: bicubic upsampling of the same input")
            fig = sr_figure(lr, renders, title=f"{model.config.name}: renders of held-out photographs")
            fig.savefig(out / "sr.png", dpi=120)
            plt.close(fig)
        write_json(results, out / "eval.json")
        return results


@torch.no_grad()
def evaluate_reconstruction(model, dataset, batch_size=64, with_ssim=True, progress=False):
    """Mean per-image PSNR (and SSIM) of model.render at native resolution over a dataset."""
    model.eval()
    dev = next(model.parameters()).device
    ps, ss = [], []
    for i in tqdm(range(0, len(dataset), batch_size), desc="eval", disable=not progress, leave=False):
        x = torch.stack([dataset[j][0] for j in range(i, min(i + batch_size, len(dataset)))]).to(dev)
        y = model.render(x, x.shape[2:]).float()
        ps.append(psnr(y, x).cpu())
        if with_ssim:
            ss.append(ssim(y, x))
    out = {"psnr": float(torch.cat(ps).mean()), "n": len(dataset)}
    if with_ssim:
        out["ssim"] = float(torch.cat(ss).mean())
    return out


@torch.no_grad()
def evaluate_sr(model, lr, hr, sizes=(64, 128), batch_size=16, with_ssim=True):
    """({size: {"model": {psnr, ssim}, "bicubic": {psnr, ssim}}}, renders) against the real HR
    image (downsampled with antialiasing for sizes below its native resolution). Sizes above the
    HR resolution have no ground truth: they are rendered (renders[size] = (bicubic, model, None))
    but get no numbers; ``hr=None`` (e.g. CIFAR-10) renders every size without numbers."""
    model.eval()
    dev = next(model.parameters()).device
    res, renders = {}, {}
    for s in sizes:
        gt = None if hr is None or s > hr.shape[-1] else hr if s == hr.shape[-1] else resize(hr, (s, s))
        ys = [model.render(lr[i:i + batch_size].to(dev), (s, s)).float().cpu() for i in range(0, len(lr), batch_size)]
        y, b = torch.cat(ys), bicubic(lr, (s, s))
        renders[s] = (b, y, gt)
        if gt is None:
            continue
        res[str(s)] = {name: {"psnr": float(psnr(p, gt).mean()),
                              **({"ssim": float(ssim(p, gt).mean())} if with_ssim else {})}
                       for name, p in (("model", y), ("bicubic", b))}
    return res, renders
