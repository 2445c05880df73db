"""Checkpoints: one registry of model families, atomic save, and load that rebuilds any model
from its stored config alone (``torch.load(weights_only=True)``: no pickled code).

A checkpoint is a dict {format, config, model (state dict), train_state, ...}; the training
loop adds the full training config and the identity of its data.

Pretrained weights are folders in the layout of huggingface_hub's ``PyTorchModelHubMixin``:
``model.safetensors`` (the weights, no pickle), ``config.json`` (the model's config with its
family) and, for the shipped ones, ``manifest.json`` (how they were made and what they score).
``save_pretrained(model, folder)`` / ``from_pretrained(folder)`` write and read such a folder
(``huggingface_hub.upload_folder`` publishes one as it is); ``load_pretrained(name)`` loads one
of the shipped models (``PRETRAINED``) without network.
"""
import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ginr_common._io import atomic_write, from_fields, write_json

from ginr_common.flow import FlowConfig, SparseFieldFlow
from ginr_common.model import GINRConfig, MambaGINR

CHECKPOINT_FORMAT = "ginr-checkpoint-v1"
MODEL_FAMILIES = {"ginr": (GINRConfig, MambaGINR), "flow": (FlowConfig, SparseFieldFlow)}


def model_for(config):
    """The model of a config dataclass (GINRConfig -> MambaGINR, FlowConfig -> SparseFieldFlow)."""
    for cfg_cls, model_cls in MODEL_FAMILIES.values():
        if isinstance(config, cfg_cls):
            return model_cls(config)
    raise TypeError(f"config must be one of {[c.__name__ for c, _ in MODEL_FAMILIES.values()]}, "
                    f"got {type(config).__name__}")


def _upgrade(d):
    """Configs stored by earlier versions: decoder="lainr" + decoder_kwargs={...} (before decoders
    had typed configs); no ``pixel_filter`` (before it existed); the local decoder's unused
    ``heads``; the flow's ``neighbour_filter``, removed (a checkpoint that used it cannot be
    rebuilt)."""
    if "decoder_kwargs" in d:
        d["decoder"] = {"kind": d["decoder"], **d.pop("decoder_kwargs")}
        if d["decoder"].get("locality"):
            d["decoder"].setdefault("lp_grid", 16)     # the distance unit those checkpoints were trained with
    if d.get("family", "ginr") == "ginr":
        d.setdefault("pixel_filter", 0)   # configs stored before the pixel filter existed had none
    if isinstance(d.get("decoder"), dict) and d["decoder"].get("kind") == "local":
        d["decoder"] = {k: v for k, v in d["decoder"].items() if k != "heads"}
    if d.get("family") == "flow" and "neighbour_filter" in d:
        if d.pop("neighbour_filter"):
            raise ValueError("this flow checkpoint uses neighbour_filter=True, which this version no longer has")
    return d


def config_from_dict(d, stored=True):
    """The config dataclass of a config dict (with its ``family``); ``stored``: one that a
    checkpoint or weights folder recorded, read as the version that wrote it meant it (``_upgrade``)."""
    d = _upgrade(dict(d)) if stored else dict(d)
    family = d.pop("family", "ginr")
    if family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(MODEL_FAMILIES)}")
    return from_fields(MODEL_FAMILIES[family][0], d, f"the {family} model config")


def build_model(config_dict):
    """A fresh model from a stored config dict."""
    return model_for(config_from_dict(config_dict))


def plain(obj):
    """A dataclass (nested ones included) as JSON-ready dicts and lists."""
    def conv(x):
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [conv(v) for v in x]
        return x
    return conv(dataclasses.asdict(obj))


def flat(d, prefix=""):
    """A nested dict as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_dict(model):
    """{"family": ..., **the model's config} in plain types."""
    family = next((k for k, (_, m) in MODEL_FAMILIES.items() if isinstance(model, m)), None)
    if family is None:
        raise TypeError(f"not a model of a known family: {type(model).__name__}")
    return {"family": family, **plain(model.config)}


def atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path, model, train_state=None, **extra):
    """Write {format, config, model (state dict), train_state, ...} atomically."""
    model = getattr(model, "module", model)  # unwrap DDP
    atomic_save({"format": CHECKPOINT_FORMAT, "config": config_dict(model), "model": model.state_dict(),
                 "train_state": train_state or {}, **extra}, path)


