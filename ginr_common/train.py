"""The training engine.

    python -m ginr_common.train --config standard_fourier --profile smoke|cpu|full --data photos|cifar10 [--resume]
    torchrun --nproc_per_node N -m ginr_common.train ...      (DDP; gloo on CPU, nccl on CUDA)

AdamW, linear warm-up then cosine per step, gradient clipping, bf16 autocast on CUDA, tqdm with
loss and PSNR, validation every ``val_every`` steps (model selection on the validation split),
``last.pt`` / ``best.pt`` / ``metrics.json`` in ``checkpoints/<config>/`` (or --out), written
atomically by rank 0 only. ``--resume`` continues from last.pt exactly: batches are a pure
function of (seed, step), and the optimizer and schedule states are restored.
"""
import argparse
import copy
import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from ginr_common.data import _resize, augment, load_dataset, sparse_masks, take_rows
from ginr_common.evaluate import evaluate_reconstruction, evaluate_sparse, evaluate_sr, psnr
from ginr_common.fourier import make_grid
from ginr_common.flow import FlowConfig, flow_matching_loss
from ginr_common.model import GINRConfig, config_dict, load_checkpoint, model_for, save_checkpoint

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


@dataclass
class TrainConfig:
    model: GINRConfig = field(default_factory=GINRConfig)
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
    sr_scales: tuple = ()       # super-resolution training: HR targets at 32 * s for s drawn from these
    sr_queries: int = 1024      # HR pixels supervised per image and step (random subset)
    mask_redraw: bool = True    # flow: fresh masks every step, all unobserved pixels supervised
                                # (False: the seeds' fixed per-image masks, a disjoint 20% supervised)


# Every config shares the encoder size and schedule of a profile; configs differ in the decoder
# and the training task. smoke: seconds (CI, notebooks under nbval); cpu: about ten minutes on a
# 2-core CPU; full: the seeds' hyperparameters for a GPU (CIFAR-10: 40 epochs of 45k images at
# batch 64, 5 warm-up epochs).
_ENCODER = {
    "smoke": dict(dim=32, depth=1, num_lp=16, d_state=8),
    "cpu": dict(dim=64, depth=2, num_lp=128, d_state=16),
    "full": dict(dim=256, depth=6, num_lp=256, d_state=16),
}
_DECODER_SIZE = {"smoke": dict(hidden=64, n_blocks=1), "cpu": dict(hidden=128, n_blocks=2),
                 "full": dict(hidden=512, n_blocks=3)}
_SCHEDULE = {
    "smoke": dict(steps=20, batch_size=8, warmup_steps=4, val_every=10, ckpt_every=10, lr=1e-3),
    "cpu": dict(steps=1500, batch_size=16, warmup_steps=100, val_every=250, ckpt_every=250, lr=2e-3, augment=True),
    "full": dict(steps=28_120, batch_size=64, warmup_steps=3_515, val_every=703, ckpt_every=703, lr=5e-4),
}
_CONFIGS = {  # name: (model fields, decoder kwargs, training fields)
    # notebook 1: fixed log-spaced features up to the 32-grid's Nyquist rate, exact reconstruction
    "standard_fourier": (dict(decoder="lainr"), dict(features="fourier", n_freqs=16, max_freq=32, heads=2), {}),
    # notebook 2: Gaussian random features, coordinate jitter, trained with HR targets up to x4
    "gaussian_fourier": (dict(decoder="lainr", input_skip=True),
                         dict(features="gaussian", n_freqs=64, sigma=8.0, heads=2),
                         dict(jitter=1 / 6, sr_scales=(2, 3, 4))),
    # notebook 3: SCENT-style decoder with a 2-D locality bias, reconstruction like notebook 1
    "scent": (dict(decoder="scent"), dict(features="gaussian", n_freqs=64, sigma=8.0, heads=4, locality=True),
              dict(jitter=1 / 6)),
}


def _profile(name, profile):
    model_kw, dec_kw, train_kw = _CONFIGS[name]
    model = GINRConfig(name=name, **_ENCODER[profile], **model_kw,
                       decoder_kwargs={**dec_kw, **_DECODER_SIZE[profile]})
    return TrainConfig(model=model, **_SCHEDULE[profile], **train_kw)


