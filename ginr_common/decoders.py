"""Decoders: LP latents (B, M, D) + query coordinates (B, Q, d) -> values (B, Q, C).
Queries never attend to each other, so memory is linear in the number of queries."""
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ginr_common.fourier import FourierFeatures


class ResidualBlock(nn.Module):
    """x + W2 GELU(W1 LayerNorm(x))."""

    def __init__(self, dim, hidden=None):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden or dim), nn.GELU(),
                                 nn.Linear(hidden or dim, dim))

    def forward(self, x):
        return x + self.net(x)


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, Q, H) to latents (B, M, D); optional additive bias
    broadcastable to (B, heads, Q, M). Returns (output, attention weights if asked)."""

    def __init__(self, dim, latent_dim, heads=2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(latent_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, latents, bias=None, return_weights=False):
        q = rearrange(self.q(x), "b q (h c) -> b h q c", h=self.heads)
        k, v = (rearrange(t, "b m (h c) -> b h m c", h=self.heads) for t in self.kv(latents).chunk(2, -1))
        if return_weights:
            logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
            w = (logits if bias is None else logits + bias).softmax(-1)
            return self.out(rearrange(w @ v, "b h q c -> b q (h c)")), w
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(rearrange(o, "b h q c -> b q (h c)")), None


class LAINRDecoder(nn.Module):
    """Fixed log-spaced Fourier features of the query -> cross-attention to the LP latents
    (added to the query features) -> ResidualBlock trunk -> linear head."""

    def __init__(self, latent_dim, coord_dim=2, out_dim=3, hidden=256, n_freqs=16, heads=2, n_blocks=3):
        super().__init__()
        self.ff = FourierFeatures(coord_dim, n_freqs)
        self.embed = nn.Linear(self.ff.out_dim, hidden)
        self.attn = CrossAttention(hidden, latent_dim, heads)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden, 2 * hidden) for _ in range(n_blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out_dim))

    def forward(self, latents, coords, return_attention=False):
        h = self.embed(self.ff(coords))
        a, w = self.attn(h, latents, return_weights=return_attention)
        out = self.head(self.blocks(h + a))
        return (out, w) if return_attention else out


DECODERS = {"lainr": LAINRDecoder}