def load_checkpoint(path, map_location=None):
    """(model rebuilt from the stored config, checkpoint dict). Raises ValueError on a truncated
    or corrupt file, a file that is not a checkpoint, or a config that does not match the weights."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "config" not in ckpt or "model" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a MAMBA-GINR checkpoint: expected a dict with format="
                         f"{CHECKPOINT_FORMAT!r}, 'config' and 'model'; got {keys}")
    try:
        model = build_model(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: cannot rebuild its model from the stored config: {e}") from e
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: the stored config does not match the stored weights: {e}") from e
    if map_location is not None:
        model.to(map_location)
    return model, ckpt


# ---------------------------------------------------------------------- pretrained weights
WEIGHTS = Path(__file__).resolve().parent / "weights"
PRETRAINED = ("standard_fourier", "lp_latent", "gaussian_fourier", "scent", "flow_sparse", "volume")
WEIGHT_FILES = ("model.safetensors", "config.json")


def file_sha256(path):
    """The sha256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_pretrained(model, folder, manifest=None):
    """Write ``model.safetensors`` and ``config.json`` (and ``manifest.json`` when given, with the
    sha256 of the other two under ``files``) into ``folder``, each atomically. Returns the folder."""
    model = getattr(model, "module", model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda f: f.write(save(tensors)))
    write_json(config_dict(model), folder / "config.json")
    if manifest is not None:
        write_json({**manifest, "files": {f: file_sha256(folder / f) for f in WEIGHT_FILES}}, folder / "manifest.json")
    return folder


def verify_files(folder):
    """Raise ValueError naming the file when a file listed in ``folder``'s manifest.json (its
    ``files``: name -> sha256) is missing or its bytes differ. Folders without a manifest pass."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        return
    listed = json.loads((folder / "manifest.json").read_text()).get("files", {})
    for name, want in listed.items():
        if not (folder / name).is_file():
            raise ValueError(f"{folder / name} is listed in manifest.json but missing")
        got = file_sha256(folder / name)
        if got != want:
            raise ValueError(f"{folder / name} has changed since its manifest was written: sha256 {got}, the "
                             f"manifest records {want}. Restore the file (or rewrite the manifest with "
                             "save_pretrained if the change is yours)")


def from_pretrained(folder, map_location=None):
    """The model saved in ``folder`` by ``save_pretrained``, in eval mode. When the folder has a
    manifest, its files must have the sha256 it records (ValueError naming the file otherwise)."""
    folder = Path(folder)
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a pretrained-model folder: it lacks {missing} "
                                "(expected config.json and model.safetensors, as save_pretrained writes them)")
    verify_files(folder)
    try:
        model = build_model(json.loads((folder / "config.json").read_text()))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{folder}/config.json: cannot rebuild its model: {e}") from e
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(map_location or "cpu")))
    except RuntimeError as e:
        raise ValueError(f"{folder}: config.json does not match model.safetensors: {e}") from e
    return model.eval()


def load_pretrained(name, map_location=None):
    """One of the shipped models, ready for ``render`` / ``sample``: ``standard_fourier``,
    ``lp_latent`` (the LP latent alone), ``gaussian_fourier``, ``scent``, ``flow_sparse`` or ``volume``
    (``pretrained_manifest(name)`` says how it was trained and what it scores)."""
    if name not in PRETRAINED:
        raise ValueError(f"pretrained model must be one of {PRETRAINED}, got {name!r}")
    return from_pretrained(WEIGHTS / name, map_location)


def pretrained_manifest(name):
    """The manifest of a shipped model: training command, data hash, commit, measured numbers."""
    if name not in PRETRAINED:
        raise ValueError(f"pretrained model must be one of {PRETRAINED}, got {name!r}")
    return json.loads((WEIGHTS / name / "manifest.json").read_text())


def describe_pretrained(name):
    """A few lines on a shipped model: how it was trained, its size and its configuration."""
    m, model = pretrained_manifest(name), load_pretrained(name)
    cfg = json.dumps(json.loads(m["train_config"])["model"], indent=1)
    return (f"shipped weights: `{m['training_command']}`, selected on validation at step {m['best_step']}, trained "
            f"{m['train_seconds'] / 60:.0f} min on 2 CPU cores; {m['data']['name']} sha256 {m['data']['sha256'][:12]}\n"
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; configuration:\n{cfg}")
