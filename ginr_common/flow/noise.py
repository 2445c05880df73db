"""The noise field: a Gaussian process of the coordinate, so renders at every size read one field."""
import math

import torch


def coordinate_noise(coords, size, channels, generator=None, length=0.5, features=512):
    """z at coords (B, Q, d): per image a draw of a Gaussian process with a squared-exponential
    kernel of ``length`` pixels of the ``size`` grid (``features`` random Fourier features;
    marginally close to N(0, 1)). The field is fixed by the generator, so every resolution reads
    the same field."""
    B, d = coords.shape[0], coords.shape[-1]
    w = torch.randn(B, features, d, generator=generator) / length
    b = torch.rand(B, features, generator=generator) * 2 * math.pi
    a = torch.randn(B, features, channels, generator=generator)
    w, b, a = (t.to(coords.device, torch.float32) for t in (w, b, a))
    u = coords.float() * torch.tensor(size, device=coords.device, dtype=torch.float32)
    phase = torch.einsum("bqd,bfd->bqf", u, w) + b[:, None]
    return (math.sqrt(2 / features) * torch.cos(phase) @ a).to(coords.dtype)
