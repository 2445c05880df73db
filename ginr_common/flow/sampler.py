"""Samplers: integrate the model's flow from x0 to the field, one or k draws.

Solvers: ``"exponential"`` (the default) steps w = (x_t - mu) / sigma(t) by the network's output
in equal steps of the angle phi(t) (``bridge.angle``): first order, and exact for the part of the
velocity that is the flow of a Gaussian field (c_skip (x_t - mu)), so a network that adds nothing
gives the same draw at any number of steps (an exponential integrator, the way DDIM and
DPM-Solver treat a diffusion's linear part). ``"euler"`` and ``"heun"`` step the velocity
(x1_hat - x_t) / (1 - t) in equal steps of t: their draws change with the number of steps even
where the network adds nothing (the Gaussian part's curvature)."""
import torch
from tqdm.auto import tqdm

from ginr_common.flow import bridge

SOLVERS = ("exponential", "euler", "heun")


@torch.no_grad()
def solve(model, context, z, steps=8, solver="exponential"):
    """One draw: integrate dx/dt = v from t = 0 (x0 = mu + noise_scale * spread * z, z (B, Q, C)
    the noise at the queries, in the model's colour basis like the context) to 1 in ``steps`` equal
    steps of ``solver`` -> values (B, Q, C) in [0, 1]. ``context``: ``model.context(...)`` of the observations and queries. With ``context.known``, queries at observed coordinates follow the straight path to
    their observed value at every step and end exactly on it."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ctx = context
    if z.shape != ctx.mu.shape:
        raise ValueError(f"z must be the noise at the queries, {tuple(ctx.mu.shape)}, got {tuple(z.shape)}")
    x0 = bridge.start(ctx.mu, z.to(ctx.mu), model.config.noise_scale, ctx.spread)

    def hold(x, t):
        return x if ctx.known is None else torch.where(ctx.known[..., None], bridge.point(x0, ctx.x1_known, t), x)

    if solver == "exponential":
        c = model.config
        ts = bridge.angle_times(steps, c.residual_std, c.noise_scale)
        dphi = bridge.angle(ts, c.residual_std, c.noise_scale).diff().tolist()
        ts = ts.tolist()
        sig = [bridge.sigma(u, c.residual_std, c.noise_scale, ctx.spread) for u in ts]   # once per time
        x = x0
        for i, t in enumerate(ts[:-1]):
            x = hold(x, t)
            x = ctx.mu + (sig[i + 1] / sig[i]) * (x - ctx.mu) + (sig[i + 1] * dphi[i]) * model.network(ctx, x, t)
        return ((model.from_basis(hold(x, 1.0)) + 1) / 2).clamp(0, 1)
    x, dt = x0, 1.0 / steps
    for i in range(steps):
        t = i * dt
        x = hold(x, t)
        v = model.velocity(ctx, x, t)
        if solver == "heun" and i < steps - 1:     # the last step is Euler: v is undefined at t = 1
            v = 0.5 * (v + model.velocity(ctx, hold(x + dt * v, t + dt), t + dt))
        x = x + dt * v
    return ((model.from_basis(hold(x, 1.0)) + 1) / 2).clamp(0, 1)


@torch.no_grad()
def samples(model, obs_coords, obs_values, query_coords, k=16, generator=None, antithetic=True, progress=False,
            steps=8, solver="exponential", hold_known=False, cell=None, temperature=None):
    """k draws (k, B, Q, C) in [0, 1] at ``query_coords`` (any coordinates), sharing one context
    (``model.context``). ``antithetic``: in pairs with the noise fields z and -z (-z is as likely
    as z), so every draw is still a draw of the model while a pair's mean cancels the part that
    is odd in the noise: the mean of k draws is a lower-variance estimate of the model's
    posterior mean than k independent draws give. ``progress``: a bar over the draws. ``temperature``:
    (brightness, colour) of the noise (``SparseFieldFlow.temper``; default: the model's own)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ctx = model.context(obs_coords, obs_values, query_coords, cell, hold_known)
    out, z = [], None
    for i in tqdm(range(k), desc="samples", disable=not progress, leave=False):
        z = -z if antithetic and i % 2 else model.noise(ctx.query_coords, generator)
        out.append(solve(model, ctx, model.temper(z, temperature), steps, solver))
    return torch.stack(out)
