"""Flow matching: the bridge objective, both samplers against an analytic flow, the space-filling
curves, the noise field, the joint velocity, masks, known-pixel holding, checkpoints and a smoke
training run."""
import copy
import dataclasses
import json
import math

import pytest
import torch

from ginr_common.checkpoints import load_checkpoint, save_checkpoint
from ginr_common.configs import get_config
from ginr_common.data import sparse_masks
from ginr_common.curves import curve_index, curve_orders
from ginr_common.encoder import EncodedPoints
from ginr_common.flow import Context, FlowConfig, SparseFieldFlow, coordinate_noise, default_cell, flow_matching_loss
from ginr_common.flow import bridge
from ginr_common.flow.estimate import rasterise, read_grid
from ginr_common.flow.sampler import solve
from ginr_common.baselines import interpolate_sparse
from ginr_common.fourier import make_grid
from ginr_common.metrics import masked_psnr
from ginr_common.tasks import FlowOptions
from ginr_common.tasks.sparse_flow import observe, sample_psnr
from ginr_common.train import fit

SMALL = dict(input_size=(8, 8), dim=16, depth=1, num_lp=4, d_state=4, hidden=16, mixer_depth=2, coord_freqs=4,
             neighbours=4, noise_features=64, guide="normconv", grid_blocks=0, local_spread=False, noise_scale=0.15,
             mu_weight=1.0)


def small(**changes):
    """A small FlowConfig: the normalised-convolution guide, no grid refiner, unless changed."""
    return FlowConfig(**{**SMALL, **changes})


def _loss(model, b):
    """(the training loss of batch b, the FlowOutput): the joint stage when b has times."""
    out = model(b["obs_coords"], b["obs_values"], b["query_coords"], b["targets"], b["cell"], b.get("z"), b.get("t"),
                stage="joint" if "t" in b else "estimate")
    return flow_matching_loss(out, model.config.residual_std, model.config.mu_weight), out


def _obs(B=2, size=8, frac=0.25):
    grid = make_grid((size, size))
    obs = sparse_masks(range(B), size * size, frac)
    return grid[obs], torch.rand(B, obs.shape[1], 3)


def _batch(model, B=2, Q=10, dtype=torch.float32, seed=3):
    oc, ov = (x.to(dtype) for x in _obs(B))
    g = torch.Generator().manual_seed(seed)
    qc = torch.rand(B, Q, 2, generator=g, dtype=dtype)
    return {"obs_coords": oc, "obs_values": ov, "query_coords": qc,
            "cell": torch.full((B, 2), 1 / 8, dtype=dtype), "t": torch.rand(B, generator=g, dtype=dtype),
            "targets": torch.rand(B, Q, 3, generator=g, dtype=dtype), "z": model.noise(qc, g)}


@pytest.mark.parametrize("local_spread,basis", [(False, "rgb"), (True, "rgb"), (True, "opponent")])
def test_objective_matches_its_definition_in_float64(local_spread, basis, seed):
    """loss = |F - (x1 - mu - c_skip (x_t - mu)) / c_out|^2 + mu_weight |mu - x1|^2 / r^2 with
    x_t = (1 - t)(mu + noise_scale z) + t x1, recomputed here from the model's parts; and the
    velocity is (x1_hat - x_t) / (1 - t) with x1_hat = mu + c_skip (x_t - mu) + c_out F. With a
    local spread a: the noise is noise_scale a z, the scalings are those of r a and noise_scale a,
    and the loss adds the Gaussian negative log-likelihood of x1 - mu under the spread r a. With
    the opponent colour basis, mu, x1, x_t, F and a are components in it (x @ P), and a draw is
    rotated back to RGB (@ P^T)."""
    extra = dict(grid_blocks=2, grid_width=8, local_spread=True) if local_spread else {}
    model = SparseFieldFlow(small(mu_weight=0.7, colour_basis=basis, **extra)).double()
    s3, s2, s6 = math.sqrt(3), math.sqrt(2), math.sqrt(6)
    P = torch.eye(3, dtype=torch.float64) if basis == "rgb" else torch.tensor(
        [[1 / s3, 1 / s2, 1 / s6], [1 / s3, -1 / s2, 1 / s6], [1 / s3, 0, -2 / s6]], dtype=torch.float64)
    assert torch.allclose(P.T @ P, torch.eye(3, dtype=torch.float64))
    torch.nn.init.normal_(model.mu_head.weight, std=0.1)
    if local_spread:   # a spread that varies from query to query
        torch.nn.init.normal_(model.refiner.out.weight, std=0.3)
    b = _batch(model, dtype=torch.float64)
    loss, output = _loss(model, b)
    memory = model.encode(b["obs_coords"], b["obs_values"])
    cond, mu_rgb = model.condition(memory, b["query_coords"], b["cell"])
    a = model.spread(memory, b["query_coords"])
    assert (a is not None) == local_spread
    if local_spread:
        assert a.std() > 0.05 and torch.allclose(a, read_grid(memory.refined.log_spread, b["query_coords"]).exp())
    assert torch.allclose(output.mu, mu_rgb)
    mu, x1 = mu_rgb @ P, (2 * b["targets"] - 1) @ P
    t = b["t"][:, None, None]
    xt = (1 - t) * (mu + model.config.noise_scale * (1 if a is None else a) * b["z"]) + t * x1
    ctx = Context(b["query_coords"], cond, mu, a, curve_orders(b["query_coords"], model.config.mixer_depth))
    out = model.network(ctx, xt, b["t"])
    r = model.config.residual_std
    sr = r * (1 if a is None else a)
    s_ = model.config.noise_scale * (1 if a is None else a)
    var = (t * sr) ** 2 + ((1 - t) * s_) ** 2
    c_skip, c_out = t * sr ** 2 / var, sr * s_ * (1 - t) / var.sqrt()
    assert all(torch.allclose(x, y) for x, y in zip(model.scalings(t, a)[1:], (c_skip, c_out)))
    expected = ((out - (x1 - mu - c_skip * (xt - mu)) / c_out) ** 2).mean() + 0.7 * ((mu - x1) ** 2).mean() / r ** 2
    if basis != "rgb":   # the estimate's error is the same in any orthonormal basis; the basis matters below
        assert not torch.allclose(mu, mu_rgb)
    if local_spread:
        expected = expected + (torch.log(sr) + 0.5 * ((x1 - mu) / sr) ** 2).mean() - math.log(r) - 0.5
    assert torch.allclose(loss, expected)
    assert torch.allclose(output.out, out)
    x1_hat = mu + c_skip * (xt - mu) + c_out * out
    assert torch.allclose(model.denoise(ctx, xt, b["t"]), x1_hat)
    assert torch.allclose(model.velocity(ctx, xt, b["t"]), (x1_hat - xt) / (1 - t))
    # one Euler step from x0 = mu + noise_scale a z lands on the prediction at t = 0
    x0 = mu + model.config.noise_scale * (1 if a is None else a) * b["z"]
    context = model.context(b["obs_coords"], b["obs_values"], b["query_coords"], b["cell"])
    assert torch.allclose(context.mu, mu)
    assert torch.allclose(solve(model, context, b["z"], steps=1, solver="euler"),
                          ((model.denoise(ctx, x0, 0.0) @ P.T + 1) / 2).clamp(0, 1))
    # one exponential step: w = (x - mu) / sigma moves by a quarter turn of phi times F, x1 = mu + sigma(1) w
    sig0, sig1 = model.config.noise_scale * (1 if a is None else a), sr
    x1_exp = mu + sig1 * ((x0 - mu) / sig0 + math.pi / 2 * model.network(ctx, x0, 0.0))
    assert torch.allclose(solve(model, context, b["z"], steps=1), ((x1_exp @ P.T + 1) / 2).clamp(0, 1))
    assert torch.allclose(model.estimate(b["obs_coords"], b["obs_values"], b["query_coords"], b["cell"]),
                          ((mu_rgb + 1) / 2).clamp(0, 1))


