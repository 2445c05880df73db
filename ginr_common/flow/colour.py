"""The colour basis the bridge runs in (``FlowConfig.colour_basis``): the estimate and the field
are rotated into it before the noise, the spread and the flow's output act on them, and a draw is
rotated back. In RGB every channel gets its own noise and spread, so a draw's errors are as
likely to change a pixel's colour as its brightness, where a photograph's are mostly brightness;
in the opponent basis the spread of each of brightness, red-green and yellow-blue is learned apart."""
import math

import torch

BASES = ("rgb", "opponent")


def basis_matrix(name, channels):
    """The basis (C, C), orthonormal, its columns the basis vectors: y = x @ P, x = y @ P.T.
    ``"rgb"``: the identity (any number of channels); ``"opponent"`` (3 channels): brightness
    (1, 1, 1) / sqrt(3), red-green (1, -1, 0) / sqrt(2), yellow-blue (1, 1, -2) / sqrt(6)."""
    if name not in BASES:
        raise ValueError(f"colour_basis must be one of {BASES}, got {name!r}")
    if name == "rgb":
        return torch.eye(channels)
    if channels != 3:
        raise ValueError(f"colour_basis='opponent' needs 3 channels (RGB), got in_channels={channels}")
    return torch.tensor([[1 / math.sqrt(3), 1 / math.sqrt(2), 1 / math.sqrt(6)],
                         [1 / math.sqrt(3), -1 / math.sqrt(2), 1 / math.sqrt(6)],
                         [1 / math.sqrt(3), 0.0, -2 / math.sqrt(6)]])
