"""DiT building blocks: timestep embedding, the adaLN-Zero transformer block, the final layer.

Conditioning (the timestep embedding) is per clip, (B, S, D) for S clips per row;
each block computes its modulation per clip and gathers it to the tokens of that
clip with ``segment_ids`` (B, N), so packed rows of clips at different noise levels
share one code path with the padded batch (S = 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from videogen.models.dit.attention import CrossAttention, Layout, SelfAttention


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


def per_token(per_clip: Tensor, segment_ids: Tensor) -> Tensor:
    """Gather (B, S, F) per-clip features to (B, N, F) per token; padding tokens (id < 0) take clip 0's.
    With one clip per row (S = 1) the (B, 1, F) features broadcast instead: the same values without
    the gather (and its scatter in backward), which cost ~8% of a training step."""
    if per_clip.shape[1] == 1:
        return per_clip
    index = segment_ids.clamp(min=0)[..., None].expand(-1, -1, per_clip.shape[-1])  # (B, N, F)
    return torch.gather(per_clip, 1, index)


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features of 1000 t (DDPM/DiT convention) -> MLP -> (..., D)."""

    def __init__(self, dim: int, frequency_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[..., None] * freqs  # (..., frequency_dim / 2), float32 even in a bf16 model
        features = torch.cat([args.cos(), args.sin()], dim=-1)  # (..., frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class DiTBlock(nn.Module):
    """adaLN-Zero self-attention + text attention + MLP (DiT, PixArt-alpha).

    ``text_attention='cross'``: a separate cross-attention to the text tokens after self-attention;
    ``'joint'``: the text keys/values join the self-attention's (one softmax, no cross-attention
    layer: about 2 N D^2 fewer multiply-adds per block). The modulation's linear is zero-initialised,
    so gates start at 0 and every block is the identity at init; the cross-attention output
    projection is zero-initialised too, for the same reason.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True, text_attention: str = "cross"
    ) -> None:
        super().__init__()
        joint = text_attention == "joint"
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qk_norm, text_keys=joint)
        self.norm2 = None if joint else nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = None if joint else CrossAttention(dim, num_heads, qk_norm)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.zero_init_()

    def zero_init_(self) -> None:
        for layer in (self.adaLN_modulation[1], *([self.cross_attn.proj] if self.cross_attn is not None else [])):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        x: Tensor,  # (B, N, D) tokens
        c: Tensor,  # (B, S, D) timestep embedding per clip
        segment_ids: Tensor,  # (B, N) clip of each token
        rope: tuple[Tensor, Tensor],  # cos, sin (B, 1, N, head_dim / 2)
        self_layout: Layout,  # None, a (B, 1, 1, K) key mask or the pack's Segments; joint: over M + N keys
        text: Tensor,  # (B, M, D) projected text tokens of all clips in the row
        cross_layout: Layout,  # (B, 1, 1, M) key mask or Segments; None for joint attention
    ) -> Tensor:
        # the modulation adds in the residual's dtype (fp32 under autocast: the linear's bf16 output is upcast)
        mod = per_token(self.adaLN_modulation(c).to(x.dtype), segment_ids)  # (B, N, 6 D)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # each (B, N, D)
        h = modulate(self.norm1(x), shift1, scale1)
        if self.cross_attn is None:
            x = x + gate1 * self.attn(h, rope, self_layout, text)
        else:
            x = x + gate1 * self.attn(h, rope, self_layout)
            x = x + self.cross_attn(self.norm2(x), text, cross_layout)
        return x + gate2 * self.mlp(modulate(self.norm3(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN + linear to patch values (B, N, D) -> (B, N, out_dim); zero-initialised, so the DiT outputs 0 at init."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)
        self.zero_init_()

    def zero_init_(self) -> None:
        for layer in (self.adaLN_modulation[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c: Tensor, segment_ids: Tensor) -> Tensor:
        shift, scale = per_token(self.adaLN_modulation(c).to(x.dtype), segment_ids).chunk(2, dim=-1)  # each (B, N, D)
        return self.linear(modulate(self.norm(x), shift, scale))
