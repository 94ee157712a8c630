"""Causal video decoder: (B, in_channels, t, h, w) -> (B, C, 1 + (t - 1) tc, h sc, w sc)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from videogen.models.vae.blocks import ChannelRMSNorm, ResBlock, Upsample
from videogen.models.vae.causal_conv import CausalCache, CausalConv3d
from videogen.models.vae.patchify import Unpatchify


class Decoder(nn.Module):
    """conv_in -> mid ResBlock -> per level, lowest resolution first: ResBlocks (+ Upsample) -> conv_out
    -> unpatchify.

    Args:
        in_channels: latent channels.
        out_channels: video channels.
        channels: width of each resolution level, full resolution first (the encoder's order);
            ``len(channels) - 1`` upsamplings each double H and W.
        temporal_upsample: one flag per upsampling in the encoder's order (full resolution first),
            True where T is doubled too; mirrors the encoder's ``temporal_downsample``.
        num_res_blocks: ResBlocks per level.
        patch_size: pixels per side unfolded from channels after the last conv (the encoder's).
        patch_size_t: frames unfolded from channels after the last conv (the encoder's).
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        channels: tuple[int, ...] = (32, 64, 128, 128),
        temporal_upsample: tuple[bool, ...] = (True, True, False),
        num_res_blocks: int = 1,
        patch_size: int = 1,
        patch_size_t: int = 1,
    ) -> None:
        super().__init__()
        if len(temporal_upsample) != len(channels) - 1:
            raise ValueError(
                f"Decoder: temporal_upsample has {len(temporal_upsample)} flags but channels={channels} "
                f"has {len(channels) - 1} upsamplings: give one flag per upsampling"
            )
        ch = channels[-1]
        self.conv_in = CausalConv3d(in_channels, ch, 3)
        self.mid = ResBlock(ch, ch)
        self.blocks = nn.ModuleList()
        for level in reversed(range(len(channels))):
            for _ in range(num_res_blocks):
                self.blocks.append(ResBlock(ch, channels[level]))
                ch = channels[level]
            if level > 0:
                self.blocks.append(Upsample(ch, channels[level - 1], temporal=temporal_upsample[level - 1]))
                ch = channels[level - 1]
        self.norm_out = ChannelRMSNorm(ch)
        self.conv_out = CausalConv3d(ch, out_channels * patch_size_t * patch_size**2, 3)
        self.unpatchify = Unpatchify(patch_size, patch_size_t)

    def forward(self, z: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        # z: (B, in_channels, t, h, w) -> (B, out_channels, 1 + (t - 1) tc, h sc, w sc)
        h = self.conv_in(z, cache)
        h = self.mid(h, cache)
        for block in self.blocks:
            h = block(h, cache)
        h = self.conv_out(F.silu(self.norm_out(h)), cache)  # (B, C pt p p, t', h', w')
        return self.unpatchify(h, cache)
