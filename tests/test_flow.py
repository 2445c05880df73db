"""Flow matching: the objective, both samplers against an analytic flow, masks, resolution
consistency, known-pixel holding, checkpoints and a smoke training run."""
import pytest
import torch

from ginr_common.checkpoints import load_checkpoint, save_checkpoint
from ginr_common.configs import get_config
from ginr_common.data import sparse_masks
from ginr_common.flow import FlowConfig, SparseFieldFlow, flow_matching_loss
from ginr_common.fourier import make_grid
from ginr_common.train import fit

SMALL = dict(dim=16, depth=1, num_lp=4, d_state=4, hidden=32, n_blocks=1, heads=2, coord_freqs=4)


def _obs(B=2, size=8, frac=0.25):
    grid = make_grid((size, size))
    obs, _ = sparse_masks(range(B), size * size, frac)
    return grid[obs], torch.rand(B, obs.shape[1], 3)


def test_objective_matches_its_definition_in_float64(seed):
    model = SparseFieldFlow(FlowConfig(input_size=(8, 8), **SMALL)).double()
    oc, ov = (x.double() for x in _obs())
    qc, targets = torch.rand(2, 10, 2, dtype=torch.float64), torch.rand(2, 10, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    t0, x0 = torch.rand(2, generator=g).double(), model.noise(qc, g)
    loss, est = flow_matching_loss(model, oc, ov, qc, targets, x0, t0)
    t = t0[:, None, None]
    x1 = 2 * targets - 1
    xt = (1 - t) * x0 + t * x1
    v = model(oc, ov, qc, xt, t0)
    assert torch.allclose(loss, ((v - (x1 - x0)) ** 2).mean())
    assert torch.allclose(est, (xt + (1 - t) * v + 1) / 2)


def test_objective_trains_every_part_of_the_model(seed):
    """After one optimizer step every parameter group, the encoder included, gets a non-zero
    gradient (the zero-initialised time gates block it only at the very first step), and the
    loss falls on a fixed batch."""
    model = SparseFieldFlow(FlowConfig(input_size=(8, 8), **SMALL))
    oc, ov = _obs()
    qc, targets = make_grid((8, 8)).expand(2, -1, -1), torch.rand(2, 64, 3)
    g = torch.Generator().manual_seed(0)
    t, x0 = torch.rand(2, generator=g), model.noise(qc, g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss, _ = flow_matching_loss(model, oc, ov, qc, targets, x0, t)
        opt.zero_grad()
        loss.backward()
        if step == 1:
            groups = {n.split(".")[0] for n, _ in model.named_parameters()}
            assert {"stack", "lp", "obs_embed", "blocks", "q_embed", "t_embed", "head", "skip"} <= groups
            for group in groups:
                norm = sum(p.grad.norm() ** 2 for n, p in model.named_parameters()
                           if n.split(".")[0] == group and p.grad is not None)
                assert norm > 0, f"no gradient reaches {group}"
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], (losses[0], losses[-5:])


class GaussianFlow(SparseFieldFlow):
    """x1 ~ N(mu, s^2) per value, x0 ~ N(0, 1): the marginal velocity of the straight-line path is
    E[x1 - x0 | x_t = x] = mu + (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2) (x - t mu), and its ODE
    carries x0 to mu + s x0 exactly."""

    mu, s = 0.3, 0.5

    def encode(self, obs_coords, obs_values):
        return None

    def velocity(self, memory, coords, x, t):
        mu, s = self.mu, self.s
        return mu + (t * s**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s**2) * (x - t * mu)


@pytest.mark.parametrize("solver,tol", [("euler", 2e-2), ("heun", 2e-4)])
def test_samplers_follow_the_analytic_gaussian_flow(solver, tol, seed):
    model = GaussianFlow(FlowConfig(input_size=(8, 8), **SMALL)).double()
    oc, ov = (x.double() for x in _obs())
    qc = make_grid((8, 8)).double().expand(2, -1, -1)
    x0 = model.noise(qc, torch.Generator().manual_seed(1))
    exact = ((model.mu + model.s * x0) + 1) / 2   # sample() returns values in [0, 1]
    errs = []
    for steps in (25, 50):
        out = model.sample(oc, ov, qc, steps=steps, solver=solver, generator=torch.Generator().manual_seed(1))
        errs.append((out - exact.clamp(0, 1)).abs().max().item())
    assert errs[1] < tol
    order = 1 if solver == "euler" else 2   # doubling the steps divides the error by 2^order
    assert 2 ** order * 0.7 < errs[0] / errs[1] < 2 ** order * 1.4, errs


def test_masks_are_deterministic_disjoint_and_per_image():
    obs, sup = sparse_masks(range(5), 1024, 0.2, seed=42)
    assert obs.shape == sup.shape == (5, 205)
    again, _ = sparse_masks([3, 1], 1024, 0.2, seed=42)       # image 3's mask whatever the batch
    assert torch.equal(again[0], obs[3]) and torch.equal(again[1], obs[1])
    for o, s in zip(obs, sup):
        assert len(set(o.tolist()) | set(s.tolist())) == 410  # disjoint
    assert not torch.equal(obs[0], obs[1])                     # instance-specific
    o, rest = sparse_masks([0], 1024, 0.2, seed=42, supervise="rest")
    assert torch.equal(o, obs[:1]) and sorted(o[0].tolist() + rest[0].tolist()) == list(range(1024))
    with pytest.raises(ValueError, match="supervise must be"):
        sparse_masks([0], 16, supervise="all")
    with pytest.raises(ValueError, match="frac"):
        sparse_masks([0], 16, frac=0.6)


def test_noise_and_encoder_are_resolution_consistent(seed):
    model = SparseFieldFlow(FlowConfig(input_size=(8, 8), **SMALL)).eval()
    c8, c16 = make_grid((8, 8))[None], make_grid((16, 16))[None]
    n8 = model.noise(c8, torch.Generator().manual_seed(0)).reshape(8, 8, 3)
    n16 = model.noise(c16, torch.Generator().manual_seed(0)).reshape(16, 16, 3)
    assert torch.equal(n16[::2, ::2], n8) and torch.equal(n16[1::2, 1::2], n8)   # one field, nearest cell
    oc, ov = _obs(B=1)
    with torch.no_grad():
        mem = model.encode(oc, ov)
        # the encoder sees only the observations: the same memory whatever is decoded; queries
        # do not interact, so a query's velocity does not depend on the others
        x16 = torch.randn(1, 256, 3)
        v_all = model.velocity(mem, c16, x16, 0.3)
        v_some = model.velocity(mem, c16[:, 10:20], x16[:, 10:20], 0.3)
    assert torch.allclose(v_all[:, 10:20], v_some, atol=1e-6)
    # the observation order given does not matter (tokens are put in raster order)
    perm = torch.randperm(oc.shape[1])
    with torch.no_grad():
        assert torch.allclose(model.encode(oc[:, perm], ov[:, perm]), mem, atol=1e-6)


def test_hold_known_pixels_and_posterior(seed):
    model = SparseFieldFlow(FlowConfig(input_size=(8, 8), **SMALL)).eval()
    oc, ov = _obs()
    qc = make_grid((8, 8)).expand(2, -1, -1)
    out = model.sample(oc, ov, qc, steps=4, hold_known=True, generator=torch.Generator().manual_seed(0))
    obs, _ = sparse_masks(range(2), 64, 0.25)
    assert torch.allclose(out.gather(1, obs[..., None].expand(-1, -1, 3)), ov, atol=1e-6)
    mean, std = model.posterior(oc, ov, qc, k=3, steps=2, generator=torch.Generator().manual_seed(0))
    assert mean.shape == std.shape == (2, 64, 3) and (std > 0).any()
    with pytest.raises(ValueError, match="solver must be"):
        model.sample(oc, ov, qc, solver="rk4")
    with pytest.raises(ValueError, match="query_coords must be"):
        model.sample(oc, ov, qc[0])


def test_flow_checkpoint_and_smoke_training(tmp_path):
    cfg = get_config("flow_sparse", "smoke")
    m = fit(cfg, out=tmp_path, progress=False)
    assert m["steps"] == cfg.steps and m["best_val_psnr"] > 5
    first, last = m["history"][0]["loss"], sum(h["loss"] for h in m["history"][-5:]) / 5
    assert last < first
    model, ckpt = load_checkpoint(tmp_path / "best.pt")
    assert isinstance(model, SparseFieldFlow) and ckpt["config"]["family"] == "flow"
    save_checkpoint(tmp_path / "again.pt", model)
    again, _ = load_checkpoint(tmp_path / "again.pt")
    oc, ov = _obs(size=32, frac=0.2)
    q = make_grid((32, 32)).expand(2, -1, -1)
    a = model.sample(oc, ov, q, steps=3, generator=torch.Generator().manual_seed(0))
    b = again.sample(oc, ov, q, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
