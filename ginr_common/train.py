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

from ginr_common.data import load_dataset
from ginr_common.evaluate import evaluate_reconstruction, psnr
from ginr_common.fourier import make_grid
from ginr_common.model import GINRConfig, MambaGINR, load_checkpoint, save_checkpoint

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


def _model(**kw):
    return GINRConfig(name="standard_fourier", **kw)


PROFILES = {
    "standard_fourier": {
        # seconds on CPU: for CI and notebooks under nbval
        "smoke": TrainConfig(_model(dim=32, depth=1, num_lp=16, d_state=8,
                                    decoder_kwargs=dict(hidden=64, n_freqs=8, heads=2, n_blocks=1)),
                             steps=20, batch_size=8, warmup_steps=4, val_every=10, ckpt_every=10, lr=1e-3),
        # about ten minutes on a 2-core CPU
        "cpu": TrainConfig(_model(dim=64, depth=2, num_lp=64, d_state=16,
                                  decoder_kwargs=dict(hidden=128, n_freqs=16, heads=2, n_blocks=2)),
                           steps=1500, batch_size=16, warmup_steps=100, val_every=250, ckpt_every=250, lr=1e-3),
        # the seeds' hyperparameters (CIFAR-10: 40 epochs of 45k images at batch 64, 5 warm-up epochs)
        "full": TrainConfig(_model(dim=256, depth=6, num_lp=256, d_state=16,
                                   decoder_kwargs=dict(hidden=512, n_freqs=32, heads=2, n_blocks=3)),
                            steps=28_120, batch_size=64, lr=5e-4, weight_decay=1e-4, warmup_steps=3_515,
                            val_every=703, ckpt_every=703),
    },
}


def get_config(name, profile):
    if name not in PROFILES:
        raise ValueError(f"--config must be one of {sorted(PROFILES)}, got {name!r}")
    if profile not in PROFILES[name]:
        raise ValueError(f"--profile must be one of {sorted(PROFILES[name])}, got {profile!r}")
    return dataclasses.replace(PROFILES[name][profile])


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


# ----------------------------------------------------------------------------- fit
def fit(cfg: TrainConfig, data="photos", out=None, resume=False, datasets=None, progress=True,
        dump_weights=None, on_step=None):
    """Train ``cfg.model`` on ``data``; returns the metrics dict (also written to metrics.json)."""
    rank, world, device = setup_distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the number of processes {world}")
    out = Path(out or CHECKPOINTS / cfg.model.name)
    datasets = datasets or load_dataset(data)
    train_set, val_set = datasets["train"], datasets["val"]

    torch.manual_seed(cfg.seed)
    model = MambaGINR(cfg.model).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    state = {"step": 0, "best_val_psnr": -math.inf, "best_step": None, "history": [], "elapsed_s": 0.0}
    if resume and (out / "last.pt").exists():
        prev, ckpt = load_checkpoint(out / "last.pt", map_location=device)
        model.load_state_dict(prev.state_dict())
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["train_state"]
        if rank == 0 and progress:
            print(f"resuming from {out / 'last.pt'} at step {state['step']}")
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    coords = make_grid(cfg.model.input_size, device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=cfg.model.name, disable=rank != 0 or not progress)
    t_start = time.perf_counter() - state["elapsed_s"]

    def save(name, **extra):
        state["elapsed_s"] = time.perf_counter() - t_start
        save_checkpoint(out / name, model, train_state=state, optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), train_config=_plain(cfg), **extra)

    while state["step"] < cfg.steps:
        step = state["step"]
        idx = batch_indices(step, len(train_set), cfg.batch_size, cfg.seed, rank, world)
        images = torch.stack([train_set[i][0] for i in idx]).to(device)
        target = images.flatten(2).transpose(1, 2)
        model.train()
        with amp:
            pred = ddp(images, coords)
        loss = F.mse_loss(pred.float(), target)
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
        train_psnr = float(psnr(pred.detach().float(), target).mean())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.2e}", psnr=f"{train_psnr:.2f}")
        record = {"step": step, "loss": loss.item(), "train_psnr": train_psnr, "lr": sched.get_last_lr()[0]}
        if step % cfg.val_every == 0 or step == cfg.steps:
            record["val_psnr"] = evaluate_reconstruction(model, val_set, with_ssim=False)["psnr"]
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
            on_step(step)
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
    on_step = (lambda s: s == kill_after and os.kill(os.getpid(), signal.SIGKILL)) if kill_after else None
    m = fit(cfg, a.data, a.out, a.resume, dump_weights=a.dump_weights, on_step=on_step)
    if m is not None:
        print(f"done: {m['steps']} steps, best val PSNR {m['best_val_psnr']:.2f} dB at step {m['best_step']}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
