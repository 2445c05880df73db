"""ginr_common: the package behind the Mamba-GINR notebooks.

scan (selective scan) <- mamba (Mamba, BiMamba, encoder blocks) <- encoder (tokenizer + LPs + stack);
fourier and tokens are leaves.
"""
from ginr_common.encoder import MambaEncoder, PatchTokenizer
from ginr_common.fourier import FourierFeatures, GaussianFourierFeatures, make_grid
from ginr_common.mamba import BiMamba, BiMambaStack, EncoderBlock, Mamba
from ginr_common.scan import selective_scan, selective_scan_ref
from ginr_common.tokens import ImplicitSequentialBias, SequentialBiasVisualization, lp_diversity

__version__ = "0.1.0"
__all__ = [
    "BiMamba", "BiMambaStack", "EncoderBlock", "FourierFeatures", "GaussianFourierFeatures",
    "ImplicitSequentialBias", "Mamba", "MambaEncoder", "PatchTokenizer", "SequentialBiasVisualization",
    "lp_diversity", "make_grid", "selective_scan", "selective_scan_ref",
]
