"""The flow model's configuration (its defaults: the shipped cpu model of notebook 4)."""
from dataclasses import dataclass

from ginr_common.flow.colour import basis_matrix


@dataclass
class FlowConfig:
    name: str = "flow_sparse"
    input_size: tuple = (32, 32)   # the base grid: observations are pixels of an image this size
    in_channels: int = 3
    observe_frac: float = 0.2
    dim: int = 64                  # observation encoder width
    depth: int = 2                 # observation encoder BiMamba blocks
    num_lp: int = 32
    d_state: int = 16
    coord_freqs: int = 8
    max_freq: float = 16.0         # top frequency of the coordinate features
    hidden: int = 64               # query width
    neighbours: int = 8            # observations each query reads
    mixer_depth: int = 2           # BiMamba blocks over the queries at every step
    guide: str = "linear"          # the guide mu corrects: "linear" (piecewise-linear interpolation over the
                                   # observations' Delaunay triangles) or "normconv" (normalised convolution)
    guide_sigma: float = 1.0       # normalised-convolution guide (and the density feature): Gaussian width, base pixels
    noise_scale: float = 0.08      # x0 = mu + noise_scale * z (values in [-1, 1])
    residual_std: float = 0.15     # assumed spread of x1 - mu, for the preconditioning (bridge.scalings)
    noise_length: float = 0.5      # correlation length of the noise field, base pixels
    noise_features: int = 512
    noise_channel_corr: float = 0.0  # correlation of the noise field's channels (0: independent)
    colour_basis: str = "rgb"      # the basis the noise, the spread and the flow's output act in (flow.colour): "rgb"
                                   # or "opponent" (brightness, red-green, yellow-blue: colour grain is spread apart)
    mu_weight: float = 4.0         # weight of the MSE on mu in the training loss
    grid_blocks: int = 6           # residual 3x3 convolution blocks of the grid refiner (0: none)
    grid_width: int = 64           # channels of the grid refiner
    local_spread: bool = True      # the bridge's noise and the preconditioning scale per query by a spread the grid
                                   # refiner predicts (trained by the Gaussian likelihood of x1 - mu): samples vary
                                   # where the estimate is unsure and stay flat where it is sure (needs grid_blocks)
    chunk: int = 4096              # queries per chunk when reading the observations

    def __post_init__(self):
        self.input_size = tuple(self.input_size)
        if not 0 < self.observe_frac < 1:
            raise ValueError(f"observe_frac must be in (0, 1), got {self.observe_frac}")
        for k in ("neighbours", "noise_features", "hidden", "dim"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if not 0 <= self.noise_channel_corr < 1:
            raise ValueError(f"noise_channel_corr must be in [0, 1), got {self.noise_channel_corr}")
        basis_matrix(self.colour_basis, self.in_channels)   # names a bad basis or channel count
        if self.guide not in ("normconv", "linear"):
            raise ValueError(f"guide must be 'normconv' or 'linear', got {self.guide!r}")
        if self.grid_blocks < 0 or self.grid_width < 1:
            raise ValueError(f"grid_blocks must be >= 0 and grid_width >= 1, got {self.grid_blocks} and "
                             f"{self.grid_width}")
        if self.grid_blocks and len(self.input_size) not in (2, 3):
            raise ValueError(f"the grid refiner (grid_blocks > 0) needs a 2-d or 3-d input_size, got "
                             f"{self.input_size}")
        if self.local_spread and not self.grid_blocks:
            raise ValueError("local_spread needs the grid refiner (grid_blocks > 0), got grid_blocks=0")
        if self.mixer_depth < 0:
            raise ValueError(f"mixer_depth must be >= 0 (0: no mixing of the queries), got {self.mixer_depth}")
