"""Causal space-time patchify (space/time-to-depth) at the VAE's input and its inverse at the output.

Folding ``patch_t x patch x patch`` pixels into channels before the first conv makes every layer run
on fewer, wider positions (as LTX-Video's VAE does spatially): the cheap way to compress on a CPU.
In time it keeps the causal convention: frame 0 is padded with ``patch_t - 1`` copies of itself, so
1 + k * patch_t frames fold into 1 + k positions and frame 0 stays on its own.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from videogen.models.vae.causal_conv import CausalCache


class _Fold(nn.Module):
    """``patch_t x patch x patch`` pixels <-> channels; no parameters."""

    def __init__(self, patch: int = 1, patch_t: int = 1) -> None:
        super().__init__()
        self.patch, self.patch_t = patch, patch_t


class Patchify(_Fold):
    """(B, C, 1 + k pt, H, W) -> (B, C pt p p, 1 + k, H / p, W / p); no parameters."""

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        first_chunk = cache is None or cache.first_call(self)
        if first_chunk and self.patch_t > 1:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.patch_t - 1, -1, -1), x], dim=2)
        # (B, C, (t pt), (h p), (w p)) -> (B, (C pt p p), t, h, w)
        return rearrange(x, "b c (t pt) (h ph) (w pw) -> b (c pt ph pw) t h w",
                         pt=self.patch_t, ph=self.patch, pw=self.patch)


class Unpatchify(_Fold):
    """(B, C pt p p, 1 + k, h, w) -> (B, C, 1 + k pt, h p, w p); inverse of :class:`Patchify`."""

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        first_chunk = cache is None or cache.first_call(self)
        # (B, (C pt p p), t, h, w) -> (B, C, (t pt), (h p), (w p))
        x = rearrange(x, "b (c pt ph pw) t h w -> b c (t pt) (h ph) (w pw)",
                      pt=self.patch_t, ph=self.patch, pw=self.patch)
        return x[:, :, self.patch_t - 1 :] if first_chunk else x
