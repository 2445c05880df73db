"""Every training configuration, one literal per (config, profile) pair.

Configs: ``standard_fourier`` (notebook 1), ``gaussian_fourier`` (notebook 2), ``scent``
(notebook 3), ``flow_sparse`` (notebook 4). Profiles: ``smoke`` (seconds: CI and the notebooks
under nbval), ``cpu`` (about ten minutes on two CPU cores), ``full`` (the reference
configuration's hyperparameters for a GPU: patch 2, width 256, depth 6, 40 epochs of 45k CIFAR-10
images at batch 64 with 5 warm-up epochs; flow: lr 1e-4, 100 epochs).

    python -m ginr_common.train --config scent --profile cpu --print-config

prints one of them resolved. ``get_config`` returns a copy to edit; ``with_settings(cfg, {"lr": 1e-3,
"model.input_size": [64, 64]})`` a copy with any fields changed (``--set KEY=VALUE`` on the command
line), and ``load_config_file(path)`` reads what ``--print-config`` prints (``--config-file``).
"""
import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ginr_common.checkpoints import config_from_dict, plain
from ginr_common.decoders import LAINRConfig, LocalConfig, SCENTConfig
from ginr_common.flow import FlowConfig
from ginr_common.model import GINRConfig

TASK_NAMES = ("recon", "sr", "sparse_flow")


@dataclass
class TrainConfig:
    task: str = "recon"         # recon | sr | sparse_flow: see ginr_common/tasks/
    model: GINRConfig | FlowConfig = field(default_factory=GINRConfig)
    steps: int = 1000
    batch_size: int = 32        # global batch; each of N processes takes batch_size / N
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_every: int = 100
    ckpt_every: int = 100
    seed: int = 0
    augment: bool = False       # random flips / 90-degree rotations / channel orders of each image
    jitter: float = 0.0         # std (in input pixels) of a fresh Gaussian offset per batch on training queries
    lr_queries: int | None = None  # pixels of the input grid supervised per step (random subset; None: all)
    sr_scales: tuple = ()       # (low, high): also supervise HR targets at input_size * s, s ~ U[low, high]
    sr_queries: int = 1024      # HR pixels supervised per image and step (random subset)
    lr_weight: float = 0.5      # with HR queries: the share of the loss on the input grid (the rest on HR pixels)
    ema: float = 0.0            # decay of a moving average of the weights, which is validated and saved (0: off)
    mask_redraw: bool = True    # sparse_flow: fresh masks every step, all unobserved pixels supervised
                                # (False: fixed per-image masks, a disjoint 20% supervised)
    native_windows: tuple = (1,)  # sparse_flow with sr_scales: the input of a step at s = 1 is a window of 1/w of
                                # each HR crop (w drawn from these) resized to input_size; 1: the whole crop
    estimate_steps: int = 0     # sparse_flow: the first estimate_steps of the steps train the grid refiner's
                                # estimate alone (the guide + its correction at s = 1), then everything jointly
    time_power: float = 1.0     # sparse_flow: training times t = 1 - (1 - u)^time_power, u ~ U(0, 1) (1: uniform;
                                # below 1 more of the early times, above 1 more of the late times)

    def __post_init__(self):
        self.sr_scales = tuple(self.sr_scales)
        self.native_windows = tuple(self.native_windows)
        if not self.native_windows or not all(isinstance(w, int) and w >= 1 for w in self.native_windows):
            raise ValueError(f"native_windows must be integers >= 1 (1: the whole crop), got {self.native_windows}")
        if self.sr_scales and (len(self.sr_scales) != 2 or not 1 <= self.sr_scales[0] <= self.sr_scales[1]):
            raise ValueError(f"sr_scales must be (low, high) with 1 <= low <= high, got {self.sr_scales}")
        if not 0 <= self.estimate_steps < self.steps:
            raise ValueError(f"estimate_steps must be in [0, steps={self.steps}), got {self.estimate_steps}")
        if self.estimate_steps and not (isinstance(self.model, FlowConfig) and self.model.grid_blocks):
            raise ValueError("estimate_steps > 0 trains the grid refiner alone: it needs the sparse_flow task and "
                             "a FlowConfig with grid_blocks > 0")
        if not self.time_power > 0:
            raise ValueError(f"time_power must be > 0 (1: uniform training times), got {self.time_power}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema is the decay of the weights' moving average, in [0, 1) (0: off), got {self.ema}")
        if self.task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, got {self.task!r}")
        if isinstance(self.model, dict):
            raise TypeError("model must be a GINRConfig or FlowConfig, not a dict")
        if (self.task == "sparse_flow") != isinstance(self.model, FlowConfig):
            raise ValueError(f"task {self.task!r} does not fit a {type(self.model).__name__}: "
                             "sparse_flow trains a FlowConfig, recon and sr a GINRConfig")


