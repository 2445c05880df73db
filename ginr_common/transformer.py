"""The transformer baseline encoder (LA-INR / Trans-INR style): the same pre-norm residual blocks
and final LayerNorm as ``BiMambaStack``, with multi-head self-attention (torch's
scaled_dot_product_attention) as the mixer. Self-attention is permutation-equivariant, so LPs
interleaved in the sequence are equivalent to LPs appended after the tokens."""
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ginr_common.mamba import EncoderBlock


class SelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = rearrange(self.qkv(x), "b l (t h c) -> t b h l c", t=3, h=self.heads)
        return self.out(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l c -> b l (h c)"))


class TransformerStack(nn.Module):
    """depth x EncoderBlock(SelfAttention), then a final LayerNorm; (B, L, dim) -> (B, L, dim)."""

    def __init__(self, dim, depth, heads=None, mlp_ratio=4):
        super().__init__()
        heads = heads or max(1, dim // 32)
        self.blocks = nn.ModuleList(EncoderBlock(dim, SelfAttention(dim, heads), mlp_ratio=mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)
