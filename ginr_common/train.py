"""The training loop, the same for every task.

    python -m ginr_common.train --config standard_fourier --profile smoke|cpu|long|full [--data photos|cifar10|FOLDER]
                                [--out DIR] [--resume | --fresh] [--steps N] [--seed S] [--print-config]
                                [--set KEY=VALUE ...] [--config-file FILE]
    python -m ginr_common.train --config-file sf/lps        # any experiment: ginr_common/experiments/ or a file
    python -m ginr_common.train --list-experiments
    torchrun --nproc_per_node N -m ginr_common.train ...      (DDP; gloo on CPU, nccl on CUDA)

AdamW, linear warm-up then cosine per step, gradient clipping, bf16 autocast on CUDA, tqdm with
loss and PSNR, validation every ``val_every`` steps (model selection on the validation split),
optionally an exponential moving average of the weights (``ema``: what is validated and saved),
``last.pt`` / ``best.pt`` / ``metrics.json`` (and TensorBoard logs in ``tensorboard/`` when
tensorboard is installed: loss, PSNR, learning rate, validation PSNR and a picture of the model on
validation images) in the run folder; at each validation also the learned LPs' diversity (1 - their
mean cosine similarity, ``tokens.lp_diversity``: near 0 when the LPs collapse onto one vector) (default
``checkpoints/<config>-<hash of the settings>``), written atomically by rank 0 only. What differs
between tasks (batch, loss, validation) lives in ``ginr_common.tasks``.

A checkpoint holds the full training config and the identity of the training data. ``--resume``
continues last.pt exactly (batches are a pure function of (seed, step); optimizer and schedule
states are restored) and refuses, naming the differing fields, when anything differs;
``--fresh`` starts over in a folder that already holds a run.
"""
import argparse
import dataclasses
import math
import os
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from ginr_common.checkpoints import flat, load_checkpoint, model_for, plain, save_checkpoint
from ginr_common.configs import (config_json, default_data, default_profile, experiments, get_config, load_config_file,
                                 run_name, with_settings)
from ginr_common.data import dataset_identity, folder_identity, load_dataset
from ginr_common.tasks import make_task, shard
from ginr_common.tokens import ImplicitSequentialBias, lp_diversity
from ginr_common._io import write_json

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def lr_factor(step, warmup, total):
    """Linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def setup_distributed():
    """(rank, world, device); initialises the process group under torchrun."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank, world, device


def param_groups(model, weight_decay):
    """Weight decay on matrices only (not on norms, biases, LPs or parameters marked _no_weight_decay)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) or n.endswith("lps") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def run_differences(ckpt, cfg, identity):
    """The fields in which a checkpoint's run differs from (cfg, identity): ["lr: 0.002 -> 0.001", ...]."""
    stored = flat({"train": ckpt.get("train_config") or {}, "data": ckpt.get("data") or {}})
    asked = flat({"train": plain(cfg), "data": identity})
    return [f"{k}: {stored.get(k, '(not recorded)')} in the checkpoint, {asked.get(k, '(absent)')} asked"
            for k in sorted(set(stored) | set(asked)) if stored.get(k) != asked.get(k)]


