"""ginr_common: the package behind the Mamba-GINR notebooks.

Dependencies flow one way: scan <- conv <- mamba <- encoder <- model / flow <- checkpoints <- configs
<- tasks <- train / evaluate; fourier, tokens, metrics, baselines, inputs and data are leaves;
decoders depend on fourier (and the transformer block for SCENT's latent processor); viz depends
on metrics.
"""
from ginr_common.checkpoints import (describe_pretrained, from_pretrained, load_checkpoint, load_pretrained,
                                     pretrained_manifest, save_checkpoint, save_pretrained)
from ginr_common.decoders import DECODERS, LAINRConfig, LocalConfig, NeighbourConfig, SCENTConfig
from ginr_common.encoder import MambaEncoder, PatchTokenizer
from ginr_common.flow import FlowConfig, SparseFieldFlow
from ginr_common.fourier import FourierFeatures, GaussianFourierFeatures, make_grid
from ginr_common.mamba import BiMamba, BiMambaStack, EncoderBlock, Mamba
from ginr_common.model import GINRConfig, MambaGINR, SimpleMambaGINR, render_image
from ginr_common.scan import selective_scan, selective_scan_ref
from ginr_common.tokens import ImplicitSequentialBias, SequentialBiasVisualization, lp_diversity

__version__ = "0.2.0"
__all__ = [
    "BiMamba", "BiMambaStack", "DECODERS", "describe_pretrained", "EncoderBlock", "FlowConfig", "FourierFeatures", "GINRConfig",
    "GaussianFourierFeatures", "ImplicitSequentialBias", "LAINRConfig", "LocalConfig", "Mamba", "MambaEncoder", "MambaGINR",
    "NeighbourConfig", "PatchTokenizer", "SCENTConfig", "SequentialBiasVisualization", "SimpleMambaGINR", "SparseFieldFlow",
    "from_pretrained", "load_checkpoint", "load_pretrained", "lp_diversity", "make_grid", "pretrained_manifest",
    "render_image", "save_checkpoint", "save_pretrained", "selective_scan", "selective_scan_ref",
]