PROFILES = {
    # notebook 1: a local decoder (Fourier features of the offset to the 4 nearest LPs and patch tokens,
    # ResidualBlocks) plus the 8x8 pixel filter it predicts, trained to reconstruct and to render at random
    # scales x1-x4 of real HR crops; on the CPU, 4x4 patches (64 tokens + 64 LPs) and 384 supervised pixels per
    # image: twice the steps of 2x2 patches in the same ten minutes, and better on validation
    "standard_fourier": {
        "smoke": TrainConfig(
            task="recon",
            model=GINRConfig(name="standard_fourier", dim=32, depth=1, num_lp=16, d_state=8, pixel_filter=8,
                             patch_size=4,
                             decoder=LocalConfig(hidden=64, n_blocks=1, sources=("lps", "tokens"), features="fourier",
                                                 n_freqs=6, max_freq=4)),
            steps=20, batch_size=8, lr=1e-3, warmup_steps=4, val_every=10, ckpt_every=10,
            sr_scales=(1, 4), lr_queries=128, sr_queries=256),
        "cpu": TrainConfig(
            task="recon",
            model=GINRConfig(name="standard_fourier", dim=64, depth=2, num_lp=64, d_state=16, pixel_filter=8,
                             patch_size=4,
                             decoder=LocalConfig(hidden=128, n_blocks=2, sources=("lps", "tokens"), features="fourier",
                                                 n_freqs=6, max_freq=4)),
            steps=3000, batch_size=16, lr=2e-3, warmup_steps=100, val_every=250, ckpt_every=250, augment=True,
            sr_scales=(1, 4), lr_queries=128, sr_queries=256),
        "full": TrainConfig(
            task="recon",
            model=GINRConfig(name="standard_fourier", dim=256, depth=6, num_lp=256, d_state=16, pixel_filter=8,
                             decoder=LocalConfig(hidden=512, n_blocks=3, sources=("lps", "tokens"), features="fourier",
                                                 n_freqs=6, max_freq=4)),
            steps=28_120, batch_size=64, lr=5e-4, warmup_steps=3_515, val_every=703, ckpt_every=703, augment=True,
            sr_scales=(1, 4), lr_queries=512, sr_queries=1024),
    },
    # notebook 2: super-resolution as a correction on top of bicubic: a local decoder with Gaussian
    # random Fourier features of the offsets and a predicted 8x8 filter over the input pixels around
    # each query, trained on real HR crops at random scales x1-x4 (80% of the loss on the HR pixels);
    # a moving average of the weights is validated and kept
    "gaussian_fourier": {
        "smoke": TrainConfig(
            task="sr",
            model=GINRConfig(name="gaussian_fourier", dim=32, depth=1, num_lp=16, d_state=8, input_skip=True,
                             pixel_filter=8,
                             decoder=LocalConfig(hidden=64, n_blocks=1, sources=("lps", "tokens"), features="gaussian",
                                                 n_freqs=16, sigma=1.0)),
            steps=20, batch_size=8, lr=1e-3, warmup_steps=4, val_every=10, ckpt_every=10,
            sr_scales=(1, 4), lr_queries=256, sr_queries=256, lr_weight=0.2, ema=0.9),
        "cpu": TrainConfig(
            task="sr",
            model=GINRConfig(name="gaussian_fourier", dim=64, depth=2, num_lp=64, d_state=16, input_skip=True,
                             pixel_filter=8,
                             decoder=LocalConfig(hidden=128, n_blocks=2, sources=("lps", "tokens"), features="gaussian",
                                                 n_freqs=16, sigma=1.0)),
            steps=1500, batch_size=16, lr=2e-3, warmup_steps=100, val_every=250, ckpt_every=250, augment=True,
            sr_scales=(1, 4), lr_queries=256, sr_queries=512, lr_weight=0.2, ema=0.995),
        "full": TrainConfig(
            task="sr",
            model=GINRConfig(name="gaussian_fourier", dim=256, depth=6, num_lp=256, d_state=16, input_skip=True,
                             pixel_filter=8,
                             decoder=LocalConfig(hidden=512, n_blocks=3, sources=("lps", "tokens"), features="gaussian",
                                                 n_freqs=16, sigma=1.0)),
            steps=28_120, batch_size=64, lr=5e-4, warmup_steps=3_515, val_every=703, ckpt_every=703, augment=True,
            sr_scales=(1, 4), lr_queries=512, sr_queries=1024, lr_weight=0.2, ema=0.999),
    },
    # notebook 3: SCENT-style decoder (cross-attention to the LPs with a locality bias) whose query
    # features also read the 4 nearest patch tokens; trained like notebook 1
    "scent": {
        "smoke": TrainConfig(
            task="recon",
            model=GINRConfig(name="scent", dim=32, depth=1, num_lp=16, d_state=8,
                             decoder=SCENTConfig(hidden=64, n_blocks=1, heads=4, features="gaussian", n_freqs=64,
                                                 sigma=8.0, locality=True, local_tokens=True)),
            steps=20, batch_size=8, lr=1e-3, warmup_steps=4, val_every=10, ckpt_every=10,
            sr_scales=(1, 4), lr_queries=256, sr_queries=256),
        "cpu": TrainConfig(
            task="recon",
            model=GINRConfig(name="scent", dim=64, depth=2, num_lp=64, d_state=16,
                             decoder=SCENTConfig(hidden=128, n_blocks=2, heads=4, features="gaussian", n_freqs=64,
                                                 sigma=8.0, locality=True, local_tokens=True)),
            steps=1500, batch_size=16, lr=2e-3, warmup_steps=100, val_every=250, ckpt_every=250, augment=True,
            sr_scales=(1, 4), lr_queries=256, sr_queries=512),
        "full": TrainConfig(
            task="recon",
            model=GINRConfig(name="scent", dim=256, depth=6, num_lp=256, d_state=16,
                             decoder=SCENTConfig(hidden=512, n_blocks=3, heads=4, features="gaussian", n_freqs=64,
                                                 sigma=8.0, locality=True, local_tokens=True)),
            steps=28_120, batch_size=64, lr=5e-4, warmup_steps=3_515, val_every=703, ckpt_every=703, augment=True,
            sr_scales=(1, 4), lr_queries=512, sr_queries=1024),
    },
    # notebook 4: flow matching from 20% of the pixels; the cpu profile's 1000 steps (600 of them the grid
    # refiner's estimate alone) take about 14 minutes
    "flow_sparse": {
        "smoke": TrainConfig(
            task="sparse_flow",
            model=FlowConfig(name="flow_sparse", dim=32, depth=1, num_lp=16, d_state=8, hidden=32, mixer_depth=1,
                             noise_features=64, guide="linear", grid_blocks=2, grid_width=16, mu_weight=4.0,
                             local_spread=True, noise_scale=0.08),
            steps=20, batch_size=8, lr=1e-3, warmup_steps=4, val_every=10, ckpt_every=10, sr_scales=(1.0, 4.0),
            native_windows=(1, 2, 4), estimate_steps=5),
        "cpu": TrainConfig(
            task="sparse_flow",
            model=FlowConfig(name="flow_sparse", dim=64, depth=2, num_lp=32, d_state=16, hidden=64, mixer_depth=2,
                             guide="linear", grid_blocks=6, grid_width=64, mu_weight=4.0,
                             local_spread=True, noise_scale=0.08),
            steps=1000, batch_size=16, lr=1e-3, warmup_steps=50, val_every=150, ckpt_every=50, augment=True,
            sr_scales=(1.0, 4.0), native_windows=(1, 2, 4), estimate_steps=600, time_power=0.5),
        "full": TrainConfig(
            task="sparse_flow",
            model=FlowConfig(name="flow_sparse", dim=256, depth=6, num_lp=128, d_state=16, hidden=256, mixer_depth=4,
                             guide="linear", grid_blocks=12, grid_width=128, mu_weight=4.0,
                             local_spread=True, noise_scale=0.08),
            steps=70_300, batch_size=64, lr=1e-4, warmup_steps=3_515, val_every=703, ckpt_every=703,
            sr_scales=(1.0, 4.0), native_windows=(1, 2, 4), estimate_steps=7_030),
    },
}


