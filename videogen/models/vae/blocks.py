"""Building blocks of the video VAE: per-pixel norm, causal ResNet block, down- and upsampling.

Every block is causal in time and takes the optional :class:`CausalCache` of chunked processing.
Normalisation is over channels only (per frame, per pixel): a norm with statistics over time would
let later frames change earlier ones and make chunked results differ; one with statistics over space
would make tiled results differ. An RMS norm over channels does neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from videogen.models.vae.causal_conv import CausalCache, CausalConv3d


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channel axis of a (B, C, T, H, W) tensor, with a learned per-channel gain."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T, H, W); statistics over C only
        rms = x.pow(2).mean(dim=1, keepdim=True).add(self.eps).rsqrt()
        return x * rms * self.weight.view(1, -1, 1, 1, 1)


class ResBlock(nn.Module):
    """norm -> SiLU -> causal conv, twice, plus a (1x1x1 projected) skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = ChannelRMSNorm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = ChannelRMSNorm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # x: (B, C_in, T, H, W) -> (B, C_out, T, H, W)
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W, and T too when ``temporal`` (1 + 2k frames -> 1 + k, frame 0 kept on its own)."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.conv = CausalConv3d(in_channels, out_channels, 3, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, C_out, 1 + (T - 1) / 2 or T, H / 2, W / 2)
        return self.conv(x, cache)


class Upsample(nn.Module):
    """Double H and W (nearest + conv), and T too when ``temporal`` (1 + k frames -> 1 + 2k).

    Time is upsampled depth-to-time: a causal conv makes two frames' worth of channels per frame
    and they are unfolded in time; the clip's first latent frame gives the single frame 0, so the
    extra frame it makes is dropped on the first chunk. The conv starts as "repeat each frame twice".
    """

    def __init__(self, in_channels: int, out_channels: int, temporal: bool) -> None:
        super().__init__()
        self.time_conv = CausalConv3d(in_channels, 2 * in_channels, 3) if temporal else None
        if self.time_conv is not None:
            self._init_as_repeat(self.time_conv.conv)
        self.conv = CausalConv3d(in_channels, out_channels, 3)

    @staticmethod
    @torch.no_grad()
    def _init_as_repeat(conv: nn.Conv3d) -> None:
        c = conv.in_channels
        conv.weight.zero_()
        conv.bias.zero_()
        eye = torch.eye(c)
        # output channel (c, s) reads input channel c at the newest tap, spatial centre
        w = rearrange(conv.weight, "(c s) i t h w -> c s i t h w", s=2)
        w[:, 0, :, -1, 1, 1] = eye
        w[:, 1, :, -1, 1, 1] = eye

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # (B, C, T, H, W) -> (B, C_out, 1 + 2 (T - 1) or T, 2 H, 2 W)
        if self.time_conv is not None:
            first_chunk = cache is None or cache.first_call(self)
            x = self.time_conv(x, cache)
            x = rearrange(x, "b (c s) t h w -> b c (t s) h w", s=2)
            if first_chunk:
                x = x[:, :, 1:]  # latent frame 0 decodes to the single frame 0
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return self.conv(x, cache)
