"""Axial 3D rotary position embedding (RoPE) over (t, h, w), computed from token positions.

The head dimension is split into three parts, one per axis; each part rotates
pairs of channels by ``position * theta ** (-2i / d_axis)`` (Su et al., RoFormer).
Because the angles are computed from positions, any clip length and resolution
works, including sizes never seen in training, and packed clips simply carry their
own positions. The rotated dot product q·k depends only on the position offset.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def default_axes_dim(head_dim: int) -> tuple[int, int, int]:
    """Split head_dim into (t, h, w) parts, each even, h = w = 3/8 of it (64 -> (16, 24, 24))."""
    pairs = head_dim // 2
    hw = round(pairs * 3 / 8)
    return (2 * (pairs - 2 * hw), 2 * hw, 2 * hw)


class RotaryEmbedding3D(nn.Module):
    """Cos/sin tables for axial 3D RoPE from positions (..., N, 3) -> each (..., N, head_dim / 2)."""

    def __init__(self, head_dim: int, theta: float = 10000.0, axes_dim: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        axes_dim = tuple(axes_dim) if axes_dim is not None else default_axes_dim(head_dim)
        if sum(axes_dim) != head_dim or any(d % 2 or d <= 0 for d in axes_dim):
            raise ValueError(
                f"RoPE axes_dim={axes_dim} must be three positive even numbers summing to the head dim "
                f"{head_dim} (hidden_size / num_heads of the DiT init args): change rope_axes_dim or num_heads."
            )
        self.head_dim = head_dim
        self.axes_dim = axes_dim
        self.theta = theta

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        # frequencies are rebuilt in float32 each call (a few dozen numbers), so casting the model
        # to bf16 cannot round them and they never enter the state dict
        device = positions.device
        angles = torch.cat(
            [
                positions[..., axis, None].float()
                * self.theta ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
                for axis, d in enumerate(self.axes_dim)
            ],
            dim=-1,
        )  # (..., N, head_dim / 2): t pairs, then h pairs, then w pairs
        return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of x (B, heads, N, head_dim) by tables (B, 1, N, head_dim / 2), in float32.

    One complex multiply per pair ((x1 + i x2) * (cos + i sin)): the same numbers as the real-valued
    rotation, with fewer kernels and copies forward and backward."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # (B, heads, N, head_dim / 2)
    rotated = pairs * torch.complex(cos, sin)
    return torch.view_as_real(rotated).flatten(-2).type_as(x)  # (B, heads, N, head_dim)
