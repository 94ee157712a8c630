"""``FrameEncoder``: a few frames of a clip -> visual tokens for the caption decoder.

A clip ``(B, C, T, H, W)`` (pixels in [-1, 1], or VAE latents) is sampled at ``num_frames`` evenly
spaced frames. Each sampled frame is stacked with its difference to the previous sampled frame and
the clip's last-minus-first difference, so motion (and its direction) is visible to a per-frame CNN.
Colour is kept: there is no input normalisation and no norm layer inside the CNN (He-initialised,
so the signal keeps its scale through the layers). Each frame becomes
``grid`` average-pooled tokens plus one max-pooled token, with a learned grid position and a learned
time embedding (which sampled frame); one more token carries the clip's aspect ratio.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def sample_indices(num_frames: int, count: int, device: torch.device | None = None) -> Tensor:
    """``count`` evenly spaced frame indices over ``num_frames`` (first and last included; repeats if short)."""
    if count == 1:
        return torch.zeros(1, dtype=torch.long, device=device)
    return torch.linspace(0, num_frames - 1, count, device=device).round().long()


class FrameEncoder(nn.Module):
    def __init__(self, in_channels: int = 3, dim: int = 192, channels: tuple[int, ...] = (32, 64, 128),
                 num_frames: int = 8, grid: tuple[int, int] = (4, 4), frame_diffs: bool = True,
                 stem_stride: int = 1):
        super().__init__()
        self.num_frames, self.grid, self.frame_diffs = num_frames, tuple(grid), frame_diffs
        c_in = in_channels * (3 if frame_diffs else 1)
        layers: list[nn.Module] = [nn.Conv2d(c_in, channels[0], 3, stride=stem_stride, padding=1), nn.GELU()]
        prev = channels[0]
        for c in channels:  # each stage halves the resolution
            layers += [nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(c, c, 3, padding=1), nn.GELU()]
            prev = c
        self.cnn = nn.Sequential(*layers)
        for m in self.cnn:  # He init, zero bias: without norm layers the default init shrinks the signal at every
            if isinstance(m, nn.Conv2d):  # layer, until all clips give the same tokens and the decoder sees no video
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.proj = nn.Linear(prev, dim)
        self.grid_pos = nn.Parameter(torch.randn(grid[0] * grid[1] + 1, dim) * 0.02)  # +1: the max-pooled token
        self.time_pos = nn.Parameter(torch.randn(num_frames, dim) * 0.02)
        self.aspect = nn.Linear(1, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, video: Tensor) -> Tensor:
        b, _, t, h, w = video.shape
        x = video[:, :, sample_indices(t, self.num_frames, video.device)]  # (B, C, F, H, W)
        if self.frame_diffs:
            prev = torch.cat([x[:, :, :1], x[:, :, :-1]], dim=2)
            span = (x[:, :, -1:] - x[:, :, :1]).expand_as(x)
            x = torch.cat([x, x - prev, span], dim=1)  # (B, 3C, F, H, W)
        f = x.shape[2]
        feats = self.cnn(rearrange(x, "b c f h w -> (b f) c h w"))  # (BF, C', h', w')
        pooled = F.adaptive_avg_pool2d(feats, self.grid).flatten(2)  # (BF, C', gh*gw)
        peak = feats.amax(dim=(2, 3))[..., None]  # (BF, C', 1)
        tokens = self.proj(torch.cat([pooled, peak], dim=2).transpose(1, 2)) + self.grid_pos  # (BF, G+1, D)
        tokens = rearrange(tokens, "(b f) g d -> b f g d", b=b) + self.time_pos[:f, None]
        tokens = rearrange(tokens, "b f g d -> b (f g) d")
        aspect = self.aspect(torch.full((b, 1, 1), math.log(w / h), device=video.device, dtype=tokens.dtype))
        return self.norm(torch.cat([tokens, aspect], dim=1))  # (B, F*(G+1)+1, D)