def test_local_spread_settles_on_the_residuals_rms(seed):
    """The spread's term is stationary where the spread equals the RMS of x1 - mu (per channel,
    the spread held constant over the queries) and pushes it down from above, up from below;
    local_spread without a grid refiner is refused by name."""
    model = SparseFieldFlow(small(grid_blocks=2, grid_width=8, local_spread=True)).double()
    b = _batch(model, Q=40, dtype=torch.float64)
    memory = model.encode(b["obs_coords"], b["obs_values"])
    _, mu = model.condition(memory, b["query_coords"], b["cell"])
    rms = ((2 * b["targets"] - 1 - mu.detach()) ** 2).mean((0, 1)).sqrt()      # (C,)
    bias = model.refiner.out.bias            # zero weights: the spread is exp(bias) at every query
    grads = []
    for factor in (1.0, 2.0, 0.5):
        with torch.no_grad():
            bias[3:] = torch.log(factor * rms / model.config.residual_std)
        model.zero_grad()
        _loss(model, b)[0].backward()
        grads.append(bias.grad[3:].clone())
    assert grads[0].abs().max() < 1e-9
    assert (grads[1] > 1e-3).all() and (grads[2] < -1e-3).all()
    with pytest.raises(ValueError, match="local_spread needs the grid refiner"):
        FlowConfig(local_spread=True, grid_blocks=0)


def test_preconditioning_is_the_gaussian_posterior_in_float64():
    """With x1 - mu ~ N(0, r^2): c_skip (x_t - mu) is the least-squares estimate of x1 - mu from
    x_t and c_out the spread left (Monte Carlo, 400k draws); c_in makes x_t - mu unit-variance."""
    model = SparseFieldFlow(small(residual_std=0.2, noise_scale=0.5))
    g = torch.Generator().manual_seed(0)
    r, s = 0.2, 0.5
    d = torch.randn(400_000, generator=g, dtype=torch.float64) * r
    z = torch.randn(400_000, generator=g, dtype=torch.float64)
    for t in (0.0, 0.3, 0.7, 0.95):
        xt = t * d + (1 - t) * s * z
        c_in, c_skip, c_out = (float(c) for c in model.scalings(torch.tensor(t, dtype=torch.float64)))
        assert abs(float((xt * d).mean() / (xt * xt).mean()) - c_skip) < 0.01
        assert abs(float((d - c_skip * xt).std()) - c_out) < 0.01 * r
        assert abs(float((c_in * xt).std()) - 1) < 0.01
    c_in, c_skip, c_out = model.scalings(torch.tensor(1.0, dtype=torch.float64))
    assert float(c_skip) == pytest.approx(1) and float(c_out) == 0     # at t = 1, x_t is the field


def test_guide_is_the_normalised_convolution_in_float64(seed):
    """mu starts (zero-initialised head) at the guide: sum_j w_j v_j / sum_j w_j with Gaussian
    weights of guide_sigma base pixels."""
    model = SparseFieldFlow(small(guide_sigma=1.5)).double()
    b = _batch(model, dtype=torch.float64)
    mem = model.encode(b["obs_coords"], b["obs_values"])
    _, mu = model.condition(mem, b["query_coords"], b["cell"])
    guide = model.guide(mem.points, b["query_coords"])
    d2 = ((b["query_coords"][:, :, None] - b["obs_coords"][:, None]) * 8).pow(2).sum(-1)
    w = torch.exp(-d2 / (2 * 1.5 ** 2))
    expected = (w @ (2 * b["obs_values"] - 1)) / w.sum(-1, keepdim=True)
    assert torch.allclose(guide, expected) and torch.allclose(mu, guide)


def test_linear_guide_is_exact_on_affine_fields_and_at_the_observations(seed):
    """guide="linear": piecewise-linear over the observations' triangles, so an affine field is
    reproduced exactly inside their hull and every observation is kept; outside the hull the nearest
    observation; mu starts at the guide. Queries in chunks of 3 (the guide is sliced per chunk)."""
    model = SparseFieldFlow(small(guide="linear", chunk=3)).double()
    oc, _ = (x.double() for x in _obs())
    affine = lambda c: 0.2 + 0.3 * c[..., :1] + 0.4 * c[..., 1:] * torch.tensor([1.0, 0.5, -0.5])  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    inside = 0.25 + 0.5 * torch.rand(2, 20, 2, generator=g, dtype=torch.float64)   # well inside a 25% sample's hull
    q = torch.cat([inside, oc, torch.tensor([[[0.0, 0.0], [1.0, 0.999]]] * 2, dtype=torch.float64)], 1)
    mem = model.encode(oc, affine(oc))
    _, mu = model.condition(mem, q, torch.full((2, 2), 1 / 8, dtype=torch.float64))
    guide = model.guide(mem.points, q)
    guide = (guide + 1) / 2
    assert torch.allclose(guide[:, :20], affine(inside), atol=1e-12)
    assert torch.allclose(guide[:, 20:-2], affine(oc), atol=1e-12)
    corner = torch.stack([affine(oc)[i][((oc[i, :, None] - q[i, -2:]) ** 2).sum(-1).argmin(0)] for i in range(2)])
    assert torch.allclose(guide[:, -2:], corner)
    assert torch.allclose(mu, 2 * guide - 1)
    with pytest.raises(ValueError, match="guide must be 'normconv' or 'linear'"):
        FlowConfig(guide="cubic")


def test_grid_reading_and_rasterising(seed):
    """read_grid at pixel centres returns the map (2-d and 3-d) and halfway between two centres
    their mean; rasterise puts each observation in the cell that contains it, two in one cell
    averaged, and marks the observed cells."""
    g = torch.Generator().manual_seed(seed)
    for size in ((8, 6), (4, 6, 5)):
        feats = torch.randn(2, 5, *size, generator=g, dtype=torch.float64)
        grid = make_grid(size).double().expand(2, -1, -1)
        assert torch.allclose(read_grid(feats, grid), feats.flatten(2).transpose(1, 2), atol=1e-6)  # float32 grid
    feats = torch.randn(1, 3, 8, 6, generator=g, dtype=torch.float64)
    mid = torch.tensor([[[2.5 / 8, 3.0 / 6]]], dtype=torch.float64)          # between (2, 2) and (2, 3)
    assert torch.allclose(read_grid(feats, mid)[0, 0], (feats[0, :, 2, 2] + feats[0, :, 2, 3]) / 2)
    coords = torch.tensor([[[0.10, 0.10], [0.12, 0.05], [0.99, 0.50]]], dtype=torch.float64)  # cells (0,0) (0,0) (7,4)
    values = torch.tensor([[[0.2], [0.4], [1.0]]], dtype=torch.float64)
    mask, mean = rasterise(coords, values, (8, 8))
    assert mask.shape == (1, 1, 8, 8) and mask.sum() == 2 and mask[0, 0, 0, 0] == 1 and mask[0, 0, 7, 4] == 1
    assert torch.allclose(mean[0, 0, 0, 0], torch.tensor(0.3, dtype=torch.float64)) and mean[0, 0, 7, 4] == 1
    assert mean.abs().sum() == pytest.approx(1.3)


