"""Super-resolution: trained as reconstruction at several scales (``cfg.sr_scales``, see
``recon.py``), selected on the PSNR at the largest trained scale on the HR validation crops.
Evaluation: as reconstruction (the renders against the real HR crops are the point)."""
import torch

from ginr_common.tasks.recon import ReconstructionTask, evaluate_degradations, evaluate_sr

VAL_CROPS = 24    # validation HR crops rendered at every validation (the photo set's 22: all of them)


class SuperResolutionTask(ReconstructionTask):
    name = "sr"

    def check_data(self, datasets, data):
        one_scale = "to train at one scale, use the recon task (--set task=recon --set 'sr_scales=[]')"
        if not self.cfg.sr_scales:
            raise ValueError(f"the sr task needs sr_scales=(low, high), e.g. (1, 4); {one_scale}")
        if "val_sr" not in datasets or not len(datasets["val_sr"][0]):
            raise ValueError(f"{self.cfg.model.name} is selected on super-resolution of the HR validation crops "
                             f"(val_sr), which the {data!r} data does not have (its validation images are not "
                             f"large enough); {one_scale}")
        super().check_data(datasets, data)

    def validate(self, model, datasets):
        """PSNR of renders at the largest trained scale of at most VAL_CROPS validation HR crops
        (spread over the split); trained on random degradations (``options.degrade``), the mean over
        inputs made by each of ``degradations.EVALUATED``."""
        lr, hr = datasets["val_sr"]
        pick = torch.linspace(0, len(lr) - 1, min(VAL_CROPS, len(lr))).long()
        size = round(self.cfg.model.input_size[-1] * max(self.cfg.sr_scales))
        if self.cfg.options.degrade:
            res = evaluate_degradations(model, hr[pick], lr.shape[2:], (size,))
            return sum(r[str(size)]["model"] for r in res.values()) / len(res)
        return evaluate_sr(model, lr[pick], hr[pick], sizes=(size,), with_ssim=False)[0][str(size)]["model"]["psnr"]