def fit(cfg, data=None, out=None, resume=False, fresh=False, datasets=None, progress=True, on_step=None):
    """Train ``cfg.model`` on ``data`` for ``cfg.task``; returns the metrics (also metrics.json).
    ``resume``: continue the run in ``out`` (refused if its config or data differ); ``fresh``:
    overwrite a run already in ``out``; ``on_step(step, record)`` after every step (e.g.
    ``viz.LiveCurves``)."""
    cfg = dataclasses.replace(cfg)     # a copy, validated again: settings may have been edited since
    data = data or default_data(cfg)
    rank, world, device = setup_distributed()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the number of processes {world}")
    task = make_task(cfg)
    datasets = datasets or load_dataset(data, size=cfg.model.input_size, channels=cfg.model.in_channels)
    task.check_data(datasets, data)
    train_set = datasets[task.train_split]
    identity = {**dataset_identity(train_set, data, task.train_split), **folder_identity(data)}
    out = Path(out or CHECKPOINTS / run_name(cfg, data))

    torch.manual_seed(cfg.seed)
    model = model_for(cfg.model).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    # the weights that are validated and saved: a moving average of the trained ones, or those themselves
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    evaluated = ema.module if ema else model
    state = {"step": 0, "best_val_psnr": -math.inf, "best_step": None, "history": [], "elapsed_s": 0.0}
    last = out / "last.pt"
    saved = {"last.pt": None}       # the step of this run's last.pt, once one exists
    if last.exists() and resume:
        prev, ckpt = load_checkpoint(last, map_location=device)
        diff = run_differences(ckpt, cfg, identity)
        if diff:
            raise ValueError(f"cannot resume {last}: it is a different run. Differences:\n  " + "\n  ".join(diff) +
                             "\nStart a fresh run (fresh=True, --fresh) or train into another folder.")
        model.load_state_dict(ckpt["trained_weights"] if ema else prev.state_dict())
        if ema:   # the checkpoint's model is the average
            ema.module.load_state_dict(prev.state_dict())
            ema.n_averaged.fill_(ckpt["ema_updates"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["train_state"]
        saved["last.pt"] = state["step"]
        if rank == 0 and progress:
            print(f"resuming from {last} at step {state['step']}")
    elif last.exists() and not fresh:
        raise ValueError(f"{out} already holds a run: resume it (resume=True, --resume) or overwrite it "
                         "(fresh=True, --fresh)")
    # a task's earlier stages train parts of the model alone; validation starts with its last stage
    stages = task.stages()
    validate_from = stages[-1][1]
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=len(stages) > 1) \
        if world > 1 else model

    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    board = tensorboard(out, state["step"]) if rank == 0 else None
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=cfg.model.name, disable=rank != 0 or not progress,
               mininterval=1.0)
    t_start = time.perf_counter() - state["elapsed_s"]
    state_start, t_step0 = state["step"], time.perf_counter()

    def save(name):
        state["elapsed_s"] = time.perf_counter() - t_start
        extra = {"ema_updates": int(ema.n_averaged), "trained_weights": model.state_dict()} if ema else {}
        save_checkpoint(out / name, evaluated, train_state=state, optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), train_config=plain(cfg), data=identity, **extra)
        saved[name] = state["step"]

    while state["step"] < cfg.steps:
        step = state["step"]
        batch = {k: v.to(device) for k, v in shard(task.batch(train_set, step), rank, world).items()}
        model.train()
        with amp:
            loss, train_psnr = task.loss(net, batch)
        loss = loss.float()
        if not torch.isfinite(loss):
            bar.close()
            if board is not None:
                board.close()
            kept = (f"The last good checkpoint is {last} (step {saved['last.pt']})" if saved["last.pt"] is not None
                    else f"No checkpoint of this run was saved in {out} before it")
            raise FloatingPointError(f"non-finite loss ({loss.item()}) at step {step + 1}; stopped. {kept}.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if ema:
            ema.update_parameters(model)
        state["step"] = step = step + 1
        record = {"step": step, "loss": loss.item(), "train_psnr": float(train_psnr), "lr": sched.get_last_lr()[0]}
        if board is not None:
            for tag, key in (("train/loss", "loss"), ("train/psnr", "train_psnr"), ("train/lr", "lr")):
                board.add_scalar(tag, record[key], step)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.2e}", psnr=f"{record['train_psnr']:.2f}")
        # validated from the start of the last training stage on
        if (step % cfg.val_every == 0 and step > validate_from) or step == cfg.steps:
            record["val_psnr"] = task.validate(evaluated, datasets)
            lps = learned_lps(evaluated)
            if lps is not None:   # 1 - mean cosine similarity of the learned LPs: near 0 when they collapse
                record["lp_diversity"] = lp_diversity(lps)
            bar.write(f"step {step}: val PSNR {record['val_psnr']:.2f} dB")
            if board is not None:
                board.add_scalar("val/psnr", record["val_psnr"], step)
                if lps is not None:
                    board.add_scalar("lp/diversity", record["lp_diversity"], step)
                board.add_image("val/preview", task.preview(evaluated, datasets), step)
                board.flush()
        state["history"].append(record)
        if rank == 0:
            if "val_psnr" in record and record["val_psnr"] > state["best_val_psnr"]:
                state["best_val_psnr"], state["best_step"] = record["val_psnr"], step
                save("best.pt")
            if step % cfg.ckpt_every == 0 or step == cfg.steps or "val_psnr" in record:
                save("last.pt")
                write_metrics(out, cfg, state, identity, world)
        if on_step is not None:
            on_step(step, record)
        if step == state_start + 5 and device.type == "cpu":
            warn_if_long(cfg, (time.perf_counter() - t_step0) / 5)
    bar.close()
    if board is not None:
        board.close()
    if world > 1:
        dist.barrier()
    return write_metrics(out, cfg, state, identity, world) if rank == 0 else None