def test_grid_refiner_sees_the_guide_the_mask_and_the_observations(seed):
    """grid_blocks > 0: the refiner's input is, at every base-grid cell, the guide (the normalised
    convolution, recomputed here), a mask of the observed cells and their values in [-1, 1] (zero
    elsewhere); its features reach mu once the head is trained; 3-d grids work; bad settings are
    named."""
    model = SparseFieldFlow(small(grid_blocks=4, grid_width=8)).double()
    assert len(model.refiner.blocks) == 4
    b = _batch(model, dtype=torch.float64)
    seen = []
    model.refiner.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    mem = model.encode(b["obs_coords"], b["obs_values"])
    x = seen[0]
    grid = make_grid((8, 8)).double()
    d2 = ((grid[None, :, None] - b["obs_coords"][:, None]) * 8).pow(2).sum(-1)
    w = torch.exp(-d2 / 2)
    guide = (w @ (2 * b["obs_values"] - 1)) / w.sum(-1, keepdim=True)
    assert torch.allclose(x[:, :3].flatten(2).transpose(1, 2), guide)
    obs = sparse_masks(range(2), 64, 0.25)
    mask = torch.zeros(2, 64, dtype=torch.float64).scatter_(1, obs, 1.0)
    assert torch.equal(x[:, 3].flatten(1), mask)
    observed = torch.zeros(2, 64, 3, dtype=torch.float64).scatter_(1, obs[..., None].expand(-1, -1, 3),
                                                                   2 * b["obs_values"] - 1)
    assert torch.allclose(x[:, 4:].flatten(2).transpose(1, 2), observed)
    assert mem.refined.features.shape == (2, 8, 8, 8)
    with torch.no_grad():
        torch.nn.init.normal_(model.mu_head.weight, std=0.1)
    _, mu = model.condition(mem, b["query_coords"], b["cell"])
    mem.refined.features = mem.refined.features + 1.0
    _, mu2 = model.condition(mem, b["query_coords"], b["cell"])
    assert (mu2 - mu).abs().min() > 0
    cube = SparseFieldFlow(small(input_size=(4, 4, 4), grid_blocks=1, grid_width=4))
    oc = make_grid((4, 4, 4))[None, ::3]
    out = cube.sample(oc, torch.rand(1, oc.shape[1], 3), torch.rand(1, 7, 3), steps=2)
    assert out.shape == (1, 7, 3)
    with pytest.raises(ValueError, match="grid_blocks must be >= 0"):
        FlowConfig(grid_blocks=-1)
    with pytest.raises(ValueError, match="needs a 2-d or 3-d input_size"):
        FlowConfig(input_size=(16,), grid_blocks=2)


@pytest.mark.parametrize("grid_blocks,local_spread", [(0, False), (2, False), (2, True)])
def test_objective_trains_every_part_of_the_model(grid_blocks, local_spread, seed):
    """After one optimizer step every parameter group, the encoder and the grid refiner included,
    gets a non-zero gradient, and the loss falls on a fixed batch."""
    model = SparseFieldFlow(small(grid_blocks=grid_blocks, grid_width=8,
                                       local_spread=local_spread))
    b = _batch(model, Q=64)
    field = lambda c: 0.5 + 0.4 * torch.sin(3 * c[..., :1] + 2 * c[..., 1:] + torch.tensor([0.0, 1.0, 2.0]))  # noqa: E731
    b["query_coords"] = make_grid((8, 8)).expand(2, -1, -1)
    b["obs_values"], b["targets"] = field(b["obs_coords"]), field(b["query_coords"])   # a smooth, learnable field
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss, _ = _loss(model, b)
        opt.zero_grad()
        loss.backward()
        if step == 1:
            groups = {n.split(".")[0] for n, _ in model.named_parameters()}
            assert {"encoder", "reader", "cond", "mu_head", "x_embed", "t_embed", "t_proj", "mixer", "head",
                    *(["refiner"] if grid_blocks else [])} <= groups
            for group in groups:
                norm = sum(p.grad.norm() ** 2 for n, p in model.named_parameters()
                           if n.split(".")[0] == group and p.grad is not None)
                assert norm > 0, f"no gradient reaches {group}"
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], (losses[0], losses[-5:])


class GaussianFlow(SparseFieldFlow):
    """x1 ~ N(m, s^2) per value, x0 ~ N(0, 1): the marginal velocity of the straight-line path is
    E[x1 - x0 | x_t = x] = m + (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2) (x - t m), and its ODE
    carries x0 to m + s x0 exactly."""

    m, s = 0.3, 0.5

    def condition(self, memory, query_coords, cell=None):
        return None, torch.zeros(*query_coords.shape[:2], 3, dtype=query_coords.dtype)

    def velocity(self, ctx, x, t):
        m, s = self.m, self.s
        return m + (t * s**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s**2) * (x - t * m)


@pytest.mark.parametrize("solver,tol", [("euler", 2e-2), ("heun", 1e-3)])   # heun: the last step is Euler
def test_samplers_follow_the_analytic_gaussian_flow(solver, tol, seed):
    model = GaussianFlow(small(noise_scale=1.0)).double()
    oc, ov = (x.double() for x in _obs())
    qc = make_grid((8, 8)).double().expand(2, -1, -1)
    x0 = model.noise(qc, torch.Generator().manual_seed(1))
    exact = ((model.m + model.s * x0) + 1) / 2   # sample() returns values in [0, 1]
    errs = []
    for steps in (25, 50):
        out = model.sample(oc, ov, qc, steps=steps, solver=solver, generator=torch.Generator().manual_seed(1))
        errs.append((out - exact.clamp(0, 1)).abs().max().item())
    assert errs[1] < tol
    order = 1 if solver == "euler" else 2   # doubling the steps divides the error by 2^order
    assert 2 ** order * 0.7 < errs[0] / errs[1] < 2 ** order * 1.4, errs


