"""The training loop and the CLI pair: every config trains and evaluates from the command line,
kill-and-resume is exact for every config, a resume never continues a different run, a NaN loss
stops, and DDP on two processes equals one process with the same global batch."""
import copy
import dataclasses
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from ginr_common.checkpoints import load_checkpoint, model_for
from ginr_common.configs import (CONFIGS, PROFILES, config_json, default_data, experiment_settings, experiments,
                                 get_config, load_config_file, load_experiment, run_name, train_config_from_checkpoint,
                                 with_settings)
from ginr_common.data import ImageTensorDataset, load_dataset, resize
from ginr_common.fourier import make_grid
from ginr_common.metrics import chroma, psnr, ssim, total_variation
from ginr_common.tasks import batch_indices, make_task, shard
from ginr_common import viz
from ginr_common.train import fit, lr_factor

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GINR_TEST_THREADS": "1"}
PAIRS = [(name, profile) for name in sorted(CONFIGS) for profile in sorted(PROFILES)]

# a run that SIGKILLs itself after step argv[3] (0: never), resuming what is in argv[2]; it appends
# every step it trains to the file argv[4]
KILLABLE = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from ginr_common.configs import get_config
from ginr_common.train import fit
kill_at = int(sys.argv[3])

def on_step(step, record):
    with open(sys.argv[4], "a") as f:
        f.write(f"{step} ")
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

fit(get_config(sys.argv[1], "smoke"), out=sys.argv[2], resume=True, progress=False, on_step=on_step)
"""

# the command line's training run, recording the batch each process trains on at every step in
# OUT/batches-rank<R>.pt (argv: the train CLI's arguments, --out OUT among them)
RECORDING = """
import os, sys
import torch
import ginr_common.train as T
seen, make_task = [], T.make_task

def recording(cfg):
    task = make_task(cfg)
    loss = task.loss
    def wrapped(net, batch):
        seen.append({k: v.detach().clone() for k, v in batch.items()})
        return loss(net, batch)
    task.loss = wrapped
    return task