def get_config(name, profile):
    """A copy of the TrainConfig of (config, profile), to edit freely."""
    if name not in PROFILES:
        raise ValueError(f"config must be one of {sorted(PROFILES)}, got {name!r}")
    if profile not in PROFILES[name]:
        raise ValueError(f"profile must be one of {sorted(PROFILES[name])}, got {profile!r}")
    return copy.deepcopy(PROFILES[name][profile])


def default_profile():
    """GINR_PROFILE if set, else full on CUDA and cpu otherwise."""
    return os.environ.get("GINR_PROFILE") or ("full" if torch.cuda.is_available() else "cpu")


def config_json(cfg):
    """The resolved training config as indented JSON."""
    return json.dumps(plain(cfg), indent=2)


def run_name(cfg, data="photos"):
    """A folder name for a run: the model's name and a hash of (full training config, data), so
    editing any setting gives a new folder and never resumes a different run."""
    h = hashlib.sha256((json.dumps(plain(cfg), sort_keys=True) + data).encode()).hexdigest()[:8]
    return f"{cfg.model.name}-{h}"


def train_config_from_checkpoint(ckpt):
    """The TrainConfig a checkpoint was trained with (its model config rebuilt from the stored one).
    Checkpoints that recorded no task get it from their model family and settings."""
    stored = dict(ckpt.get("train_config") or {})
    stored.pop("model", None)
    model = config_from_dict(ckpt["config"])
    if "task" not in stored:
        stored["task"] = "sparse_flow" if isinstance(model, FlowConfig) else "sr" if stored.get("sr_scales") else "recon"
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(model=model, **{k: v for k, v in stored.items() if k in known})