def test_angle_is_the_time_in_which_the_flow_is_linear_in_float64():
    """dphi/dt = r s / sigma(t)^2 (so dw/dphi = F for w = (x_t - mu) / sigma), a quarter turn from
    t = 0 to 1, and angle_times spaces the steps equally in phi."""
    r, s, h = 0.15, 0.08, 1e-6
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    dphi = (bridge.angle(t + h, r, s) - bridge.angle(t - h, r, s)) / (2 * h)
    assert torch.allclose(dphi, r * s / bridge.sigma(t, r, s) ** 2, rtol=1e-6)
    assert float(bridge.angle(1.0, r, s) - bridge.angle(0.0, r, s)) == pytest.approx(math.pi / 2, rel=1e-12)
    ts = bridge.angle_times(8, r, s)
    assert ts[0] == 0 and ts[-1] == 1 and (ts.diff() > 0).all()
    assert torch.allclose(bridge.angle(ts, r, s).diff(), torch.full((8,), math.pi / 16, dtype=torch.float64))
    spread = torch.rand(5, dtype=torch.float64) + 0.5
    assert torch.allclose(bridge.sigma(t[:5], r, s, spread), spread * bridge.sigma(t[:5], r, s))


def test_exponential_solver_is_exact_on_the_gaussian_part_and_converges_to_the_ode(seed):
    """float64, a fresh model with a spread per query. With the network's output zeroed the flow
    is that of a Gaussian field, and the exponential solver lands on mu + r * spread * z at any
    number of steps (Euler's draw moves with the steps); with the network, its draws approach the
    ODE's solution (Euler in t with 256 steps) at first order as the steps double."""
    model = SparseFieldFlow(small(grid_blocks=2, local_spread=True, residual_std=0.15, noise_scale=0.08)).double()
    with torch.no_grad():      # a spread that varies over the queries
        model.refiner.out.bias[3:] = torch.tensor([0.4, -0.3, 0.1], dtype=torch.float64)
        model.refiner.out.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed))
        model.head[1].weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 1))
    oc, ov = (x.double() for x in _obs())
    qc = torch.rand(2, 24, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ctx = model.context(oc, ov, qc)
    assert ctx.spread.std() > 0.05
    z = model.noise(ctx.query_coords, torch.Generator().manual_seed(seed))
    draw = {}
    for solver, steps in (("exponential", 4), ("exponential", 8), ("exponential", 16), ("euler", 8), ("euler", 256)):
        draw[solver, steps] = 2 * solve(model, ctx, z, steps, solver) - 1
    exact = model.network
    model.network = lambda ctx, x, t: torch.zeros_like(x)
    gauss = (ctx.mu + model.config.residual_std * ctx.spread * z).clamp(-1, 1)
    for steps in (1, 3, 8, 32):
        assert torch.allclose(2 * solve(model, ctx, z, steps, "exponential") - 1, gauss, atol=1e-12)
    eu = [(2 * solve(model, ctx, z, n, "euler") - 1 - gauss).abs().max() for n in (8, 32)]
    assert eu[0] > 1e-3 and eu[1] > 1e-4                 # Euler in t misses it, by less as the steps grow
    model.network = exact
    ref = draw["euler", 256]
    err = [float((draw["exponential", n] - ref).abs().max()) for n in (4, 8, 16)]
    assert err[-1] < 0.025, err
    assert all(1.5 < a / b < 2.8 for a, b in zip(err[:-1], err[1:])), err   # first order
    assert float((draw["euler", 8] - ref).abs().max()) > 2 * err[1]          # and closer than Euler at 8 steps
    with pytest.raises(ValueError, match="solver must be one of"):
        solve(model, ctx, z, 8, "rk4")


@pytest.mark.parametrize("transpose", [False, True])
def test_hilbert_curve_visits_every_pixel_through_neighbours(transpose):
    """On a 2^k grid, consecutive pixels along the curve are always 4-neighbours, and every pixel
    gets its own index; the transposed curve is the same walk with the axes swapped."""
    size = 16
    grid = make_grid((size, size))
    idx = curve_index(grid[None], transpose=transpose)[0]
    assert len(set(idx.tolist())) == size * size
    path = (grid[idx.argsort()] * size).floor()
    steps = (path[1:] - path[:-1]).abs().sum(-1)
    assert torch.equal(steps, torch.ones(size * size - 1))
    first = (grid[idx.argsort()][1] - grid[idx.argsort()][0]).abs()
    assert first.argmax() == (0 if transpose else 1)      # the transposed walk swaps the axes


def test_morton_curve_orders_three_dimensional_coordinates():
    g = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    idx = curve_index(((g + 0.5) / 4)[None], bits=2)[0]
    assert sorted(idx.tolist()) == list(range(64))
    # Z order: the first 8 indices are the 2x2x2 corner block
    assert set(map(tuple, g[idx.argsort()[:8]].tolist())) == {(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)}


def test_noise_field_is_one_gaussian_process_in_float64():
    """The noise at a coordinate does not depend on the other queries (one field for every
    resolution), is marginally N(0, 1) and has covariance exp(-d^2 / (2 l^2)) over many draws."""
    length, size = 0.5, (8, 8)
    c = torch.tensor([[[0.5, 0.5], [0.5, 0.5 + 0.5 / 8], [0.5, 0.5 + 1 / 8], [0.1, 0.9]]], dtype=torch.float64)
    more = torch.cat([c, torch.rand(1, 50, 2, dtype=torch.float64)], 1)
    a = coordinate_noise(c, size, 3, torch.Generator().manual_seed(0), length)
    b = coordinate_noise(more, size, 3, torch.Generator().manual_seed(0), length)
    assert torch.equal(a, b[:, :4])
    z = coordinate_noise(c.expand(4000, -1, -1), size, 1, torch.Generator().manual_seed(1), length)[..., 0]
    z = z.double()
    cov = (z.T @ z) / len(z)
    d = torch.tensor([0, 0.5, 1.0], dtype=torch.float64)   # pixels from the first point
    assert torch.allclose(cov[0, :3], torch.exp(-d ** 2 / (2 * length ** 2)), atol=0.06), cov[0]
    assert abs(cov[0, 3]) < 0.06 and abs(z.mean()) < 0.05


def test_noise_channels_correlate_by_channel_corr_in_float64():
    """channel_corr: every pair of channels correlates by it, each channel stays N(0, 1), the
    field stays one field over the queries; 0 draws what it drew before the option existed."""
    c = torch.rand(1, 6, 2, dtype=torch.float64)
    z = coordinate_noise(c.expand(4000, -1, -1), (8, 8), 3, torch.Generator().manual_seed(2), 0.5,
                         channel_corr=0.8).reshape(-1, 3)
    corr = torch.corrcoef(z.T)
    assert torch.allclose(corr[~torch.eye(3, dtype=torch.bool)], torch.tensor(0.8, dtype=torch.float64), atol=0.02)
    assert torch.allclose(z.std(0), torch.ones(3, dtype=torch.float64), atol=0.03)
    g = torch.Generator().manual_seed(3)
    w, b, a = torch.randn(1, 64, 2, generator=g) / 0.5, torch.rand(1, 64, generator=g) * 2 * math.pi, \
        torch.randn(1, 64, 3, generator=g)
    u = c.float() * torch.tensor([8.0, 8.0])
    plain_field = math.sqrt(2 / 64) * torch.cos(torch.einsum("bqd,bfd->bqf", u, w) + b[:, None]) @ a
    assert torch.allclose(coordinate_noise(c.float(), (8, 8), 3, torch.Generator().manual_seed(3), 0.5, 64),
                          plain_field, atol=1e-6)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="channel_corr must be in"):
            coordinate_noise(c, (8, 8), 3, None, channel_corr=bad)
    with pytest.raises(ValueError, match="noise_channel_corr must be in"):
        small(noise_channel_corr=1.5)
    with pytest.raises(ValueError, match=r"colour_basis must be one of \('rgb', 'opponent'\), got 'yuv'"):
        small(colour_basis="yuv")
    with pytest.raises(ValueError, match="colour_basis='opponent' needs 3 channels.*in_channels=1"):
        small(colour_basis="opponent", in_channels=1)


