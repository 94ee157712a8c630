"""Bottlenecks between encoder and decoder, injected into the autoencoder.

A bottleneck takes the encoder output ``h`` (B, in_channels(latent_channels), t, h, w) and returns
a latent distribution with ``sample()``, ``mode()`` and ``kl()`` (per sample, shape (B,)), so the
training step is the same for every bottleneck.
"""

from __future__ import annotations

import torch
from torch import nn

from videogen.models.configurable import Configurable


class DiagonalGaussianPosterior:
    """N(mean, exp(logvar)) per latent element; KL is against N(0, I)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        self.mean = mean
        self.logvar = logvar

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over (C, t, h, w): shape (B,)."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(dim=1)


class DiagonalGaussian(Configurable, nn.Module):
    """KL bottleneck: the encoder gives mean and log-variance, 2 x latent channels.

    Args:
        logvar_min: lower clamp on the log-variance (numerical safety, as in LDM).
        logvar_max: upper clamp on the log-variance.
    """

    def __init__(self, logvar_min: float = -30.0, logvar_max: float = 20.0) -> None:
        super().__init__()
        self.logvar_min, self.logvar_max = logvar_min, logvar_max

    def in_channels(self, latent_channels: int) -> int:
        return 2 * latent_channels

    def forward(self, h: torch.Tensor) -> DiagonalGaussianPosterior:
        # h: (B, 2 C, t, h, w) -> mean, logvar: (B, C, t, h, w)
        mean, logvar = h.chunk(2, dim=1)
        return DiagonalGaussianPosterior(mean, logvar.clamp(self.logvar_min, self.logvar_max))


class QuantizedLatent:
    """FSQ output: deterministic, so ``sample() == mode()`` and ``kl()`` is zero."""

    def __init__(self, codes: torch.Tensor, indices: torch.Tensor) -> None:
        self.codes = codes  # (B, C, t, h, w), values on the grid in [-1, 1], straight-through gradient
        self.indices = indices  # (B, t, h, w) int64 code ids in [0, prod(levels))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.codes

    def mode(self) -> torch.Tensor:
        return self.codes

    def kl(self) -> torch.Tensor:
        return self.codes.new_zeros(self.codes.shape[0])


class FSQ(Configurable, nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023): channel i is rounded to ``levels[i]`` values.

    Each channel is bounded with a tanh to ``levels[i]`` integer steps, rounded with a
    straight-through gradient and rescaled to [-1, 1]. The codebook is implicit, of size
    ``prod(levels)``; no codebook loss and no collapse.

    Args:
        levels: quantisation levels per latent channel (latent_channels = len(levels)),
            e.g. (8, 5, 5, 5) for a 1000-entry codebook; each >= 2.
    """

    def __init__(self, levels: tuple[int, ...] = (8, 5, 5, 5)) -> None:
        super().__init__()
        if len(levels) == 0 or any(int(n) < 2 for n in levels):
            raise ValueError(f"FSQ: levels={levels} must be a non-empty tuple of ints >= 2")
        self.levels = tuple(int(n) for n in levels)
        lv = torch.tensor(self.levels, dtype=torch.float64)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64), dim=0)
        self.register_buffer("_levels", lv.float(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def codebook_size(self) -> int:
        return int(torch.tensor(self.levels).prod())

    def in_channels(self, latent_channels: int) -> int:
        if latent_channels != len(self.levels):
            raise ValueError(
                f"FSQ levels={self.levels} quantise {len(self.levels)} channels but the autoencoder has "
                f"latent_channels={latent_channels}: set latent_channels to len(levels)"
            )
        return latent_channels

    def _per_channel(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, 1, 1, 1)  # (C,) -> broadcast over (B, C, t, h, w)

    def bound(self, h: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """Squash channel i to (-(L_i - 1) / 2, (L_i - 1) / 2), shifted so rounding gives L_i values."""
        levels = self._per_channel(self._levels).to(h.dtype)
        half_l = (levels - 1) * (1 + eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0).to(h.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(h + shift) * half_l - offset

    def forward(self, h: torch.Tensor) -> QuantizedLatent:
        # h: (B, C, t, h, w) -> codes in [-1, 1] on the grid, same shape
        bounded = self.bound(h)
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through estimator
        half_width = self._per_channel(torch.div(self._levels, 2, rounding_mode="floor")).to(h.dtype)
        codes = rounded / half_width
        return QuantizedLatent(codes, self.codes_to_indices(codes))

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C, t, h, w) grid values in [-1, 1] -> (B, t, h, w) integer ids."""
        half_width = self._per_channel(torch.div(self._levels, 2, rounding_mode="floor"))
        digits = (codes.detach().float() * half_width + half_width).round().long()  # 0 .. L_i - 1
        return (digits * self._per_channel(self._basis)).sum(dim=1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, t, h, w) integer ids -> (B, C, t, h, w) grid values in [-1, 1]."""
        levels = self._per_channel(self._levels).long()
        digits = (indices.unsqueeze(1) // self._per_channel(self._basis)) % levels  # (B, C, t, h, w)
        half_width = torch.div(levels, 2, rounding_mode="floor")
        return (digits - half_width).float() / half_width
