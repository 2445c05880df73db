"""The noise field: a Gaussian process of the coordinate, so renders at every size read one field."""
import math

import torch


def coordinate_noise(coords, size, channels, generator=None, length=0.5, features=512, channel_corr=0.0):
    """z at coords (B, Q, d): per image a draw of a Gaussian process with a squared-exponential
    kernel of ``length`` pixels of the ``size`` grid (``features`` random Fourier features;
    marginally close to N(0, 1)), its channels correlated by ``channel_corr`` (each pair; 0:
    independent channels, colour grain; near 1: grain of brightness alone). The field is fixed by
    the generator, so every resolution reads the same field."""
    if not 0 <= channel_corr < 1:
        raise ValueError(f"channel_corr must be in [0, 1), got {channel_corr}")
    B, d = coords.shape[0], coords.shape[-1]
    w = torch.randn(B, features, d, generator=generator) / length
    b = torch.rand(B, features, generator=generator) * 2 * math.pi
    a = torch.randn(B, features, channels, generator=generator)
    if channel_corr and channels > 1:   # unit variance per channel, correlation channel_corr between any two
        shared = torch.randn(B, features, 1, generator=generator)
        a = math.sqrt(1 - channel_corr) * a + math.sqrt(channel_corr) * shared
    w, b, a = (t.to(coords.device, torch.float32) for t in (w, b, a))
    u = coords.float() * torch.tensor(size, device=coords.device, dtype=torch.float32)
    phase = torch.einsum("bqd,bfd->bqf", u, w) + b[:, None]
    return (math.sqrt(2 / features) * torch.cos(phase) @ a).to(coords.dtype)


def noise_for(config, coords, generator=None):
    """The noise field of a FlowConfig at coords (B, Q, d): ``coordinate_noise`` with its settings."""
    c = config
    return coordinate_noise(coords, c.input_size, c.in_channels, generator, c.noise_length, c.noise_features,
                            c.noise_channel_corr)