def test_velocity_is_joint_over_the_queries_and_order_free(seed):
    """Changing the noisy value at one query changes the velocity at its neighbours (the
    queries are mixed; without the mixer it does not); permuting the queries permutes the
    velocities (they are put on the curve); the conditioning does not depend on the chunk size."""
    oc, ov = _obs(B=1)
    q = make_grid((8, 8))[None]
    for depth in (2, 0):
        model = SparseFieldFlow(small(mixer_depth=depth)).eval()
        for p in model.head.parameters():
            torch.nn.init.normal_(p, std=0.1)
        with torch.no_grad():
            ctx = model.context(oc, ov, q)
            x = torch.randn(1, 64, 3)
            v = model.velocity(ctx, x, 0.3)
            x2 = x.clone()
            x2[0, 27] += 1.0                           # pixel (3, 3)
            v2 = model.velocity(ctx, x2, 0.3)
        change = torch.stack([(v2[0, nb] - v[0, nb]).abs().max() for nb in (19, 26, 28, 35)])   # its 4-neighbours
        if depth:     # at initialisation the scan's memory fades along the curve: some neighbours only
            assert change.max() > 1e-6, change
        else:
            assert (change == 0).all(), change
    model = SparseFieldFlow(small()).eval()
    with torch.no_grad():
        mem = model.encode(oc, ov)
        ctx = model.context(oc, ov, q)
        x = torch.randn(1, 64, 3)
        v = model.velocity(ctx, x, 0.3)
        perm = torch.randperm(64)
        vp = model.velocity(model.context(oc, ov, q[:, perm]), x[:, perm], 0.3)
        assert torch.allclose(vp, v[:, perm], atol=1e-5)
        model.config.chunk = model.reader.chunk = 7
        c7, m7 = model.condition(mem, q)
        assert torch.allclose(c7, ctx.cond, atol=1e-6) and torch.allclose(m7, ctx.mu, atol=1e-6)
        # the observation order given does not matter (tokens are put on the curve)
        perm = torch.randperm(oc.shape[1])
        assert torch.allclose(model.encode(oc[:, perm], ov[:, perm]).points.tokens, mem.points.tokens, atol=1e-5)


def test_default_cell_is_the_pixel_size_of_a_grid():
    assert torch.allclose(default_cell(make_grid((64, 48))[None], (32, 32)), torch.tensor([[1 / 64, 1 / 48]]))
    assert torch.allclose(default_cell(make_grid((16, 16))[None], (32, 32)), torch.tensor([[1 / 32, 1 / 32]]))
    assert torch.allclose(default_cell(make_grid((1024, 1024))[None, :5000], (32, 32)),
                          torch.tensor([[1 / 256, 1 / 256]]))   # clamped at an eighth of a base pixel


def test_masks_are_deterministic_and_per_image():
    obs = sparse_masks(range(5), 1024, 0.2, seed=42)
    assert obs.shape == (5, 205) and all(len(set(o.tolist())) == 205 for o in obs)
    again = sparse_masks([3, 1], 1024, 0.2, seed=42)          # image 3's mask whatever the batch
    assert torch.equal(again[0], obs[3]) and torch.equal(again[1], obs[1])
    assert not torch.equal(obs[0], obs[1])                     # instance-specific
    for frac in (0.0, 1.0):
        with pytest.raises(ValueError, match=f"frac={frac} observes"):
            sparse_masks([0], 16, frac=frac)