def learned_lps(model):
    """The learned LPs (M, D) of a model's first ``ImplicitSequentialBias``; None without one."""
    return next((m.lps for m in model.modules() if isinstance(m, ImplicitSequentialBias)), None)


def tensorboard(out, step):
    """A TensorBoard writer into ``out``/tensorboard when tensorboard is installed (the ``logs``
    extra), else None. Events after ``step`` (those of a run killed after its last save) are
    dropped when a run resumes there."""
    try:   # an optional back end, imported only when training asks for it
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(Path(out) / "tensorboard"), purge_step=step or None)


def warn_if_long(cfg, seconds_per_step, limit_hours=1.0):
    """Warn, with an estimate from the steps so far, when a run on the CPU would take over an hour
    (the full profile is meant for a GPU). Returns the estimate in hours."""
    hours = seconds_per_step * cfg.steps / 3600
    if hours > limit_hours:
        warnings.warn(f"{cfg.model.name}: {cfg.steps} steps at {seconds_per_step:.2f} s each would take about "
                      f"{hours:.1f} hours on this CPU; this configuration is meant for a GPU (the cpu profile "
                      "trains in about 10 minutes)", stacklevel=3)
    return hours


def write_metrics(out, cfg, state, identity, world):
    hist = state["history"]
    m = {"config": cfg.model.name, "task": cfg.task, "data": identity, "processes": world, "train_config": plain(cfg),
         "steps": state["step"], "best_val_psnr": state["best_val_psnr"], "best_step": state["best_step"],
         "final_train_loss": hist[-1]["loss"] if hist else None,
         "train_seconds": round(state.get("elapsed_s", 0.0), 1), "history": hist}
    write_json(m, Path(out) / "metrics.json")
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="standard_fourier")
    p.add_argument("--profile", default=None, help="smoke | cpu | long | full (default: $GINR_PROFILE, else full on CUDA, cpu otherwise)")
    p.add_argument("--data", default=None,
                   help="photos (the embedded set), cifar10, or a folder of images (PNG, JPEG, TIFF, BMP, .npy, .npz; "
                        "train/ val/ test/ subfolders, or split by file name)")
    run = p.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run in --out (refused if anything differs)")
    run.add_argument("--fresh", action="store_true", help="overwrite a run already in --out")
    p.add_argument("--out", default=None, help="run folder (default checkpoints/<config>-<hash of the settings>)")
    p.add_argument("--steps", type=int, default=None,
                   help="override the profile's number of steps (a training stage keeps its share)")
    p.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any field of the configuration, dotted, the value in JSON (repeatable): "
                        "--set lr=1e-3 --set 'model.input_size=[64, 64]' --set model.decoder.hidden=256")
    p.add_argument("--config-file", default=None,
                   help="an experiment: a JSON file as --print-config prints it or stating its differences from the "
                        "experiments it extends, or the name of one in ginr_common/experiments/ (e.g. sf/lps, "
                        "long/scent); instead of --config/--profile")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--list-experiments", action="store_true", help="list the named experiments and exit")
    a = p.parse_args(argv)
    if a.list_experiments:
        for name, about in experiments().items():
            print(f"{name:32s} {about}")
        return
    settings = {}
    for item in a.set:
        key, eq, value = item.partition("=")
        if not eq or not key:
            p.error(f"--set takes KEY=VALUE (e.g. --set lr=1e-3), got {item!r}")
        settings[key.strip()] = value
    try:
        cfg = load_config_file(a.config_file) if a.config_file else get_config(a.config, a.profile or default_profile())
        if a.steps:   # options tied to the length (a training stage) keep their share
            cfg.options = cfg.options.for_steps(cfg.steps, a.steps)
            cfg.steps = a.steps
        if a.seed is not None:
            cfg.seed = a.seed
        cfg = with_settings(cfg, settings)
    except ValueError as e:
        p.error(str(e))
    if a.print_config:
        print(config_json(cfg))
        return
    m = fit(cfg, a.data, a.out, resume=a.resume, fresh=a.fresh)
    if m is not None:
        print(f"done: {m['steps']} steps, best val PSNR {m['best_val_psnr']:.2f} dB at step {m['best_step']}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
