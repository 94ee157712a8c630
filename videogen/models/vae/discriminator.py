"""3D patch-GAN discriminator (pix2pix / taming NLayerDiscriminator, with 3D convolutions).

Judges overlapping spatio-temporal patches of a (B, C, T, H, W) video as real or fake; returns one
logit per patch. Not causal (it only sees training clips). Works from 1-frame videos up.
"""

from __future__ import annotations

import torch
from torch import nn

from videogen.models.configurable import Configurable


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)


class PatchDiscriminator3D(Configurable, nn.Module):
    """Conv(4x4 spatial, 3 temporal) stack, halving H, W and T ``num_layers`` times.

    Args:
        in_channels: video channels.
        base_channels: width of the first layer; doubled per layer up to 8x.
        num_layers: strided layers (the patch size grows with it: 3 layers ~ 70x70 pixel patches).
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, base_channels, (3, 4, 4), stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        ch = base_channels
        for i in range(1, num_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv3d(ch, out, (3, 4, 4), stride=stride, padding=1, bias=False),
                _norm(out),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        layers.append(nn.Conv3d(ch, 1, (3, 4, 4), stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv3d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T, H, W) -> logits (B, 1, T', H', W'), one per spatio-temporal patch
        return self.net(x)