def with_settings(cfg, settings):
    """A copy of the TrainConfig ``cfg`` with ``settings`` applied: {dotted field: value}, e.g.
    {"lr": 1e-3, "model.input_size": [64, 64], "model.decoder.hidden": 256}; string values are read
    as JSON where they parse ("1e-3", "[64, 64]", "true"). A field that does not exist or a value of
    the wrong type raises ValueError naming the field (an int where a float is expected is
    converted); the result is validated as a whole (every config's checks run again)."""
    d = plain(cfg)
    for key, value in settings.items():
        *path, leaf = key.split(".")
        obj, node = cfg, d
        for i, part in enumerate(path):
            if not dataclasses.is_dataclass(getattr(obj, part, None)):
                sections = [f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]
                raise ValueError(f"unknown setting {key!r}: {'.'.join(path[:i]) or 'the training config'} has no "
                                 f"section {part!r} (sections: {sections})")
            obj, node = getattr(obj, part), node[part]
        types = {f.name: f.type for f in dataclasses.fields(obj)}
        if leaf not in types:
            raise ValueError(f"unknown setting {key!r}: {'.'.join(path) or 'the training config'} has no field "
                             f"{leaf!r} (fields: {sorted(types)})")
        node[leaf] = _typed(key, value, types[leaf], node[leaf])
    return config_from_json(d)


def _typed(key, value, kind, current):
    """``value`` for a field of annotation ``kind`` (a JSON string is decoded first)."""
    if isinstance(value, str) and kind not in (str, "str"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{key} must be a JSON value like {json.dumps(current)}, got {value!r}") from None
    want = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple}.get(kind, kind)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool), float: lambda v: isinstance(v, float),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str),
          tuple: lambda v: isinstance(v, (list, tuple))}.get(want, lambda v: True)
    if not ok(value):
        raise ValueError(f"{key} must be {getattr(want, '__name__', want)} like {json.dumps(current)}, got {value!r}")
    return list(value) if isinstance(value, tuple) else value


def config_from_json(d):
    """The TrainConfig of a dict as ``config_json`` prints it (``--print-config``); its model's family
    follows its task: sparse_flow trains a FlowConfig, recon and sr a GINRConfig."""
    d = dict(d)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
    if not isinstance(d.get("model"), dict):
        raise ValueError("the training config needs its model, a dict of the model's fields ('model': {...})")
    family = "flow" if d.get("task") == "sparse_flow" else "ginr"
    return TrainConfig(model=config_from_dict({"family": family, **d.pop("model")}), **d)


def load_config_file(path):
    """The TrainConfig in a JSON file as ``--print-config`` prints it (ValueError naming the file)."""
    try:
        return config_from_json(json.loads(Path(path).read_text()))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a training config as --print-config prints it: {e}") from e
