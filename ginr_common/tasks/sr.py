"""Super-resolution: the inputs are antialiased downsamples (to the model's input size) of
high-resolution training crops; half the loss on the input grid (jittered), half on
``cfg.sr_queries`` random pixels of the real HR crop resized to a random scale from
``cfg.sr_scales``. Validation: PSNR at the largest trained scale on the HR validation crops.
Evaluation: as reconstruction (the renders against the real HR crops are the point)."""
import math

import torch
import torch.nn.functional as F

from ginr_common.data import resize
from ginr_common.fourier import make_grid
from ginr_common.metrics import psnr
from ginr_common.tasks.recon import ReconstructionTask, evaluate_sr


class SuperResolutionTask(ReconstructionTask):
    name = "sr"
    train_split = "train_hr"

    def check_data(self, datasets, data):
        if "train_hr" not in datasets or "val_sr" not in datasets:
            raise ValueError(f"{self.cfg.model.name} trains super-resolution and needs high-resolution ground truth "
                             f"(train_hr, val_sr), which the {data!r} data does not have: use data='photos'")
        if not self.cfg.sr_scales:
            raise ValueError("the sr task needs sr_scales, e.g. (2, 3, 4)")

    def batch(self, train_set, step):
        hr, g, _ = self.images(train_set, step)
        size = self.cfg.model.input_size
        images = resize(hr, size)
        B, grid = images.shape[0], make_grid(size)
        queries = grid.expand(B, -1, -1)
        if self.cfg.jitter:
            queries = queries + torch.randn(grid.shape[-1], generator=g) * self.cfg.jitter / torch.tensor(size)
        s = self.cfg.sr_scales[int(torch.randint(len(self.cfg.sr_scales), (1,), generator=g))]
        hr_size = tuple(n * s for n in size)
        hr = hr if hr.shape[2:] == hr_size else resize(hr, hr_size)
        sel = torch.randperm(math.prod(hr_size), generator=g)[:self.cfg.sr_queries]
        return {"images": images,
                "queries": torch.cat([queries, make_grid(hr_size)[sel].expand(B, -1, -1)], 1),
                "target": torch.cat([images.flatten(2).transpose(1, 2), hr.flatten(2).transpose(1, 2)[:, sel]], 1)}

    def loss(self, net, batch):
        n_lr = math.prod(self.cfg.model.input_size)
        pred = net(batch["images"], batch["queries"]).float()
        target = batch["target"]
        loss = 0.5 * F.mse_loss(pred[:, :n_lr], target[:, :n_lr]) + 0.5 * F.mse_loss(pred[:, n_lr:], target[:, n_lr:])
        return loss, psnr(pred[:, :n_lr].detach(), target[:, :n_lr]).mean()

    def validate(self, model, datasets):
        lr, hr = datasets["val_sr"]
        size = self.cfg.model.input_size[-1] * max(self.cfg.sr_scales)
        return evaluate_sr(model, lr, hr, sizes=(size,), with_ssim=False)[0][str(size)]["model"]["psnr"]
