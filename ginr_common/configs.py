"""Every training configuration, each a JSON file in ``experiments/`` (``EXPERIMENTS``) that states
only its differences from what it extends, the way nanoGPT's config files state only what they change;
the dataclass defaults are notebook 1's cpu model.

Configs: ``standard_fourier`` (notebook 1), ``gaussian_fourier`` (notebook 2), ``scent``
(notebook 3), ``flow_sparse`` (notebook 4), ``volume`` (notebook 5, 3-D), ``lp_latent`` (the LP latent
alone). Profiles: ``smoke`` (seconds: CI and the notebooks under nbval), ``cpu`` (about ten minutes on two
CPU cores: ``make run``), ``long`` (three times its steps, 30-50 minutes; super-resolution on random
degradations of the inputs), ``full`` (the reference configuration's hyperparameters for a GPU: patch 2,
width 256, depth 6, 40 epochs of 45k CIFAR-10 images at batch 64 with 5 warm-up epochs; flow: lr 1e-4,
100 epochs). Besides them, the ablations and the tables of docs/results.md (``experiments()`` lists all).

    python -m ginr_common.train --config scent --profile cpu --print-config
    python -m ginr_common.train --config-file sf/lps --print-config

prints one of them resolved. ``get_config`` returns a copy to edit; ``with_settings(cfg, {"lr": 1e-3,
"model.input_size": [64, 64]})`` a copy with any fields changed (``--set KEY=VALUE`` on the command
line), and ``load_experiment(name or path)`` reads an experiment file or what ``--print-config`` prints
(``--config-file``).
"""
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ginr_common._io import from_fields
from ginr_common.checkpoints import MODEL_FAMILIES, config_from_dict, plain
from ginr_common.flow import FlowConfig
from ginr_common.model import GINRConfig
from ginr_common.tasks import TASKS, FlowOptions, ReconOptions


@dataclass
class TrainConfig:
    """A training run (defaults: notebook 1's cpu profile). ``model`` and ``options`` default to
    the task's model config and options (``tasks.TASKS[task].model_config`` / ``.options_class``)."""
    task: str = "recon"         # recon | sr | sparse_flow: see ginr_common/tasks/
    model: GINRConfig | FlowConfig | None = None
    options: ReconOptions | FlowOptions | None = None   # the task's own options
    steps: int = 3000
    batch_size: int = 16        # global batch; each of N processes takes batch_size / N
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_every: int = 250
    ckpt_every: int = 250
    seed: int = 0
    augment: bool = True        # random flips / 90-degree rotations / channel orders of each image
    sr_scales: tuple = (1, 4)   # (low, high): also supervise HR targets at input_size * s, s ~ U[low, high]; ()
                                # trains at the input size alone
    ema: float = 0.0            # decay of a moving average of the weights, which is validated and saved (0: off)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        task = TASKS[self.task]
        self.model = task.model_config() if self.model is None else self.model
        self.options = task.options_class() if self.options is None else self.options
        for name, value, want in (("model", self.model, task.model_config), ("options", self.options,
                                                                              task.options_class)):
            if isinstance(value, dict):
                raise TypeError(f"{name} must be a {want.__name__}, not a dict")
            if not isinstance(value, want):
                raise ValueError(f"task {self.task!r} trains with a {want.__name__} as {name}, got "
                                 f"{type(value).__name__}")
        self.sr_scales = tuple(self.sr_scales)
        if self.sr_scales and (len(self.sr_scales) != 2 or not 1 <= self.sr_scales[0] <= self.sr_scales[1]):
            raise ValueError(f"sr_scales must be (low, high) with 1 <= low <= high, got {self.sr_scales}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema is the decay of the weights' moving average, in [0, 1) (0: off), got {self.ema}")
        self.options.check(self)


EXPERIMENTS = Path(__file__).parent / "experiments"   # every named configuration, one JSON file each
CONFIGS = ("standard_fourier", "gaussian_fourier", "scent", "flow_sparse", "volume", "lp_latent")
PROFILES = ("smoke", "cpu", "long", "full")    # experiments/<profile>/<config>.json; cpu: experiments/<config>.json


def experiment_file(ref):
    """The JSON file of an experiment: ``ref`` is a path to one, or a name under ``EXPERIMENTS``
    ("scent", "long/scent", "sf/lps"; ".json" optional). Anything else raises ValueError."""
    path = Path(ref)
    if path.suffix == ".json" and path.is_file():
        return path
    named = EXPERIMENTS / (str(ref).removesuffix(".json") + ".json")
    if named.is_file():
        return named
    raise ValueError(f"no experiment {str(ref)!r}: neither a JSON file nor one of the named experiments "
                     f"(python -m ginr_common.train --list-experiments)")


