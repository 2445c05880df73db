"""The bridge from the estimate to the field, and its flow-matching loss.

The flow starts at x0 = mu + noise_scale * a * z (mu the model's estimate, z the noise field, a
the per-query spread or 1) and carries it to the field x1 along x_t = (1 - t) x0 + t x1. The
network predicts x1 from x_t, preconditioned as in EDM (``scalings``): x1_hat = mu + c_skip
(x_t - mu) + c_out F, and the velocity is (x1_hat - x_t) / (1 - t). Values in [-1, 1]."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def scalings(t, residual_std, noise_scale, spread=None):
    """(c_in, c_skip, c_out) at times t (B, 1, 1): if x1 - mu were N(0, r^2) (r =
    ``residual_std``), E[x1 - mu | x_t] = c_skip (x_t - mu) and c_out is its posterior spread;
    c_in makes x_t - mu unit-variance (the preconditioning of EDM, for this bridge). ``spread``
    (B, Q, C) scales r and the noise per query."""
    r, s = residual_std, noise_scale
    if spread is not None:
        r, s = r * spread, s * spread
    var = (t * r) ** 2 + ((1 - t) * s) ** 2
    return var.rsqrt(), t * r ** 2 / var, r * s * (1 - t) / var.sqrt()


def sigma(t, residual_std, noise_scale, spread=None):
    """The spread of x_t - mu at times t if x1 - mu were N(0, r^2): sqrt((t r)^2 + ((1 - t) s)^2),
    scaled by ``spread`` (per query) when given."""
    var = (t * residual_std) ** 2 + ((1 - t) * noise_scale) ** 2
    return var ** 0.5 if spread is None else spread * var ** 0.5


def angle(t, residual_std, noise_scale):
    """phi(t) = atan(((r^2 + s^2) t - s^2) / (r s)): the time in which the flow is linear in the
    network's output. With y = x_t - mu and w = y / sigma(t), the ODE is dw/dphi = F exactly (the
    part c_skip (x_t - mu) of x1_hat, the flow of a Gaussian field, is carried by sigma), and phi
    runs from -atan(s / r) at t = 0 to atan(r / s) at t = 1, a quarter turn; a spread per query
    scales r and s alike and leaves phi unchanged."""
    r, s = residual_std, noise_scale
    return torch.atan(((r * r + s * s) * torch.as_tensor(t, dtype=torch.float64) - s * s) / (r * s))


def angle_times(steps, residual_std, noise_scale):
    """``steps`` + 1 times (float64) from 0 to 1, equally spaced in ``angle``."""
    r, s = residual_std, noise_scale
    phi = torch.linspace(float(angle(0.0, r, s)), float(angle(1.0, r, s)), steps + 1, dtype=torch.float64)
    t = (s * s + r * s * torch.tan(phi)) / (r * r + s * s)
    t[0], t[-1] = 0.0, 1.0
    return t


def start(mu, z, noise_scale, spread=None):
    """x0 = mu + noise_scale * spread * z: where the bridge starts."""
    return mu + noise_scale * (1 if spread is None else spread) * z


def point(x0, x1, t):
    """x_t = (1 - t) x0 + t x1 at times t (B,) or a number."""
    if torch.is_tensor(t):
        t = t.to(x1.dtype).reshape(-1, 1, 1)
    return (1 - t) * x0 + t * x1


@dataclass
class FlowOutput:
    """A training pass of ``SparseFieldFlow`` (values in [-1, 1]): the estimate mu and the field x1
    at the queries (B, Q, C), the per-query spread (``local_spread``; else None) of each component
    of the colour ``basis`` (C, C) (``flow.colour``; None: of each channel), and in the joint stage
    the network's raw output F with its regression target (else None), in that basis."""
    mu: torch.Tensor
    x1: torch.Tensor
    spread: torch.Tensor | None = None
    out: torch.Tensor | None = None
    target: torch.Tensor | None = None
    basis: torch.Tensor | None = None


def flow_matching_loss(output, residual_std, mu_weight=1.0):
    """The loss of a ``FlowOutput``: the MSE of F against its target (x1 - mu - c_skip (x_t -
    mu)) / c_out (the flow-matching loss on the velocity, weighted per time so every t carries
    equal weight; joint stage only), plus ``mu_weight`` x the MSE of the estimate mu in units of
    the residual's spread (divided by residual_std^2), plus, with a spread, the Gaussian negative
    log-likelihood of x1 - mu (mu held fixed; its components in the output's colour basis) under it."""
    o, r = output, residual_std
    loss = mu_weight * F.mse_loss(o.mu, o.x1) / r ** 2
    if o.spread is not None:
        sigma = r * o.spread
        residual = o.x1 - o.mu.detach()
        residual = residual if o.basis is None else residual @ o.basis.to(residual)
        loss = loss + (sigma.log() + 0.5 * (residual / sigma) ** 2).mean() - math.log(r) - 0.5
    if o.out is not None:
        loss = loss + F.mse_loss(o.out, o.target)
    return loss
