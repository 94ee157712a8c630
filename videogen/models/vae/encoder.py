"""Causal video encoder: (B, C, T, H, W) -> (B, out_channels, 1 + (T - 1) / tc, H / sc, W / sc)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videogen.models.vae.blocks import ChannelRMSNorm, Downsample, ResBlock
from videogen.models.vae.causal_conv import CausalCache, CausalConv3d
from videogen.models.vae.patchify import Patchify


class Encoder(nn.Module):
    """patchify -> conv_in -> per level: ResBlocks (+ Downsample) -> mid ResBlock -> norm, SiLU, conv_out.

    Args:
        in_channels: video channels.
        out_channels: channels handed to the bottleneck (e.g. 2 x latent channels for a Gaussian).
        channels: width of each resolution level, full resolution first; level i+1 is reached by
            halving H and W, so there are ``log2(spatial compression)`` downsamplings.
        temporal_downsample: one flag per downsampling, True where T is halved too.
        num_res_blocks: ResBlocks per level.
        patch_size: pixels folded into channels per side before the first conv (1: none).
        patch_size_t: frames folded into channels before the first conv (1: none).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 8,
        channels: tuple[int, ...] = (32, 64, 128, 128),
        temporal_downsample: tuple[bool, ...] = (True, True, False),
        num_res_blocks: int = 1,
        patch_size: int = 1,
        patch_size_t: int = 1,
    ) -> None:
        super().__init__()
        if len(temporal_downsample) != len(channels) - 1:
            raise ValueError(
                f"Encoder: temporal_downsample has {len(temporal_downsample)} flags but channels={channels} "
                f"has {len(channels) - 1} downsamplings: give one flag per downsampling"
            )
        self.patchify = Patchify(patch_size, patch_size_t)
        self.conv_in = CausalConv3d(in_channels * patch_size_t * patch_size**2, channels[0], 3)
        self.blocks = nn.ModuleList()
        ch = channels[0]
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                self.blocks.append(ResBlock(ch, width))
                ch = width
            if level < len(channels) - 1:
                self.blocks.append(Downsample(ch, ch, temporal=temporal_downsample[level]))
        self.mid = ResBlock(ch, ch)
        self.norm_out = ChannelRMSNorm(ch)
        self.conv_out = CausalConv3d(ch, out_channels, 3)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # x: (B, C, T, H, W) -> (B, out_channels, 1 + (T - 1) / tc, H / sc, W / sc)
        h = self.patchify(x, cache)  # (B, C pt p p, 1 + (T - 1) / pt, H / p, W / p)
        h = self.conv_in(h, cache)
        for block in self.blocks:
            h = block(h, cache)
        h = self.mid(h, cache)
        return self.conv_out(F.silu(self.norm_out(h)), cache)
