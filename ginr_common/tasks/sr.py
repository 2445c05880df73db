"""Super-resolution: trained as reconstruction at several scales (``cfg.sr_scales``, see
``recon.py``), selected on the PSNR at the largest trained scale on the HR validation crops.
Evaluation: as reconstruction (the renders against the real HR crops are the point)."""
from ginr_common.tasks.recon import ReconstructionTask, evaluate_sr


class SuperResolutionTask(ReconstructionTask):
    name = "sr"

    def check_data(self, datasets, data):
        if not self.cfg.sr_scales:
            raise ValueError("the sr task needs sr_scales=(low, high), e.g. (1, 4)")
        if "val_sr" not in datasets or not len(datasets["val_sr"][0]):
            raise ValueError(f"{self.cfg.model.name} is selected on super-resolution of the HR validation crops "
                             f"(val_sr), which the {data!r} data does not have: use data='photos'")
        super().check_data(datasets, data)

    def validate(self, model, datasets):
        lr, hr = datasets["val_sr"]
        size = round(self.cfg.model.input_size[-1] * max(self.cfg.sr_scales))
        return evaluate_sr(model, lr, hr, sizes=(size,), with_ssim=False)[0][str(size)]["model"]["psnr"]