T.make_task = recording
T.main(sys.argv[1:])
out = sys.argv[sys.argv.index("--out") + 1]
torch.save(seen, os.path.join(out, f"batches-rank{os.environ.get('RANK', '0')}.pt"))
"""


def run(*args, module="ginr_common.train", check=True, launcher=()):
    r = subprocess.run([sys.executable, *launcher, "-m", module, *args], capture_output=True, text=True, env=ENV,
                       timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_schedule_batches_and_shards():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5) and lr_factor(100, 10, 100) == pytest.approx(0.0)
    b = batch_indices(3, 100, 8, seed=0)
    assert b == batch_indices(3, 100, 8, seed=0) and len(set(b)) == 8
    assert batch_indices(3 + 100 // 8, 100, 8, seed=0) != b          # a fresh permutation each epoch
    batch = {"x": torch.arange(8)[:, None], "y": torch.arange(8)}
    parts = [shard(batch, r, 2) for r in range(2)]
    assert sorted(torch.cat([p["y"] for p in parts]).tolist()) == list(range(8))
    assert torch.equal(parts[1]["x"][:, 0], parts[1]["y"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cli_trains_and_evaluates_every_config(name, tmp_path):
    run("--config", name, "--profile", "smoke", "--out", str(tmp_path))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["steps"] == 20 and m["config"] == name and m["best_step"] in (10, 20)
    if name != "flow_sparse":   # the flow's loss is too noisy over 20 steps (tests/test_flow.py checks it falls)
        first, last = m["history"][0]["loss"], sum(h["loss"] for h in m["history"][-5:]) / 5
        assert last < first, (first, last)
    model, ckpt = load_checkpoint(tmp_path / "best.pt")
    cfg = train_config_from_checkpoint(ckpt)
    assert cfg == get_config(name, "smoke")
    # the checkpoint reproduces the validation number training recorded
    data = load_dataset(default_data(cfg), size=cfg.model.input_size, channels=cfg.model.in_channels)
    assert make_task(cfg).validate(model, data) == pytest.approx(m["best_val_psnr"], abs=1e-4)
    extra = ["--n-images", "4", "--k", "2", "--steps", "2", "--n-hr", "2", "--calibrate"] if name == "flow_sparse" else []
    run("--checkpoint", str(tmp_path / "best.pt"), *extra, module="ginr_common.evaluate")
    ev = json.loads((tmp_path / "eval.json").read_text())
    if name == "flow_sparse":
        assert {"free", "hold_known", "zero_shot"} <= set(ev) and {"64", "128"} == set(ev["zero_shot"])
        # calibrated on the validation split, then evaluated at those temperatures (the checkpoint untouched)
        t = ev["calibration"]["temperature"]
        assert all(0 <= v <= 1 for v in t) and ev["temperature"] == [round(v, 4) for v in t]
        assert torch.equal(load_checkpoint(tmp_path / "best.pt")[0].temperature, torch.ones(2))
        assert (tmp_path / "sparse.png").stat().st_size > 10_000
    else:
        sizes = {"64", "128"} if name != "volume" else {str(2 * cfg.model.input_size[-1])}   # volumes: HR crops 2x
        assert set(ev["super_resolution"]) == sizes and ev["test"]["n"] > 0
        assert (tmp_path / "sr.png").stat().st_size > 10_000


def test_print_config_shows_the_resolved_configuration():
    r = run("--config", "scent", "--profile", "cpu", "--print-config")
    shown = json.loads(r.stdout)
    assert shown["model"]["decoder"]["kind"] == "scent" and shown["steps"] == get_config("scent", "cpu").steps
    assert shown["task"] == "sr" and shown["model"]["input_skip"] is True and shown["model"]["decoder"]["locality"] is True


# one config per task and training loop: recon (standard_fourier), sr (gaussian_fourier; scent and the volume
# config train the same task and loop) and the flow
@pytest.mark.parametrize("name", ["standard_fourier", "gaussian_fourier", "flow_sparse"])
def test_resume_after_hard_kill_matches_uninterrupted_run(name, tmp_path):
    def go(folder, kill_at, log):
        return subprocess.run([sys.executable, "-c", KILLABLE, name, str(tmp_path / folder), str(kill_at),
                               str(tmp_path / log)], capture_output=True, text=True, env=ENV, timeout=600)

    def steps(log):
        return [int(x) for x in (tmp_path / log).read_text().split()]

    assert go("a", 0, "a.log").returncode == 0
    assert go("b", 13, "b1.log").returncode == -9                # killed after step 13
    assert steps("b1.log") == list(range(1, 14))
    _, mid = load_checkpoint(tmp_path / "b" / "last.pt")
    assert mid["train_state"]["step"] == 10                    # the last save before the kill
    r = go("b", 0, "b2.log")
    assert r.returncode == 0, r.stderr[-2000:]
    assert steps("b2.log") == list(range(11, 21))              # resumed at step 10: steps 11..20, nothing else
    a, ca = load_checkpoint(tmp_path / "a" / "last.pt")
    b, cb = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ca["train_state"]["step"] == cb["train_state"]["step"] == 20
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    for key in ("optimizer", "scheduler"):                     # the optimizer's moments and the schedule, too
        assert_same(ca[key], cb[key], key)
    assert ca["train_state"]["history"] == cb["train_state"]["history"]


def assert_same(a, b, where):
    """Nested dicts / lists of tensors and numbers are equal, bit for bit."""
    if torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def single_scale(name="standard_fourier"):
    """A smoke config trained on the 32x32 tiles only (no HR crops needed)."""
    cfg = get_config(name, "smoke")
    cfg.sr_scales, cfg.options.lr_queries = (), None
    return cfg


def test_resume_refuses_a_different_run_naming_the_fields(tmp_path):
    cfg = single_scale()
    cfg.steps = 10
    data = load_dataset("photos")
    fit(cfg, out=tmp_path, datasets=data, progress=False)
    with pytest.raises(ValueError, match="already holds a run"):
        fit(cfg, out=tmp_path, datasets=data, progress=False)
    other = single_scale()
    other.steps, other.lr = 12, 5e-4
    with pytest.raises(ValueError, match=r"(?s)different run.*train\.lr: 0\.001 in the checkpoint, 0\.0005 asked"
                                         r".*train\.steps: 10 in the checkpoint, 12 asked"):
        fit(other, out=tmp_path, datasets=data, resume=True, progress=False)
    fewer = {**data, "train": ImageTensorDataset(data["train"].images[:200])}
    with pytest.raises(ValueError, match=r"(?s)data\.n: \d+ in the checkpoint, 200 asked.*data\.sha256"):
        fit(cfg, out=tmp_path, datasets=fewer, resume=True, progress=False)
    model = single_scale("scent")
    model.steps, model.task = 10, "recon"     # notebook 3 trains the sr task, which needs HR crops
    with pytest.raises(ValueError, match=r"train\.model\.decoder\.kind: local in the checkpoint, scent asked"):
        fit(model, out=tmp_path, datasets=data, resume=True, progress=False)
    # the same run resumes; a fresh run overwrites
    assert fit(cfg, out=tmp_path, datasets=data, resume=True, progress=False)["steps"] == 10
    assert fit(other, out=tmp_path, datasets=data, fresh=True, progress=False)["steps"] == 12
    # run folders are named after the settings: any edit gives another folder
    assert run_name(cfg) != run_name(other) and run_name(cfg) == run_name(copy.deepcopy(cfg))


def test_weight_average_is_validated_saved_and_resumed_exactly(tmp_path):
    cfg = single_scale()
    cfg.steps, cfg.ckpt_every, cfg.val_every, cfg.ema = 12, 1, 4, 0.8
    data = load_dataset("photos")
    saved = {}

    def keep(step, record):
        if step in (11, 12):
            saved[step] = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    m = fit(cfg, out=tmp_path / "a", datasets=data, progress=False, on_step=keep)
    # every step: average = 0.8 * average + 0.2 * trained weights
    for k, v in saved[12]["model"].items():
        if v.is_floating_point():
            want = 0.8 * saved[11]["model"][k] + 0.2 * saved[12]["trained_weights"][k]
            assert torch.allclose(v, want, atol=1e-6), k
    model, ckpt = load_checkpoint(tmp_path / "a" / "best.pt")
    trained = ckpt["trained_weights"]
    # checkpoints hold the average (what was validated) and the trained weights (to resume)
    assert max(float((v - trained[k]).abs().max()) for k, v in model.state_dict().items()) > 1e-4
    assert make_task(cfg).validate(model, data) == pytest.approx(m["best_val_psnr"], abs=1e-4)
    avg, ck = load_checkpoint(tmp_path / "a" / "last.pt")

    class Stop(Exception):
        pass

    def stop_at(step, record):
        if step == 6:
            raise Stop
    with pytest.raises(Stop):
        fit(cfg, out=tmp_path / "b", datasets=data, progress=False, on_step=stop_at)
    fit(cfg, out=tmp_path / "b", datasets=data, progress=False, resume=True)
    resumed, cr = load_checkpoint(tmp_path / "b" / "last.pt")
    for (k, a), b in zip(avg.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    for k, v in ck["trained_weights"].items():
        assert torch.equal(v, cr["trained_weights"][k]), k
    with pytest.raises(ValueError, match="ema is the decay"):
        cfg.ema = 1.0
        cfg.__post_init__()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import ginr_common.train as T

    cfg = single_scale()
    cfg.steps, cfg.ckpt_every, cfg.val_every = 8, 2, 100
    data = load_dataset("photos")
    poisoned = {"train": [(x * float("nan"), y) if i % 2 else (x, y) for i, (x, y) in
                          ((i, data["train"][i]) for i in range(64))], "val": data["val"]}
    # every odd image is NaN: the first batch that holds one is refused with the input named
    with pytest.raises(ValueError, match="images must be finite"):
        fit(cfg, datasets=poisoned, out=tmp_path / "poisoned", progress=False)
    clean = {"train": [data["train"][i] for i in range(64)], "val": data["val"]}
    # a loss that becomes non-finite at step 5 stops training; the message names the run's own
    # last.pt, saved at step 4, which holds finite weights
    make_task = T.make_task

    def nan_from_step_5(c):
        task = make_task(c)
        loss, calls = task.loss, []

        def wrapped(net, batch):
            calls.append(1)
            value, p = loss(net, batch)
            return (value * float("nan") if len(calls) >= 5 else value), p
        task.loss = wrapped
        return task

    monkeypatch.setattr(T, "make_task", nan_from_step_5)
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step 5; stopped\. The last good checkpoint "
                                                 r"is \S+ \(step 4\)") as err:
        fit(cfg, datasets=clean, out=tmp_path / "late", progress=False)
    named = err.value.args[0].split("checkpoint is ")[1].split(" (step")[0]
    assert named == str(tmp_path / "late" / "last.pt")
    model, ckpt = load_checkpoint(named)
    assert ckpt["train_state"]["step"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    monkeypatch.setattr(T, "make_task", make_task)
    # blown up before any save (the learning rate blows the weights up): the message says none was saved
    cfg.lr = 1e30
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step \d+; stopped\. No checkpoint of this "
                                                 r"run was saved in \S+blowup before it"):
        fit(cfg, datasets=clean, out=tmp_path / "blowup", progress=False)
    assert not (tmp_path / "blowup" / "last.pt").exists()


@pytest.mark.parametrize("name", ["gaussian_fourier", "flow_sparse"])
def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(name, tmp_path):
    script = tmp_path / "recording.py"
    script.write_text(RECORDING)
    common = ["--config", name, "--profile", "smoke", "--steps", "4"]
    for launcher, folder in (((sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", "29533"), "two"), ((sys.executable,), "one")):
        r = subprocess.run([*launcher, str(script), *common, "--out", str(tmp_path / folder)], capture_output=True,
                           text=True, env=ENV, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    # each process trains its own half of every global batch: rank r the rows r::2
    whole = torch.load(tmp_path / "one" / "batches-rank0.pt")
    ranks = [torch.load(tmp_path / "two" / f"batches-rank{r}.pt") for r in range(2)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 4
    for step, batch in enumerate(whole):
        assert batch.keys() == ranks[0][step].keys() == ranks[1][step].keys()
        for k, v in batch.items():
            assert len(v) == get_config(name, "smoke").batch_size, k
            for r in range(2):
                assert torch.equal(ranks[r][step][k], v[r::2]), (step, k, r)
    two, c2 = load_checkpoint(tmp_path / "two" / "last.pt")
    one, c1 = load_checkpoint(tmp_path / "one" / "last.pt")
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["processes"] == 2
    assert c1["train_state"]["step"] == c2["train_state"]["step"] == 4
    for (k, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (k, (a - b).abs().max())
    cfg = get_config(name, "smoke")
    trained = c1.get("trained_weights", one.state_dict())      # with a moving average, also the trained weights
    for k, v in trained.items():
        assert torch.allclose(v, c2.get("trained_weights", two.state_dict())[k], atol=1e-5, rtol=0), k
    torch.manual_seed(cfg.seed)
    init = model_for(cfg.model).state_dict()                   # and training moved the weights
    assert max(float((v - init[k]).abs().max()) for k, v in trained.items()) > 1e-3


def _one_step_of_every_stage(cfg, label):
    from ginr_common.train import param_groups

    cfg.batch_size = 2
    task = make_task(cfg)
    d, S = len(cfg.model.input_size), cfg.model.input_size[0]
    side = (4 if d == 2 else 2) * S if cfg.sr_scales else S      # HR crops: 4x for images, 2x for volumes
    train = ImageTensorDataset((torch.rand(4, cfg.model.in_channels, *(side,) * d) * 255).to(torch.uint8))
    torch.manual_seed(cfg.seed)
    model = model_for(cfg.model)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    for step in sorted({first for _, first in task.stages()}):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss, _ = task.loss(model, task.batch(train, step))
        assert torch.isfinite(loss), (label, step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        assert max(float((v - before[k]).abs().max()) for k, v in model.state_dict().items()) > 0


@pytest.mark.parametrize("name, profile", PAIRS)
def test_every_profile_builds_and_takes_an_optimizer_step(name, profile):
    """Every (config, profile) pair, the GPU-sized ``full`` included, builds its model, makes its
    task's batches (the estimate stage's and the joint one's for the flow) and takes one optimizer
    step on CPU that moves the weights, with a finite loss."""
    _one_step_of_every_stage(get_config(name, profile), (name, profile))


ABLATIONS = [n for n in experiments() if n.split("/")[0] not in PROFILES and n not in CONFIGS]


@pytest.mark.parametrize("name", ABLATIONS)
def test_every_experiment_builds_and_takes_an_optimizer_step(name):
    """Every named experiment that is not a (config, profile) pair (the ablations) resolves through
    what it extends, builds, and takes one optimizer step of each training stage."""
    _one_step_of_every_stage(load_experiment(name), name)


def test_experiment_files_state_differences_in_order(tmp_path):
    """An experiment applies what it extends, in order, then its own settings; a section set whole
    (a decoder of another kind) comes before its fields; the train CLI reads one by path or by name."""
    (tmp_path / "a.json").write_text(json.dumps({"about": "a", "extends": "standard_fourier", "lr": 1e-3,
                                                 "model": {"num_lp": 16, "decoder": {"hidden": 32}}}))
    (tmp_path / "b.json").write_text(json.dumps({"steps": 7, "lr": 5e-4}))
    (tmp_path / "c.json").write_text(json.dumps({"extends": [str(tmp_path / "a.json"), str(tmp_path / "b.json")],
                                                 "model": {"decoder": {"kind": "lainr", "hidden": 64},
                                                           "pixel_filter": 0}, "options": {"lr_queries": 128}}))
    assert experiment_settings(tmp_path / "c.json") == {
        "lr": 5e-4, "model.num_lp": 16, "steps": 7, "model.decoder": {"kind": "lainr", "hidden": 64},
        "model.pixel_filter": 0, "options.lr_queries": 128}
    cfg = load_experiment(tmp_path / "c.json")
    want = with_settings(get_config("standard_fourier", "cpu"), {
        "lr": 5e-4, "model.num_lp": 16, "steps": 7, "model.decoder": {"kind": "lainr", "hidden": 64},
        "model.pixel_filter": 0, "options.lr_queries": 128})
    assert cfg == want and cfg.model.decoder.kind == "lainr" and cfg.model.decoder.hidden == 64
    (tmp_path / "d.json").write_text(json.dumps({"extends": str(tmp_path / "c.json"),
                                                 "model": {"decoder": {"n_blocks": 1}}}))
    assert load_experiment(tmp_path / "d.json").model.decoder == dataclasses.replace(want.model.decoder, n_blocks=1)
    assert load_experiment("sf/lps") == with_settings(get_config("standard_fourier", "cpu"), {
        "model.patch_size": 2, "options.lr_queries": 256, "options.sr_queries": 512, "steps": 1500,
        "model.pixel_filter": 0, "model.decoder.sources": ["lps"]})
    assert load_config_file("long/scent") == get_config("scent", "long")
    shown = json.loads(run("--config-file", str(tmp_path / "c.json"), "--print-config").stdout)
    assert shown == json.loads(config_json(cfg))
    assert json.loads(run("--config-file", "sf/lps", "--print-config").stdout) == json.loads(
        config_json(load_experiment("sf/lps")))
    assert "sf/lps " in run("--list-experiments").stdout
    (tmp_path / "loop.json").write_text(json.dumps({"extends": str(tmp_path / "loop.json")}))
    for bad, message in ((tmp_path / "loop.json", "loop.json: extends itself"), ("sf/nope", "no experiment 'sf/nope'")):
        with pytest.raises(ValueError, match=message):
            load_experiment(bad)
    (tmp_path / "e.json").write_text(json.dumps({"extends": "standard_fourier", "model": {"dims": 3}}))
    with pytest.raises(ValueError, match=r"e.json: .*unknown setting 'model.dims'"):
        load_experiment(tmp_path / "e.json")
    r = run("--config-file", "sf/nope", "--print-config", check=False)
    assert r.returncode == 2 and "no experiment 'sf/nope'" in r.stderr


def test_metrics():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(psnr(x, x), torch.full((3,), 120.0))  # mse floored at 1e-12
    # predictions are clamped to [0, 1] before the error: 2.0 -> 1.0, error 0.1 -> 20 dB
    assert psnr(torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 4, 4), 0.9)).item() == pytest.approx(20.0, abs=1e-3)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert (ssim(torch.full_like(x, 0.5), x) < 0.2).all()


def test_chroma_is_colour_without_brightness():
    """chroma = (B - Y, R - Y) with BT.601 luma: zero on grey images whatever their brightness (so a
    grain of brightness leaves its total variation at zero), the difference to the luma otherwise."""
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 8, 8, generator=g).expand(-1, 3, -1, -1)
    assert chroma(grey).abs().max() < 1e-6 and float(total_variation(chroma(grey)).max()) < 1e-6
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(chroma(x), torch.stack([x[:, 2] - y, x[:, 0] - y], 1))
    smooth = torch.linspace(0.2, 0.8, 8, dtype=torch.float64).expand(2, 3, 8, 8) * torch.tensor([1.0, 0.8, 0.6],
                                                                                                  dtype=torch.float64)[:, None, None]
    grain = 0.05 * torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    assert (total_variation(chroma(smooth + grain)) > 2 * total_variation(chroma(smooth))).all()   # colour grain
    assert torch.allclose(total_variation(chroma(smooth + grain[:, :1])), total_variation(chroma(smooth)))  # brightness
    with pytest.raises(ValueError, match=r"RGB images \(B, 3, H, W\), got shape \(2, 1, 8, 8\)"):
        chroma(grey[:, :1])


def test_multiscale_batches_are_reproducible_and_supervise_hr(seed):
    cfg = get_config("gaussian_fourier", "smoke")
    assert not cfg.augment and cfg.sr_scales == (1, 4) and cfg.options.lr_queries
    cfg.options.jitter = 0.2
    task = make_task(cfg)
    ds = ImageTensorDataset((torch.rand(10, 3, 128, 128) * 255).to(torch.uint8))
    n_lr = cfg.options.lr_queries
    sizes = set()
    for step in (3, 4, 11, 12, 13):
        a, b = task.batch(ds, step), task.batch(ds, step)
        assert all(torch.equal(a[k], b[k]) for k in a)  # a pure function of the step
        images, queries, cells, target = a["images"], a["queries"], a["cells"], a["target"]
        hr = torch.stack([ds[i][0] for i in batch_indices(step, len(ds), cfg.batch_size, cfg.seed)])
        assert torch.equal(images, resize(hr, (32, 32)))
        assert queries.shape == cells.shape == (cfg.batch_size, n_lr + cfg.options.sr_queries, 2) == target.shape[:2] + (2,)
        # LR part: a random subset of the input's own pixels, shifted by one offset for the batch
        grid = make_grid((32, 32))
        off = queries[0, 0] - grid
        j = off.abs().amax(-1).argmin()
        shift = queries[0, 0] - grid[j]
        assert 0 < shift.abs().max() < 1 / 32
        lr_idx = ((queries[0, :n_lr] - shift) * 32 - 0.5).round().long() @ torch.tensor([32, 1])
        assert torch.allclose(queries[0, :n_lr], grid[lr_idx] + shift, atol=1e-6)
        assert torch.equal(target[:, :n_lr], images.flatten(2).transpose(1, 2)[:, lr_idx])
        assert torch.allclose(cells[:, :n_lr], torch.full_like(cells[:, :n_lr], 1 / 32))
        # HR part: exact pixel centres of an S x S grid, 32 <= S <= 128, with that resized image's values
        hq = queries[0, n_lr:]
        S = 1 / cells[0, n_lr, 0].item()
        assert abs(S - round(S)) < 1e-3 and 32 <= round(S) <= 128
        S = round(S)
        sizes.add(S)
        idx = (hq * S - 0.5).round().long()
        assert torch.allclose(hq, (idx + 0.5) / S, atol=1e-6)
        hr_s = hr if S == 128 else resize(hr, (S, S))
        assert torch.allclose(target[:, n_lr:], hr_s.flatten(2).transpose(1, 2)[:, idx @ torch.tensor([S, 1])])
    assert len(sizes) > 2                                 # the scale is drawn anew every step


def test_a_long_cpu_run_warns_with_an_estimate():
    from ginr_common.train import warn_if_long
    cfg = get_config("standard_fourier", "full")
    with pytest.warns(UserWarning, match=r"about \d+\.\d hours on this CPU; this configuration is meant for a GPU"):
        hours = warn_if_long(cfg, 0.5)
    assert hours == pytest.approx(0.5 * cfg.steps / 3600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_long(get_config("standard_fourier", "cpu"), 0.3)      # 1500 x 0.3 s: no warning


def test_settings_set_any_field_by_its_dotted_name():
    cfg = get_config("standard_fourier", "smoke")
    new = with_settings(cfg, {"lr": "1e-3", "model.input_size": "[64, 64]", "model.decoder.hidden": 96,
                              "sr_scales": [1, 2], "augment": "true", "model.decoder.max_freq": 8})
    assert new.lr == 1e-3 and new.model.input_size == (64, 64) and new.model.decoder.hidden == 96
    assert new.sr_scales == (1, 2) and new.augment is True and new.model.decoder.max_freq == 8.0
    assert cfg == get_config("standard_fourier", "smoke")            # the original is untouched
    assert with_settings(cfg, {}) == cfg
    for bad, message in [({"learning_rate": 1}, r"unknown setting 'learning_rate': the training config has no field "
                                                  r"'learning_rate' \(fields: .*'lr'"),
                         ({"model.decoder.width": 1}, r"unknown setting 'model.decoder.width': model.decoder has no "
                                                      r"field 'width'"),
                         ({"lr.x": 1}, r"unknown setting 'lr.x': the training config has no section 'lr'"),
                         ({"lr": "fast"}, r"lr must be a JSON value like 0.001, got 'fast'"),
                         ({"steps": 1.5}, r"steps must be int like 20, got 1.5"),
                         ({"augment": 1}, r"augment must be bool"),
                         ({"model.decoder.features": "wavelet"}, r"features must be 'fourier' or 'gaussian'"),
                         ({"task": "sparse_flow"}, r"(?s)the flow model config: unknown field")]:
        with pytest.raises(ValueError, match=message):
            with_settings(cfg, bad)


@pytest.mark.parametrize("name, profile", PAIRS)
def test_printed_config_reads_back_as_the_same_config(name, profile, tmp_path):
    cfg = get_config(name, profile)
    (tmp_path / "c.json").write_text(config_json(cfg))
    again = load_config_file(tmp_path / "c.json")
    assert again == cfg and run_name(again) == run_name(cfg)


def test_cli_sets_fields_and_reads_config_files(tmp_path):
    shown = json.loads(run("--config", "scent", "--profile", "smoke", "--set", "lr=3e-4", "--set",
                           "model.decoder.heads=2", "--print-config").stdout)
    assert shown["lr"] == 3e-4 and shown["model"]["decoder"]["heads"] == 2 and shown["steps"] == 20
    shown["steps"] = 7
    (tmp_path / "mine.json").write_text(json.dumps(shown))
    again = json.loads(run("--config-file", str(tmp_path / "mine.json"), "--set", "seed=3", "--print-config").stdout)
    assert again == {**shown, "seed": 3}
    r = run("--config", "scent", "--profile", "smoke", "--set", "lr", check=False)
    assert r.returncode != 0 and "--set takes KEY=VALUE" in r.stderr
    r = run("--config", "scent", "--profile", "smoke", "--set", "model.dims=3", check=False)
    assert r.returncode != 0 and "unknown setting 'model.dims'" in r.stderr
    (tmp_path / "bad.json").write_text("{")
    r = run("--config-file", str(tmp_path / "bad.json"), "--print-config", check=False)
    assert r.returncode != 0 and "bad.json: not a training config" in r.stderr


def test_a_model_size_the_data_does_not_have_is_refused_naming_the_field():
    data = load_dataset("photos")
    for cfg, split in ((get_config("standard_fourier", "smoke"), "val"), (single_scale(), "train")):
        cfg = with_settings(cfg, {"model.input_size": [64, 64]})
        with pytest.raises(ValueError, match=rf"model.input_size=\(64, 64\) does not fit the data: the 'photos' "
                                             rf"data's {split} images are 32x32; set model.input_size=\[32, 32\]"):
            fit(cfg, datasets=data, progress=False)
    with pytest.raises(ValueError, match=r"model.in_channels=1 does not fit the data: .* have 3 channels"):
        fit(with_settings(single_scale(), {"model.in_channels": 1}), datasets=data, progress=False)


def test_tensorboard_logs_what_training_records(tmp_path, monkeypatch):
    """With tensorboard installed every run folder gets event files beside metrics.json: the loss,
    PSNR and learning rate of every step and the validation PSNR (the numbers metrics.json holds)
    and a picture of the model on validation images at every validation; without it, none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = single_scale()
    cfg.steps = 10
    data = load_dataset("photos")
    m = fit(cfg, out=tmp_path / "run", datasets=data, progress=False)
    ea = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    for tag, key in (("train/loss", "loss"), ("train/psnr", "train_psnr"), ("train/lr", "lr"), ("val/psnr", "val_psnr"),
                     ("lp/diversity", "lp_diversity")):
        want = [(h["step"], h[key]) for h in m["history"] if key in h]
        got = [(e.step, e.value) for e in ea.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want] and len(want) >= 1, tag
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), tag
    # the learned LPs' diversity, at every validation: the last one is that of the saved model's LPs
    from ginr_common.tokens import lp_diversity

    final, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    assert m["history"][-1]["lp_diversity"] == pytest.approx(lp_diversity(final.encoder.lp.lps), abs=1e-7)
    from torchvision.utils import make_grid

    x = torch.rand(5, 3, 4, 6)
    assert torch.equal(viz.image_grid(x, 3), make_grid(x, nrow=3, padding=1))   # the picture's layout
    (image,) = ea.Images("val/preview")
    assert image.step == 10 and image.width == 4 * 33 + 1 and image.height == 2 * 33 + 1
    flow = make_task(get_config("flow_sparse", "smoke"))
    torch.manual_seed(0)
    picture = flow.preview(model_for(get_config("flow_sparse", "smoke").model), data)
    assert picture.shape == (3, 3 * 33 + 1, 4 * 33 + 1) and 0 <= picture.min() and picture.max() <= 1
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)        # tensorboard absent
    fit(cfg, out=tmp_path / "plain", datasets=data, progress=False)
    assert (tmp_path / "plain" / "metrics.json").exists() and not (tmp_path / "plain" / "tensorboard").exists()
