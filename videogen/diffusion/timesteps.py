"""Training timestep sampling and the resolution/length-dependent timestep shift.

- Logit-normal sampling (SD3, Esser et al. 2024 §3.1): t = sigmoid(u), u ~ N(mean, std),
  which puts more training weight on intermediate noise levels.
- Shift (SD3 §5.3.2): t' = s t / (1 + (s - 1) t) maps [0, 1] onto itself, increasing in
  t and in s; s > 1 moves timesteps towards noise. More tokens carry more redundant
  signal, so a given noise level destroys less of it: SD3 derives s = sqrt(m / n) to
  give m tokens the uncertainty n tokens have at t. We grow it with the spatial tokens
  (latent h x w / patch) and the temporal tokens (latent frames / patch) and cap it:

      s = min(max_shift, sqrt(spatial_tokens / base_tokens) * sqrt(temporal_tokens))

  base_tokens = 256 (a 256x256 image through an 8x VAE and 2x2 patches) and
  max_shift = 5.0, the shift Wan 2.1 samples 720p with. Without the cap 720p x 33 frames
  would get 11.25 and fewer than 1% of the training timesteps would fall below 0.5; with
  it t' < 0.5 iff t < 1 / (1 + s), so at least sigmoid-normal P(t < 1/6) ~ 5% of them do.
  Training and sampling call this one function (docs/dit.md has the table per bucket).
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


def timestep_shift(temporal_tokens: int | Tensor, spatial_tokens: int | Tensor, base_tokens: int = 256,
                   max_shift: float | None = 5.0) -> float | Tensor:
    """The shift of a clip with ``temporal_tokens`` x ``spatial_tokens`` latent tokens (ints, or per-clip
    tensors): min(max_shift, sqrt(spatial_tokens / base_tokens) * sqrt(temporal_tokens)); None: no cap."""
    if isinstance(temporal_tokens, Tensor) or isinstance(spatial_tokens, Tensor):
        s = torch.sqrt(torch.as_tensor(spatial_tokens).float() / base_tokens * torch.as_tensor(temporal_tokens).float())
        return s if max_shift is None else s.clamp(max=max_shift)
    s = math.sqrt(spatial_tokens / base_tokens * temporal_tokens)
    return s if max_shift is None else min(max_shift, s)


def sampling_timesteps(num_steps: int, shift: float = 1.0, start: float = 1.0, device=None) -> Tensor:
    """(num_steps + 1,) decreasing from shift(start) to 0 for the samplers; start < 1 begins partway (SDEdit)."""
    t = torch.linspace(start, 0.0, num_steps + 1, device=device, dtype=torch.float64)
    return shift_timesteps(t, shift).float()


SPACINGS = ("linear", "flow_match", "trailing")


def flow_match_timesteps(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000,
                         device=None) -> Tensor:
    """(num_steps + 1,) the sigmas of diffusers' ``FlowMatchEulerDiscreteScheduler(shift=shift)`` after
    ``set_timesteps(num_steps)`` (the spacing Wan's and LTX's pipelines sample with): ``num_steps`` values
    linear from 1 to the shifted smallest training sigma, shifted, then 0. Computed as the scheduler does
    (float32 training sigmas, float64 spacing and shift, float32 result), so the same steps give the same
    timesteps bit for bit."""
    import numpy as np

    train = torch.linspace(1, num_train_timesteps, num_train_timesteps, dtype=torch.float32).flip(0)
    train = train / num_train_timesteps
    sigma_min = (shift * train / (1 + (shift - 1) * train))[-1].item()
    sigmas = np.linspace(1.0 * num_train_timesteps, sigma_min * num_train_timesteps, num_steps) / num_train_timesteps
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    out = torch.from_numpy(sigmas).to(torch.float32)
    return torch.cat([out, torch.zeros(1)]).to(device)


def dynamic_shift(tokens: int | Tensor, base_tokens: float = 1024, max_tokens: float = 4096, base_shift: float = 0.95,
                  max_shift: float = 2.05) -> float | Tensor:
    """FLUX's and LTX-Video's resolution-dependent shift ``exp(mu)``, mu linear in the clip's latent tokens
    through (base_tokens, base_shift) and (max_tokens, max_shift) (diffusers' ``calculate_shift`` and the
    scheduler's exponential ``time_shift``, which is :func:`shift_timesteps` with s = exp(mu)); defaults:
    LTX-Video's scheduler config."""
    m = (max_shift - base_shift) / (max_tokens - base_tokens)
    mu = tokens * m + (base_shift - m * base_tokens)
    return torch.exp(torch.as_tensor(mu).float()) if isinstance(mu, Tensor) else math.exp(mu)


def stretch_to_terminal(timesteps: Tensor, terminal: float) -> Tensor:
    """(N + 1,) timesteps ending at 0 -> the first N stretched so the last is ``terminal`` (diffusers'
    ``FlowMatchEulerDiscreteScheduler(shift_terminal=...)``: 1 - t scaled, LTX-Video's config), then 0."""
    one_minus = 1 - timesteps[:-1].double()
    stretched = 1 - one_minus / (one_minus[-1] / (1 - terminal))
    return torch.cat([stretched.to(timesteps.dtype), timesteps[-1:]])