PROFILES = {name: {p: _profile(name, p) for p in _SCHEDULE} for name in _CONFIGS}
# notebook 4: flow matching from 20% of the pixels (seeds: lr 1e-4, batch 64, 100 epochs of CIFAR-10)
PROFILES["flow_sparse"] = {
    "smoke": TrainConfig(FlowConfig(dim=32, depth=1, num_lp=16, d_state=8, hidden=64, n_blocks=1),
                         **_SCHEDULE["smoke"]),
    # ~0.7 s a step on two cores (every unobserved pixel is supervised): 800 steps ~ ten minutes
    "cpu": TrainConfig(FlowConfig(dim=64, depth=2, num_lp=32, d_state=16, hidden=128, n_blocks=3),
                       **{**_SCHEDULE["cpu"], "steps": 800, "warmup_steps": 50, "val_every": 200,
                          "ckpt_every": 200, "lr": 1e-3}),
    "full": TrainConfig(FlowConfig(dim=256, depth=6, num_lp=128, hidden=512, n_blocks=6),
                        **{**_SCHEDULE["full"], "steps": 70_300, "lr": 1e-4}),
}


def get_config(name, profile):
    if name not in PROFILES:
        raise ValueError(f"--config must be one of {sorted(PROFILES)}, got {name!r}")
    if profile not in PROFILES[name]:
        raise ValueError(f"--profile must be one of {sorted(PROFILES[name])}, got {profile!r}")
    return copy.deepcopy(PROFILES[name][profile])


def default_profile():
    """GINR_PROFILE if set, else full on CUDA and cpu otherwise."""
    return os.environ.get("GINR_PROFILE") or ("full" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- helpers
def lr_factor(step, warmup, total):
    """Linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def batch_indices(step, n, batch_size, seed, rank=0, world=1):
    """This rank's share of the global batch at ``step``: a pure function of its arguments."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({n} images)")
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size][rank::world].tolist()


def setup_distributed():
    """(rank, world, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank, world, device


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) or n.endswith("lps") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _images(cfg, train_set, step, rank, world):
    """(this rank's images at ``step``, the step's generator, their dataset indices)."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + step * 1009 + rank)
    idx = batch_indices(step, len(train_set), cfg.batch_size, cfg.seed, rank, world)
    images = torch.stack([train_set[i][0] for i in idx])
    return (augment(images, g) if cfg.augment else images), g, idx


def flow_batch(cfg, train_set, step, rank=0, world=1):
    """(obs coords, obs values, query coords, targets, generator) for the flow model at ``step``:
    a pure function of (cfg, step, rank)."""
    images, g, idx = _images(cfg, train_set, step, rank, world)
    grid, values = make_grid(cfg.model.input_size), images.flatten(2).transpose(1, 2)
    if cfg.mask_redraw:
        ids = [(step * world + rank) * cfg.batch_size + j for j in range(len(idx))]
        obs, sup = sparse_masks(ids, grid.shape[0], cfg.model.observe_frac, seed=cfg.seed + 1, supervise="rest")
    else:
        obs, sup = sparse_masks(idx, grid.shape[0], cfg.model.observe_frac, seed=42, supervise="disjoint")
    grid_b = grid.expand(len(idx), -1, -1)
    return take_rows(grid_b, obs), take_rows(values, obs), take_rows(grid_b, sup), take_rows(values, sup), g


