"""The transformer baseline encoder (LA-INR / Trans-INR style): the same pre-norm residual blocks
and final LayerNorm as ``BiMambaStack``, with multi-head self-attention (torch's
scaled_dot_product_attention) as the mixer. Self-attention is permutation-equivariant, so LPs
interleaved in the sequence are equivalent to LPs appended after the tokens, unless ``rope`` rotates
queries and keys by their position in the sequence (rotary position encoding, RoFormer)."""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ginr_common.mamba import EncoderBlock


def rotary(x, base=10000.0):
    """Rotary position encoding of (..., L, c) by the positions 0..L-1: channel pairs (2i, 2i+1) rotated
    by the angle position / base^(2i / c), so that the dot product of a rotated query and key depends
    on their positions only through their difference."""
    L, c = x.shape[-2:]
    if c % 2:
        raise ValueError(f"rotary encoding needs an even channel count per head, got {c}")
    freq = base ** -(torch.arange(0, c, 2, dtype=x.dtype, device=x.device) / c)
    angle = torch.arange(L, dtype=x.dtype, device=x.device)[:, None] * freq          # (L, c / 2)
    cos, sin = angle.cos(), angle.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, rope=False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads, self.rope = heads, rope
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = rearrange(self.qkv(x), "b l (t h c) -> t b h l c", t=3, h=self.heads)
        if self.rope:
            q, k = rotary(q), rotary(k)
        return self.out(rearrange(F.scaled_dot_product_attention(q, k, v), "b h l c -> b l (h c)"))


class TransformerStack(nn.Module):
    """depth x EncoderBlock(SelfAttention), then a final LayerNorm; (B, L, dim) -> (B, L, dim)."""

    def __init__(self, dim, depth, heads=None, mlp_ratio=4, rope=False):
        super().__init__()
        heads = heads or max(1, dim // 32)
        self.blocks = nn.ModuleList(EncoderBlock(dim, SelfAttention(dim, heads, rope), mlp_ratio=mlp_ratio)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)