def experiments():
    """The named experiments {name: what it is}: every file under ``EXPERIMENTS`` except the shared
    parts (names starting with "_")."""
    out = {}
    for path in sorted(EXPERIMENTS.rglob("*.json")):
        name = path.relative_to(EXPERIMENTS).with_suffix("").as_posix()
        if not path.name.startswith("_"):
            out[name] = _read(path).get("about", "")
    return out


def _read(path):
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a training config is a JSON object, got {type(d).__name__}")
    return d


def _flat(d, prefix=""):
    """{"model": {"decoder": {"hidden": 64}}} -> {"model.decoder.hidden": 64}; a dict with a "kind"
    (a decoder of that kind) is one value."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and "kind" not in value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def experiment_settings(ref, _chain=()):
    """The settings {dotted field: value} of an experiment, in the order they apply: those of the
    experiments it ``extends`` (a name or a list of names, in order), then its own; a setting made
    again moves to the end, and a section set whole (a decoder of a kind) drops the settings of its
    fields made before. ``about`` (what the experiment is) is not a setting."""
    path = experiment_file(ref).resolve()
    if path in _chain:
        raise ValueError(f"{path}: extends itself (through {' -> '.join(p.name for p in _chain)})")
    d = dict(_read(path))
    d.pop("about", None)
    parents = d.pop("extends", [])
    settings = {}
    for part in [*([parents] if isinstance(parents, str) else parents), None]:
        for key, value in (_flat(d) if part is None else experiment_settings(part, (*_chain, path))).items():
            for old in [k for k in settings if k == key or k.startswith(key + ".")]:   # a section set whole
                del settings[old]                                                     # replaces its fields
            settings[key] = value
    return settings


def load_experiment(ref):
    """The TrainConfig of an experiment file (``experiment_file``): the defaults with its settings
    (``experiment_settings``) applied. A file that ``--print-config`` printed is one too (it extends
    nothing and states every field)."""
    try:
        settings = experiment_settings(ref)
        task = settings.pop("task", "recon")
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
        cfg, batch, whole = TrainConfig(task=task), {}, set()
        for key, value in settings.items():   # a section set whole (a decoder of a kind) is set before its fields
            if any(key.startswith(w + ".") for w in whole):
                cfg, batch, whole = with_settings(cfg, batch), {}, set()
            batch[key] = value
            if isinstance(value, dict):
                whole.add(key)
        return with_settings(cfg, batch)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{ref}: not a training config as --print-config prints it or an experiment file: {e}") \
            from e


def get_config(name, profile):
    """The TrainConfig of (config, profile), a fresh copy to edit freely: the experiment
    ``<profile>/<name>`` (``<name>`` for the cpu profile), which states its differences from the
    config, which states its own from the defaults."""
    if name not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {name!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    return load_experiment(name if profile == "cpu" else f"{profile}/{name}")


def default_data(cfg):
    """The data a TrainConfig trains on when none is named: the MNI152 volumes for a 3-D model, else
    the embedded photographs."""
    return "mni152" if len(cfg.model.input_size) == 3 else "photos"


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
    Checkpoints that recorded no task get it from their model family and settings; those written
    before the task options had their own section have them at the top level (options this
    version no longer has are dropped)."""
    stored = dict(ckpt.get("train_config") or {})
    stored.pop("model", None)
    model = config_from_dict(ckpt["config"])
    task = stored.pop("task", None) or (
        "sparse_flow" if isinstance(model, FlowConfig) else "sr" if stored.get("sr_scales") else "recon")
    if task not in TASKS:
        raise ValueError(f"the checkpoint's task {task!r} is not one of {sorted(TASKS)}")
    option_names = {f.name for f in dataclasses.fields(TASKS[task].options_class)}
    options = {**{k: v for k, v in stored.items() if k in option_names}, **(stored.pop("options", None) or {})}
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"task", "model", "options"}
    return TrainConfig(task=task, model=model,
                       options=TASKS[task].options_class(**{k: v for k, v in options.items() if k in option_names}),
                       **{k: v for k, v in stored.items() if k in known})


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
    """The TrainConfig of a dict as ``config_json`` prints it (``--print-config``). Its model config
    and options are those of its task (``tasks.TASKS[task]``); a section left out takes the
    task's defaults."""
    d = dict(d)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
    task = d.get("task", "recon")
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    cls = TASKS[task]
    for section in ("model", "options"):
        if section in d and not isinstance(d[section], dict):
            raise ValueError(f"the training config's {section!r} must be a dict of its fields, got "
                             f"{type(d[section]).__name__}")
    if "model" in d:
        family = next(name for name, (c, _) in MODEL_FAMILIES.items() if c is cls.model_config)
        d["model"] = config_from_dict({"family": family, **d["model"]}, stored=False)
    if "options" in d:
        d["options"] = from_fields(cls.options_class, d["options"], f"the options of task {task!r}")
    return TrainConfig(**d)


def load_config_file(path):
    """The TrainConfig in a JSON file as ``--print-config`` prints it, or of an experiment file
    (``load_experiment``); ValueError naming the file."""
    return load_experiment(path)