def make_batch(cfg, train_set, step, rank=0, world=1):
    """This rank's batch at ``step``, a pure function of (cfg, step, rank): (encoder inputs
    (B, C, *S), queries (B, Q, d), targets (B, Q, C), n_lr). The first n_lr queries are the input
    grid (jittered when ``cfg.jitter``); with ``cfg.sr_scales`` the inputs are antialiased
    downsamples of HR crops and ``cfg.sr_queries`` HR pixels at a random scale follow."""
    images, g, _ = _images(cfg, train_set, step, rank, world)
    size = cfg.model.input_size
    hr, images = (images, _resize(images, size)) if cfg.sr_scales else (None, images)
    B, grid = images.shape[0], make_grid(size)
    queries = grid.expand(B, -1, -1)
    if cfg.jitter:  # target unchanged: the same offset for the whole batch, in input pixels
        queries = queries + torch.randn(grid.shape[-1], generator=g) * cfg.jitter / torch.tensor(size)
    target = images.flatten(2).transpose(1, 2)
    n_lr = target.shape[1]
    if cfg.sr_scales:
        s = cfg.sr_scales[int(torch.randint(len(cfg.sr_scales), (1,), generator=g))]
        hr_size = tuple(n * s for n in size)
        hr = hr if hr.shape[2:] == hr_size else _resize(hr, hr_size)
        sel = torch.randperm(math.prod(hr_size), generator=g)[:cfg.sr_queries]
        queries = torch.cat([queries, make_grid(hr_size)[sel].expand(B, -1, -1)], 1)
        target = torch.cat([target, hr.flatten(2).transpose(1, 2)[:, sel]], 1)
    return images, queries, target, n_lr


def validate(model, cfg, datasets):
    """The model-selection number on the validation split: reconstruction PSNR at the input
    size, or for super-resolution training the PSNR at the largest trained scale on the HR
    validation crops, or for the flow model the PSNR on the unobserved pixels of one 10-step
    Heun sample (fixed masks and noise) of the first 64 validation images."""
    if isinstance(cfg.model, FlowConfig):
        val = datasets["val"]
        images = torch.stack([val[i][0] for i in range(min(64, len(val)))])
        return evaluate_sparse(model, images, k=1, steps=10)["model_sample"]["psnr_unobserved"]
    if not cfg.sr_scales:
        return evaluate_reconstruction(model, datasets["val"], with_ssim=False)["psnr"]
    lr, hr = datasets["val_sr"]
    size = cfg.model.input_size[-1] * max(cfg.sr_scales)
    return evaluate_sr(model, lr, hr, sizes=(size,), with_ssim=False)[0][str(size)]["model"]["psnr"]


