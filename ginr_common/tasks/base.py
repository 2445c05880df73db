"""The task seam: what differs between reconstruction, super-resolution and sparse-field flow
matching. The training loop (``ginr_common.train.fit``) calls only these methods.

A task class declares the model config it trains (``model_config``) and its options
(``options_class``, a dataclass with ``check(cfg)`` and ``for_steps(steps, new_steps)``; a
TrainConfig holds one as ``options``). A task is built from a TrainConfig. ``stages()`` lists its
training stages. ``batch(train_set, step)`` returns the *global* batch at a
step as a dict of tensors whose first axis is the image (a pure function of the seed and the
step, so a resume or a run on N processes sees the same data); the loop gives each process its
rows ``[rank::world]``. ``loss(net, batch)`` returns (loss, a per-step PSNR for the progress
bar); ``validate`` the model-selection number on the validation split (higher is better);
``evaluate`` the full test-split evaluation, returning its numbers and predictions; ``figures``
draws those predictions (the caller saves or shows the figures); ``preview`` a picture of the
model on a few validation images (TensorBoard).
"""
import torch

from ginr_common.data import HR_SCALE, VOLUME_HR_SCALE, augment
from ginr_common.viz import image_grid


class Task:
    name = ""
    model_config = options_class = None

    def __init__(self, cfg):
        self.cfg = cfg

    def stages(self):
        """The training stages, [(name, first step)] in order: one by default. ``fit`` validates
        from the last stage's first step on; with several stages, parts of the model train alone,
        so DDP looks for parameters without gradient."""
        return [("train", 0)]

    @property
    def train_split(self):
        """The entry of load_dataset(...) it trains on: high-resolution crops when it trains at
        several scales (cfg.sr_scales), else the input-size images."""
        return "train_hr" if self.cfg.sr_scales else "train"

    def check_data(self, datasets, data):
        """Raise ValueError when ``datasets`` (from load_dataset(data)) lacks what the task needs."""
        if self.cfg.sr_scales and "train_hr" not in datasets:
            raise ValueError(f"{self.cfg.model.name} trains at several scales (sr_scales={self.cfg.sr_scales}) and "
                             f"needs high-resolution training crops, which the {data!r} data does not have: use "
                             "data='photos' or sr_scales=()")
        for split in (self.train_split, "val"):
            if split not in datasets:
                raise ValueError(f"task {self.name!r} needs the {split!r} split, which the {data!r} data "
                                 f"does not have (it has {sorted(datasets)})")
        m = self.cfg.model
        size = tuple(m.input_size)
        for split in (self.train_split, "val"):
            if len(datasets[split]) == 0:
                scale = VOLUME_HR_SCALE if len(size) == 3 else HR_SCALE
                hint = (f": it has no {'volumes' if len(size) == 3 else 'images'} of at least {scale}x the input size "
                        "for training at several scales; train at one scale (--set 'sr_scales=[]')"
                        if split == "train_hr" else "")
                raise ValueError(f"the {data!r} data's {split!r} split is empty{hint}")
            shape = tuple(datasets[split][0][0].shape)
            if shape[0] != m.in_channels:
                raise ValueError(f"model.in_channels={m.in_channels} does not fit the data: the {data!r} data's "
                                 f"{split} images have {shape[0]} channels; set model.in_channels={shape[0]}")
            hw = shape[1:]
            fits = all(a >= b for a, b in zip(hw, size)) if split == "train_hr" else hw == size
            if len(hw) != len(size) or not fits:
                raise ValueError(f"model.input_size={size} does not fit the data: the {data!r} data's {split} images "
                                 f"are {'x'.join(map(str, hw))}; set model.input_size={list(hw)} "
                                 f"(--set 'model.input_size={list(hw)}') or use data of that size")

    def batch(self, train_set, step):
        raise NotImplementedError

    def loss(self, net, batch):
        raise NotImplementedError

    def validate(self, model, datasets):
        raise NotImplementedError

    def calibrate(self, model, datasets):
        """Set what ``model`` takes from the validation split after training, before it is
        evaluated or shipped, and return a record of it (None: nothing, the default)."""
        return None

    def evaluate(self, model, datasets, progress=True, sr_pairs=None, **options):
        """The test-split evaluation: (results, a dict of numbers; predictions, a dict of tensors)."""
        raise NotImplementedError

    def figures(self, model, results, predictions):
        """{file name: matplotlib Figure} of an evaluation's predictions (none by default)."""
        return {}

    @torch.no_grad()
    def preview(self, model, datasets, n=4):
        """A picture of the model at work on the first ``n`` validation images, (3, H, W) in [0, 1]
        (logged to TensorBoard at every validation): the images above, the model's renders of them
        at their own size below (volumes: their middle axial slices)."""
        model.eval()
        x = torch.stack([datasets["val"][i][0] for i in range(min(n, len(datasets["val"])))])
        both = torch.cat([x, model.render(x, x.shape[2:]).float().clamp(0, 1)])
        return image_grid(both.select(-1, both.shape[-1] // 2) if both.dim() == 5 else both, len(x))

    # ------------------------------------------------------------------ shared by the tasks
    def images(self, train_set, step):
        """(the global batch's images at ``step``, augmented when cfg.augment; the step's generator;
        their dataset indices)."""
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + step * 1009)
        idx = batch_indices(step, len(train_set), self.cfg.batch_size, self.cfg.seed)
        images = torch.stack([train_set[i][0] for i in idx])
        return (augment(images, g) if self.cfg.augment else images), g, idx


def batch_indices(step, n, batch_size, seed):
    """Dataset indices of the global batch at ``step``: a pure function of its arguments (a fresh
    seeded permutation each epoch)."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({n} images)")
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size].tolist()


def shard(batch, rank, world):
    """This process's rows of a global batch."""
    return {k: v[rank::world] for k, v in batch.items()} if world > 1 else batch

