"""Training timestep sampling and the resolution/length-dependent timestep shift.

- Logit-normal sampling (SD3, Esser et al. 2024 §3.1): t = sigmoid(u), u ~ N(mean, std),
  which puts more training weight on intermediate noise levels.
- Shift (SD3 §5.3.2): t' = s t / (1 + (s - 1) t) maps [0, 1] onto itself, increasing in
  t and in s; s > 1 moves timesteps towards noise. More tokens carry more redundant
  signal, so a given noise level destroys less of it: SD3 derives s = sqrt(m / n) to
  give m tokens the uncertainty n tokens have at t. We count every latent token, over
  height, width and frames, so longer and larger clips get more noise:

      s = sqrt(num_tokens / base_tokens)

  with base_tokens = 256 (a 256x256 image through an 8x VAE and 2x2 patches): a
  17-frame 256x256 clip (5 latent frames, 1280 tokens) gets s ~ 2.24.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def logit_normal(
    n: int, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """n training timesteps t = sigmoid(N(mean, std)) in (0, 1): (n,) float32."""
    u = torch.randn(n, generator=generator, device=device) * std + mean
    return torch.sigmoid(u)


def shift_timesteps(t: Tensor, shift: float | Tensor) -> Tensor:
    """t' = s t / (1 + (s - 1) t); s = 1 is the identity, s > 1 pushes towards t = 1 (noise)."""
    return shift * t / (1 + (shift - 1) * t)


def token_shift(num_tokens: int | Tensor, base_tokens: int = 256) -> float | Tensor:
    """Shift for a clip of num_tokens latent tokens: sqrt(num_tokens / base_tokens)."""
    if isinstance(num_tokens, Tensor):
        return torch.sqrt(num_tokens.float() / base_tokens)
    return math.sqrt(num_tokens / base_tokens)


def sampling_timesteps(num_steps: int, shift: float = 1.0, start: float = 1.0, device=None) -> Tensor:
    """(num_steps + 1,) decreasing from shift(start) to 0 for the samplers; start < 1 begins partway (SDEdit)."""
    t = torch.linspace(start, 0.0, num_steps + 1, device=device, dtype=torch.float64)
    return shift_timesteps(t, shift).float()