# ----------------------------------------------------------------------------- fit
def fit(cfg: TrainConfig, data="photos", out=None, resume=False, datasets=None, progress=True,
        dump_weights=None, on_step=None):
    """Train ``cfg.model`` on ``data``; returns the metrics dict (also written to metrics.json).
    ``on_step(step, record)`` is called after every step (e.g. ``viz.LiveCurves``)."""
    rank, world, device = setup_distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the number of processes {world}")
    out = Path(out or CHECKPOINTS / cfg.model.name)
    datasets = datasets or load_dataset(data)
    if cfg.sr_scales and "train_hr" not in datasets:
        raise ValueError(f"{cfg.model.name} trains super-resolution and needs high-resolution ground truth, "
                         f"which the {data!r} data does not have: use --data photos")
    train_set = datasets["train_hr"] if cfg.sr_scales else datasets["train"]

    torch.manual_seed(cfg.seed)
    model = model_for(cfg.model).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    state = {"step": 0, "best_val_psnr": -math.inf, "best_step": None, "history": [], "elapsed_s": 0.0}
    if resume and (out / "last.pt").exists():
        prev, ckpt = load_checkpoint(out / "last.pt", map_location=device)
        if config_dict(prev) != config_dict(model):  # both with today's defaults for fields added since
            raise ValueError(f"cannot resume: {out / 'last.pt'} holds a model of another config "
                             f"({config_dict(prev)}) than the one asked for ({config_dict(model)}); "
                             f"train into another --out folder or remove that one")
        model.load_state_dict(prev.state_dict())
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["train_state"]
        if rank == 0 and progress:
            print(f"resuming from {out / 'last.pt'} at step {state['step']}")
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=cfg.model.name, disable=rank != 0 or not progress,
               mininterval=1.0)
    t_start = time.perf_counter() - state["elapsed_s"]

    def save(name, **extra):
        state["elapsed_s"] = time.perf_counter() - t_start
        save_checkpoint(out / name, model, train_state=state, optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), train_config=_plain(cfg), **extra)

    while state["step"] < cfg.steps:
        step = state["step"]
        model.train()
        if isinstance(cfg.model, FlowConfig):
            *tensors, g = flow_batch(cfg, train_set, step, rank, world)
            oc, ov, qc, target = (x.to(device) for x in tensors)
            with amp:
                loss, pred = flow_matching_loss(ddp, model.noise, oc, ov, qc, target, g)
            n_lr = target.shape[1]
        else:
            images, queries, target, n_lr = (x.to(device) if torch.is_tensor(x) else x
                                             for x in make_batch(cfg, train_set, step, rank, world))
            with amp:
                pred = ddp(images, queries).float()
            loss = F.mse_loss(pred[:, :n_lr], target[:, :n_lr])
            if n_lr < target.shape[1]:  # half the loss on the LR grid, half on the HR pixels
                loss = 0.5 * loss + 0.5 * F.mse_loss(pred[:, n_lr:], target[:, n_lr:])
        loss = loss.float()
        if not torch.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"non-finite loss ({loss.item()}) at step {step + 1}; stopped. The last good "
                                     f"checkpoint is {out / 'last.pt'} (step of its last save)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        state["step"] = step = step + 1
        train_psnr = float(psnr(pred[:, :n_lr].detach(), target[:, :n_lr]).mean())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.2e}", psnr=f"{train_psnr:.2f}")
        record = {"step": step, "loss": loss.item(), "train_psnr": train_psnr, "lr": sched.get_last_lr()[0]}
        if step % cfg.val_every == 0 or step == cfg.steps:
            record["val_psnr"] = validate(model, cfg, datasets)
            bar.write(f"step {step}: val PSNR {record['val_psnr']:.2f} dB")
        state["history"].append(record)
        if rank == 0:
            if "val_psnr" in record and record["val_psnr"] > state["best_val_psnr"]:
                state["best_val_psnr"], state["best_step"] = record["val_psnr"], step
                save("best.pt")
            if step % cfg.ckpt_every == 0 or step == cfg.steps or "val_psnr" in record:
                save("last.pt")
                write_metrics(out, cfg, state, data, world)
        if on_step is not None:
            on_step(step, record)
    bar.close()
    if dump_weights:
        Path(dump_weights).mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), Path(dump_weights) / f"rank{rank}.pt")
    if world > 1:
        dist.barrier()
    return write_metrics(out, cfg, state, data, world) if rank == 0 else None


def _plain(cfg):
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def write_metrics(out, cfg, state, data, world):
    hist = state["history"]
    m = {"config": cfg.model.name, "data": data, "processes": world, "train_config": _plain(cfg),
         "steps": state["step"], "best_val_psnr": state["best_val_psnr"], "best_step": state["best_step"],
         "final_train_loss": hist[-1]["loss"] if hist else None,
         "train_seconds": round(state.get("elapsed_s", 0.0), 1), "history": hist}
    atomic_save_json(m, Path(out) / "metrics.json")
    return m


def atomic_save_json(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="standard_fourier")
    p.add_argument("--profile", default=None, help="smoke | cpu | full (default: $GINR_PROFILE, else full on CUDA, cpu otherwise)")
    p.add_argument("--data", default="photos", choices=["photos", "cifar10"])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=None, help="checkpoint folder (default checkpoints/<config>)")
    p.add_argument("--steps", type=int, default=None, help="override the profile's number of steps")
    p.add_argument("--dump-weights", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    cfg = get_config(a.config, a.profile or default_profile())
    if a.steps:
        cfg.steps = a.steps
    kill_after = int(os.environ.get("GINR_KILL_AFTER_STEP", 0))  # tests: a hard kill mid-training
    on_step = (lambda s, _: s == kill_after and os.kill(os.getpid(), signal.SIGKILL)) if kill_after else None
    m = fit(cfg, a.data, a.out, a.resume, dump_weights=a.dump_weights, on_step=on_step)
    if m is not None:
        print(f"done: {m['steps']} steps, best val PSNR {m['best_val_psnr']:.2f} dB at step {m['best_step']}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
