"""Training throughput of a profile (images/s) and where a step's time goes.

    python benchmarks/train_throughput.py                  # standard_fourier, cpu profile
    python benchmarks/train_throughput.py --profile smoke
    python benchmarks/train_throughput.py --set 'model.input_size=[128,128]'   # any setting, as the CLI's --set

One training step of the profile's task (its batch: the queries, scales and query subsets it
trains with) is split into its phases, each timed on its own (best of --repeats): making the
batch, encoder forward, decoder forward + loss, decoder backward (to the latents), encoder
backward (from the latents), gradient clipping + AdamW step. The backward is split exactly by
cutting the graph at the latents. Also times the unsplit step (batch + task loss + backward +
step), which gives the throughput. Inputs are random images of the training crops' size: the
time does not depend on pixel values.
Also reports the process's peak resident memory (everything: Python, torch, the model, the optimiser,
the batches), which bounds what training at these settings needs.
Writes benchmarks/results/train_throughput.md and .json.
"""
import argparse
import resource
import sys
import time

import torch
import torch.nn.functional as F
from _util import RESULTS, write_results

from ginr_common.configs import get_config, with_settings
from ginr_common.data import ImageTensorDataset
from ginr_common.model import MambaGINR
from ginr_common.tasks import make_task
from ginr_common.train import param_groups


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="standard_fourier")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting, as train.py's --set")
    p.add_argument("--out", default=str(RESULTS / "train_throughput"))
    a = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = with_settings(get_config(a.config, a.profile), dict(x.split("=", 1) for x in a.set))
    model = MambaGINR(cfg.model)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    task = make_task(cfg)
    size = tuple(4 * s for s in cfg.model.input_size) if cfg.sr_scales else cfg.model.input_size
    train_set = ImageTensorDataset(torch.randint(0, 256, (4 * cfg.batch_size, cfg.model.in_channels, *size),
                                                 dtype=torch.uint8))
    phases = {k: float("inf") for k in ("batch", "encoder forward", "decoder forward + loss", "decoder backward",
                                        "encoder backward", "clip + optimizer step")}
    whole = float("inf")

    def tick(name, t0):
        phases[name] = min(phases[name], time.perf_counter() - t0)
        return time.perf_counter()

    for rep in range(a.repeats + 1):  # the first pass warms up (numba, allocator) and is not counted
        opt.zero_grad(set_to_none=True)
        t = time.perf_counter()
        batch = task.batch(train_set, rep)
        images, queries, cells, target = batch["images"], batch["queries"], batch["cells"], batch["target"]
        t = tick("batch", t)
        latents = model.encode(images)
        t = tick("encoder forward", t)
        cut = latents.detach().requires_grad_()
        loss = F.mse_loss(model.decode(cut, queries, images=images, cell=cells), target)
        t = tick("decoder forward + loss", t)
        loss.backward()
        t = tick("decoder backward", t)
        latents.backward(cut.grad)
        t = tick("encoder backward", t)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tick("clip + optimizer step", t)
        # the unsplit step, as train.fit runs it
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        task.loss(model, task.batch(train_set, rep))[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if rep == 0:
            phases = dict.fromkeys(phases, float("inf"))
        else:
            whole = min(whole, time.perf_counter() - t0)

    total = sum(phases.values())
    n_params = sum(p.numel() for p in model.parameters())
    n_q = queries.shape[1]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"config {a.config}, profile {a.profile}{''.join(' --set ' + x for x in a.set)}: batch {cfg.batch_size}, "
             f"{'x'.join(map(str, cfg.model.input_size))} inputs, {n_q} queries per image, "
             f"{n_params / 1e6:.2f} M parameters, float32, best of {a.repeats}.", "",
             "| phase | ms per step | share |", "|---|---|---|"]
    lines += [f"| {k} | {v * 1e3:.1f} | {v / total:.0%} |" for k, v in phases.items()]
    enc = phases["encoder forward"] + phases["encoder backward"]
    dec = phases["decoder forward + loss"] + phases["decoder backward"]
    lines += [f"| **sum of phases** | {total * 1e3:.1f} | 100% |", f"| unsplit step | {whole * 1e3:.1f} | |", "",
              f"Throughput: {cfg.batch_size / whole:.1f} images/s ({1 / whole:.2f} steps/s) on the unsplit step. "
              f"Encoder {enc / total:.0%}, decoder {dec / total:.0%}, optimizer "
              f"{phases['clip + optimizer step'] / total:.0%} of the step. Peak resident memory of the process: "
              f"{peak_mb:.0f} MB."]
    text = "\n".join(lines)
    print(text)
    rows = {"phases_ms": {k: v * 1e3 for k, v in phases.items()}, "step_ms": whole * 1e3,
            "images_per_s": cfg.batch_size / whole, "encoder_share": enc / total, "decoder_share": dec / total,
            "peak_rss_mb": peak_mb,
            "args": vars(a)}
    write_results(a.out, "train_throughput.py", argv or sys.argv[1:], text, rows)
    return rows


if __name__ == "__main__":
    main()