@pytest.mark.parametrize("basis", ["rgb", "opponent"])
def test_hold_known_pixels_and_posterior(basis, seed):
    model = SparseFieldFlow(small(colour_basis=basis)).eval()
    oc, ov = _obs()
    qc = make_grid((8, 8)).expand(2, -1, -1)
    out = model.sample(oc, ov, qc, steps=4, hold_known=True, generator=torch.Generator().manual_seed(0))
    obs = sparse_masks(range(2), 64, 0.25)
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
    assert m["steps"] == cfg.steps and m["best_val_psnr"] > 5     # (that the loss falls: the objective test)
    assert all(math.isfinite(h["loss"]) for h in m["history"])
    model, ckpt = load_checkpoint(tmp_path / "best.pt")
    assert isinstance(model, SparseFieldFlow) and ckpt["config"]["family"] == "flow"
    save_checkpoint(tmp_path / "again.pt", model)
    again, _ = load_checkpoint(tmp_path / "again.pt")
    oc, ov = _obs(size=32, frac=0.2)
    q = make_grid((32, 32)).expand(2, -1, -1)
    a = model.sample(oc, ov, q, steps=3, generator=torch.Generator().manual_seed(0))
    b = again.sample(oc, ov, q, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_antithetic_pairs_are_draws_whose_mean_cancels_the_noise(seed):
    """On the analytic Gaussian flow (x1 = m + s z exactly, float64): sample 0 is the draw the
    generator gives, sample 1 its mirror (noise -z), and a pair's mean is the posterior mean m
    where neither is clipped; independent draws' pairs are not."""
    model = GaussianFlow(small(noise_scale=1.0)).double()
    oc, ov = (x.double() for x in _obs())
    qc = make_grid((8, 8)).double().expand(2, -1, -1)
    kw = dict(steps=50, solver="heun")
    xs = model.samples(oc, ov, qc, k=4, generator=torch.Generator().manual_seed(1), **kw)
    assert xs.shape == (4, 2, 64, 3)
    assert torch.equal(xs[0], model.sample(oc, ov, qc, generator=torch.Generator().manual_seed(1), **kw))
    z = model.noise(qc, torch.Generator().manual_seed(1))
    assert torch.equal(xs[1], solve(model, model.context(oc, ov, qc), -z, **kw))
    posterior_mean = (model.m + 1) / 2
    for pair in (xs[:2], xs[2:]):
        inside = ((pair > 0) & (pair < 1)).all(0)
        assert inside.float().mean() > 0.8
        assert (pair.mean(0) - posterior_mean)[inside].abs().max() < 2e-3
    iid = model.samples(oc, ov, qc, k=2, generator=torch.Generator().manual_seed(1), antithetic=False, **kw)
    assert torch.equal(iid[0], xs[0])
    assert (iid.mean(0) - posterior_mean).abs().mean() > 0.05
    mean, std = model.posterior(oc, ov, qc, k=4, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(mean, xs.mean(0)) and torch.allclose(std, xs.std(0))
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.samples(oc, ov, qc, k=0)
    with pytest.raises(ValueError, match="z must be the noise at the queries"):
        solve(model, model.context(oc, ov, qc), z[:, :5])


def test_native_steps_read_windows_of_the_crops(seed):
    """native_windows=(4,): a step at s = 1 observes a 32x32 window of the 128x128 crop itself (no
    resize: each value is the crop's pixel at the window's position) and supervises that input;
    the other steps observe the whole crop downsampled and supervise HR windows; bad values named."""
    from ginr_common.data import ImageTensorDataset
    from ginr_common.tasks import make_task
    from ginr_common.tasks import sparse_flow
    cfg = get_config("flow_sparse", "smoke")
    cfg.augment, cfg.options.native_windows, cfg.batch_size, cfg.seed = False, (4,), 2, seed
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    crop = torch.stack([yy / 127, xx / 127, torch.full_like(yy, 0.5)])        # a pixel's value names its place
    task = make_task(cfg)
    data = ImageTensorDataset((crop[None].expand(2, -1, -1, -1) * 255).round().to(torch.uint8))
    kinds = set()
    for step in range(12):
        b = task.batch(data, step)
        native = b["query_coords"].shape[1] == 1024 and torch.allclose(b["cell"], torch.full_like(b["cell"], 1 / 32))
        if native:
            rows, cols = (b["targets"][0, :, :2] * 127).round().T
            assert rows.max() - rows.min() == 31 and cols.max() - cols.min() == 31     # one 32x32 window, as is
            assert torch.equal(rows.view(32, 32), rows.view(32, 32)[:, :1].expand(32, 32))
        kinds.add(native)
    assert kinds == {True, False}
    assert sparse_flow.NATIVE_SHARE == 0.5
    with pytest.raises(ValueError, match="native_windows must be integers >= 1"):
        type(cfg)(task="sparse_flow", options=FlowOptions(native_windows=(0,)))


def test_estimate_steps_train_the_grid_refiner_alone(tmp_path, capsys, seed):
    """options.estimate_steps, the task's first training stage: its batches have no time or noise
    and observe the input grid (s = 1); their loss is mu_weight |guide + correction - x1|^2 / r^2
    (recomputed in float64), only the refiner gets gradient and fit leaves every other parameter
    untouched until the joint stage begins; bad settings are named."""
    from ginr_common.data import ImageTensorDataset
    from ginr_common.tasks import make_task
    cfg = get_config("flow_sparse", "smoke")
    cfg.steps, cfg.options.estimate_steps, cfg.val_every, cfg.ckpt_every, cfg.batch_size, cfg.seed = 4, 3, 4, 4, 2, seed
    g = torch.Generator().manual_seed(seed)
    data = ImageTensorDataset(torch.randint(0, 256, (4, 3, 128, 128), generator=g, dtype=torch.uint8))
    long = copy.deepcopy(cfg)
    long.steps, long.options.estimate_steps = 40, 30
    assert all(make_task(long).batch(data, step)["cell"].max() == 1 / 32 for step in range(30))   # all at s = 1
    task = make_task(cfg)
    assert task.stages() == [("estimate", 0), ("joint", 3)]
    for step in range(3):
        b = task.batch(data, step)
        assert "t" not in b and "z" not in b and b["query_coords"].shape[1] == 1024
        assert torch.equal(b["cell"], torch.full_like(b["cell"], 1 / 32)), "an estimate step at s > 1"
    assert "t" in task.batch(data, 3)
    b = task.batch(data, 0)
    model = SparseFieldFlow(cfg.model).double()
    with torch.no_grad():
        torch.nn.init.normal_(model.refiner.out.weight, std=0.1)
    b = {k: v.double() for k, v in b.items()}
    model.config.mu_weight = 0.7
    loss, _ = _loss(model, b)
    mem = EncodedPoints(b["obs_coords"], 2 * b["obs_values"] - 1, None)
    _, out = model.refiner(torch.cat([
        model.guide(mem, make_grid((32, 32)).double().expand(2, -1, -1)).transpose(1, 2).reshape(2, 3, 32, 32),
        *rasterise(b["obs_coords"], 2 * b["obs_values"] - 1, (32, 32))], 1))
    correction, log_spread = (o.flatten(2).transpose(1, 2) for o in (out[:, :3], out[:, 3:]))   # queries = the grid
    mu, x1 = model.guide(mem, b["query_coords"]) + correction, 2 * b["targets"] - 1
    r = model.config.residual_std
    assert model.config.local_spread        # the spread's likelihood is trained in the stage too
    sigma = r * log_spread.exp()
    nll = (sigma.log() + 0.5 * ((x1 - mu) / sigma) ** 2).mean() - math.log(r) - 0.5
    assert torch.allclose(loss, 0.7 * ((mu - x1) ** 2).mean() / r ** 2 + nll)
    loss.backward()
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None} == {"refiner"}
    torch.manual_seed(cfg.seed)                       # fit's initial weights
    init = SparseFieldFlow(cfg.model).state_dict()
    saved = {}
    cfg.ckpt_every = 1
    tiles = ImageTensorDataset(torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8))
    fit(cfg, datasets={"train": tiles, "train_hr": data, "val": tiles, "test": tiles}, out=tmp_path, progress=False,
        on_step=lambda step, rec: saved.update({step: load_checkpoint(tmp_path / "last.pt")[0].state_dict()}))
    moved = lambda step: {n.split(".")[0] for n, v in saved[step].items() if not torch.equal(v, init[n])}  # noqa: E731
    assert moved(3) == {"refiner"}
    assert {"encoder", "reader", "mixer", "head", "refiner"} <= moved(4)
    edited = copy.deepcopy(cfg)
    edited.options.estimate_steps = edited.steps       # edited after construction: fit validates again
    with pytest.raises(ValueError, match=r"estimate_steps must be in \[0, steps=4\)"):
        fit(edited, datasets={"train": tiles, "train_hr": data, "val": tiles, "test": tiles}, out=tmp_path / "x",
            progress=False)
    from ginr_common.train import main
    capsys.readouterr()
    main(["--config", "flow_sparse", "--profile", "cpu", "--steps", "85", "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert (printed["steps"], printed["options"]["estimate_steps"]) == (85, 51)   # the stage keeps its share
    with pytest.raises(ValueError, match="needs model.grid_blocks > 0"):
        type(cfg)(task="sparse_flow", model=FlowConfig(grid_blocks=0, local_spread=False), steps=10,
                  options=FlowOptions(estimate_steps=2))
    with pytest.raises(ValueError, match=r"estimate_steps must be in \[0, steps=10\)"):
        type(cfg)(task="sparse_flow", steps=10, options=FlowOptions(estimate_steps=10))
    with pytest.raises(ValueError, match="needs grid_blocks > 0"):
        SparseFieldFlow(small())(*(b[k].float() for k in ("obs_coords", "obs_values", "query_coords", "targets")),
                                 stage="estimate")
    with pytest.raises(ValueError, match="stage must be one of"):
        SparseFieldFlow(small())(*(b[k].float() for k in ("obs_coords", "obs_values", "query_coords", "targets")),
                                 stage="refine")


def test_ssim_weight_adds_the_estimates_ssim_over_each_window_in_float64(seed):
    """options.ssim_weight w: the task's loss is the flow-matching loss plus w (1 - SSIM) of the
    estimate mu, read as the window of the target the queries cover (scikit-image's SSIM of the
    unclamped estimate, float64), in the estimate stage (the input grid) and in the joint stage
    (windows of a render at s > 1); 0 adds nothing; bad settings are named."""
    from skimage.metrics import structural_similarity
    from ginr_common.data import ImageTensorDataset
    from ginr_common.tasks import make_task
    cfg = get_config("flow_sparse", "smoke")
    cfg.augment, cfg.batch_size, cfg.seed, cfg.options.ssim_weight = False, 2, seed, 0.3
    g = torch.Generator().manual_seed(seed)
    data = ImageTensorDataset(torch.randint(0, 256, (4, 3, 128, 128), generator=g, dtype=torch.uint8))
    task = make_task(cfg)
    model = SparseFieldFlow(cfg.model).double()
    with torch.no_grad():
        torch.nn.init.normal_(model.refiner.out.weight, std=0.1)
    zoomed = 0
    for step in (0, *range(cfg.options.estimate_steps, cfg.options.estimate_steps + 6)):
        b = {k: v.double() if v.is_floating_point() else v for k, v in task.batch(data, step).items()}
        zoomed += bool(b["cell"].max() < 1 / 32)
        torch.manual_seed(seed)
        loss, _ = task.loss(model, b)
        torch.manual_seed(seed)
        plain, out = _loss(model, b)
        h, w = cfg.model.input_size
        assert h * w == b["query_coords"].shape[1]
        rows = b["query_coords"][0].reshape(h, w, 2)
        assert (rows[1:, :, 0] > rows[:-1, :, 0]).all() and (rows[:, 1:, 1] > rows[:, :-1, 1]).all()  # row-major
        img = lambda v: v.reshape(2, h, w, 3).permute(0, 3, 1, 2).detach().numpy()  # noqa: E731
        s = [structural_similarity(a, t, data_range=1.0, channel_axis=0, win_size=7)
             for a, t in zip(img((out.mu + 1) / 2), img(b["targets"]))]
        assert torch.allclose(loss, plain + 0.3 * (1 - torch.tensor(s, dtype=torch.float64)).mean(), atol=1e-10)
    assert zoomed, "no joint step rendered at s > 1"
    cfg.options.ssim_weight = 0.0
    torch.manual_seed(seed)
    assert torch.equal(make_task(cfg).loss(model, b)[0], (torch.manual_seed(seed), _loss(model, b))[1][0])
    with pytest.raises(ValueError, match="ssim_weight must be >= 0"):
        type(cfg)(task="sparse_flow", options=FlowOptions(ssim_weight=-1.0))
    with pytest.raises(ValueError, match=r"ssim_weight > 0 needs 2-D fields .* got input_size \(8, 8, 8\)"):
        type(cfg)(task="sparse_flow", model=FlowConfig(input_size=(8, 8, 8), in_channels=1),
                  options=FlowOptions(ssim_weight=0.5))


def test_sparse_summary_reads_the_antithetic_mean_and_names_the_independent_one():
    from ginr_common.viz import sparse_summary
    row = lambda p: {"psnr": p + 1, "psnr_unobserved": p, "ssim": 0.8, "tv_ratio": 1.0}  # noqa: E731
    free = {"sample": row(21.0), "mean_4": row(22.5), "mean_16": row(23.6), "estimate": row(23.6),
            "linear": row(22.6), "mean_16_independent": row(23.4)}
    text = sparse_summary({"free": free, "hold_known": {"mean_16": row(23.7)}})
    assert "| mean_16_independent | free | 24.40 | 23.40 |" in text and "| mean_16 | held |" in text
    assert "the mean of 16 samples is 1.00 dB above linear interpolation, one sample 1.60 dB below it" in text
    assert "the mean of 16 independent draws is 0.80 dB above linear" in text


@pytest.mark.parametrize("power,late", [(1.0, 0.25), (2.0, 0.5)])
def test_training_times_follow_time_power(power, late):
    """t = 1 - (1 - u)^p: P(t > 3/4) = (1/4)^(1/p), a quarter for uniform times, a half for p = 2."""
    from ginr_common.data import ImageTensorDataset
    from ginr_common.tasks import make_task
    cfg = get_config("flow_sparse", "smoke")
    cfg.augment, cfg.batch_size, cfg.options = False, 16, FlowOptions(estimate_steps=0, time_power=power)
    task = make_task(cfg)
    data = ImageTensorDataset(torch.randint(0, 256, (16, 3, 128, 128), dtype=torch.uint8))
    t = torch.cat([task.batch(data, step)["t"] for step in range(40)])
    assert t.min() >= 0 and t.max() < 1
    assert abs(float((t > 0.75).float().mean()) - late) < 0.06      # 640 draws: 3.5 standard deviations
    with pytest.raises(ValueError, match="time_power must be > 0"):
        dataclasses.replace(cfg, options=FlowOptions(estimate_steps=0, time_power=0.0))


class _SpeckledInterpolation(SparseFieldFlow):
    """Samples = linear interpolation of the observations + amplitude * (z, -z, ...): every pair's
    mean is the interpolation whatever the amplitude."""

    amplitude = 0.0

    def samples(self, obs_coords, obs_values, query_coords, k=16, generator=None, antithetic=True, **kw):
        base = interpolate_sparse(obs_coords, obs_values, query_coords, "linear")
        z = torch.randn(base.shape, generator=generator)
        return torch.stack([(base + self.amplitude * (-1) ** i * z).clamp(0, 1) for i in range(k)])


def test_validation_scores_single_samples_so_speckle_costs(seed):
    """The flow's validation score is the PSNR on the unobserved pixels of one sample, averaged over
    the samples: noise-free samples score exactly the interpolation's masked PSNR, and speckle whose
    antithetic pairs cancel (invisible to the mean of pairs) lowers it."""
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 0.1 + torch.linspace(
        0.3, 0.6, 16)     # away from 0 and 1: the speckle is never clipped
    model = _SpeckledInterpolation(small(input_size=(16, 16)))
    oc, ov, grid, unobserved = observe(images, model.config.observe_frac)
    lin = interpolate_sparse(oc, ov, grid, "linear").transpose(1, 2).reshape(images.shape)
    clean = sample_psnr(model, images)
    assert clean == pytest.approx(float(masked_psnr(lin, images, unobserved).mean()), abs=1e-5)
    model.amplitude = 0.05
    assert sample_psnr(model, images) < clean - 1.0
    xs = model.samples(oc, ov, grid, k=4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(xs.mean(0).transpose(1, 2).reshape(images.shape), lin, atol=1e-6)   # pairs cancel


def test_samples_share_one_encoding_and_match_single_draws(seed):
    """``samples`` encodes and conditions once for all k samples (``context``), and each of its
    samples is exactly one solve of the same noise, holding the observed pixels or not."""
    model = SparseFieldFlow(small(grid_blocks=2, grid_width=8, local_spread=True)).double().eval()
    torch.nn.init.normal_(model.refiner.out.weight, std=0.3)
    oc, ov = (x.double() for x in _obs())
    qc = make_grid((8, 8)).double().expand(2, -1, -1)
    calls = []
    encode = model.encode
    model.encode = lambda *a: calls.append(1) or encode(*a)
    for hold in (False, True):
        calls.clear()
        xs = model.samples(oc, ov, qc, k=4, generator=torch.Generator().manual_seed(seed), steps=3, hold_known=hold)
        assert len(calls) == 1
        z = model.noise(qc, torch.Generator().manual_seed(seed))
        for i, sign in enumerate((1, -1)):
            ctx = model.context(oc, ov, qc, hold_known=hold)
            assert torch.equal(xs[i], solve(model, ctx, sign * z, steps=3))


def test_sparse_figure_error_maps_show_each_methods_error(seed):
    """errors=True: under each row, |prediction - truth| (x4, clipped, channel mean) per method."""
    from ginr_common.viz import sparse_figure

    truth = torch.rand(2, 3, 8, 8)
    preds = {"observed": truth * 0, "linear": truth + 0.1, "estimate": truth.clone(), "sample": truth * 0.5,
             "std": torch.zeros_like(truth)}
    fig = sparse_figure(preds, truth, n=2, errors=True)
    axes = fig.axes
    assert len(axes) == 2 * 2 * 6
    panel = lambda ax: torch.from_numpy(ax.get_images()[0].get_array().data.copy())  # noqa: E731
    err_row = axes[6:12]
    assert torch.allclose(panel(err_row[1])[..., 0], torch.full((8, 8), 0.4), atol=1e-5)      # linear: 0.1 x 4
    assert float(panel(err_row[2]).abs().max()) == 0                                          # the estimate is exact
    assert torch.allclose(panel(err_row[3])[..., 0], (truth[0] * 2).mean(0).clamp(0, 1), atol=1e-5)
    assert not err_row[0].get_images() and not err_row[4].get_images()                        # observed, spread
    assert len(sparse_figure(preds, truth, n=2).axes) == 2 * 6


def test_temper_scales_brightness_and_colour_apart_in_float64(seed):
    """``temper`` scales the channel mean of the noise by the brightness temperature and each
    channel's difference from it by the colour temperature, in either colour basis; (1, 1) leaves
    the noise as drawn; the sampler draws from the tempered noise (the analytic Gaussian flow lands
    on m + s * tempered z); bad temperatures are named."""
    z = torch.randn(2, 10, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for basis in ("rgb", "opponent"):
        model = SparseFieldFlow(small(colour_basis=basis)).double()
        assert torch.equal(model.temperature, torch.ones(2, dtype=torch.float64))
        zb = model.to_basis(z)
        assert torch.allclose(model.temper(zb), zb, atol=1e-12)
        out = model.from_basis(model.temper(zb, (0.5, 0.2)))
        bright = z.mean(-1, keepdim=True)
        assert torch.allclose(out.mean(-1, keepdim=True), 0.5 * bright, atol=1e-12)
        assert torch.allclose(out - out.mean(-1, keepdim=True), 0.2 * (z - bright), atol=1e-12)
        model.temperature.copy_(torch.tensor([0.5, 0.2]))
        assert torch.allclose(model.temper(zb), model.temper(zb, (0.5, 0.2)), atol=1e-12)
        for bad in ((1.0,), (1.0, -0.1), (1, 1, 1)):
            with pytest.raises(ValueError, match="temperature must be two numbers >= 0"):
                model.temper(zb, bad)
    model = GaussianFlow(small(noise_scale=1.0)).double()
    oc, ov = (x.double() for x in _obs())
    qc = make_grid((8, 8)).double().expand(2, -1, -1)
    x0 = model.noise(qc, torch.Generator().manual_seed(1))
    x = model.sample(oc, ov, qc, steps=200, solver="heun", generator=torch.Generator().manual_seed(1),
                     temperature=(0.5, 0.2))
    exact = ((model.m + model.s * model.temper(x0, (0.5, 0.2))) + 1) / 2
    assert (x - exact).abs().max() < 1e-3
    assert (x - ((model.m + model.s * x0) + 1) / 2).abs().max() > 0.1


def test_temperature_is_saved_with_the_weights_and_old_weights_sample_at_one(tmp_path):
    """The calibrated temperature travels with the weights (checkpoints and shipped folders); a state
    dict written before it existed loads with (1, 1)."""
    from ginr_common.checkpoints import from_pretrained, save_pretrained

    model = SparseFieldFlow(small())
    model.temperature.copy_(torch.tensor([0.7, 0.3]))
    save_checkpoint(tmp_path / "c.pt", model)
    save_pretrained(model, tmp_path / "w")
    for again in (load_checkpoint(tmp_path / "c.pt")[0], from_pretrained(tmp_path / "w")):
        assert torch.equal(again.temperature, torch.tensor([0.7, 0.3]))
    old = {k: v for k, v in model.state_dict().items() if k != "temperature"}
    fresh = SparseFieldFlow(small())
    fresh.temperature.fill_(0.5)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.temperature, torch.ones(2))


class _TemperedSpeckle(SparseFieldFlow):
    """Samples = linear interpolation of the observations + 0.15 * the tempered white noise (z, -z,
    ...): the sample's total variation and colour total variation rise with the temperatures."""

    def samples(self, obs_coords, obs_values, query_coords, k=16, generator=None, antithetic=True, temperature=None,
                **kw):
        base = interpolate_sparse(obs_coords, obs_values, query_coords, "linear")
        z = self.temper(torch.randn(base.shape, generator=generator), temperature)
        return torch.stack([(base + 0.15 * (-1) ** i * z).clamp(0, 1) for i in range(k)])


def test_calibrate_removes_the_excess_of_colour_variation_and_never_adds_noise(seed):
    """``calibrate`` sets a colour temperature in (0, 1) under which one sample's colour total
    variation over the truth's is its total variation over the truth's (within 5%), from twice it at
    1, and leaves the brightness at 1; on tiles whose colour varies more than their brightness it
    keeps (1, 1); grey tiles are refused."""
    from ginr_common.tasks.sparse_flow import calibrate

    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, 16)
    grey = 0.08 * torch.randn(4, 1, 16, 16, generator=g)
    images = (0.5 * ramp + 0.5 * ramp[:, None] + grey + 0.02 * torch.randn(4, 3, 16, 16, generator=g)).clamp(0, 1)
    model = _TemperedSpeckle(small(input_size=(16, 16)))
    c = calibrate(model, images)
    assert c.before["chroma_tv_ratio"] > 2 * c.before["tv_ratio"]
    assert c.temperature[0] == 1.0 and 0 < c.temperature[1] < 1
    assert torch.allclose(model.temperature, torch.tensor(c.temperature))
    assert abs(c.after["chroma_tv_ratio"] / c.after["tv_ratio"] - 1) < 0.05
    colour = torch.randn(4, 3, 16, 16, generator=g)
    colourful = (0.5 + 0.2 * (colour - colour.mean(1, keepdim=True))).clamp(0, 1)
    model.temperature.fill_(0.5)
    c = calibrate(model, colourful)
    assert c.temperature == (1.0, 1.0) and c.before["chroma_tv_ratio"] <= c.before["tv_ratio"]
    assert torch.equal(model.temperature, torch.ones(2))
    with pytest.raises(ValueError, match="RGB images"):
        calibrate(model, images[:, :1])
