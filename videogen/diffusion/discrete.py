"""Discrete-time DDPM with a trained model's own table of alphas: CogVideoX's schedule.

CogVideoX (Yang et al. 2024) was trained on 1000 integer timesteps of a "scaled linear" beta schedule
(beta 0.00085 -> 0.012, linear in sqrt(beta)), its signal-to-noise ratio divided by ``snr_shift_scale``
(3.0 for CogVideoX-2b, 1.0 for 5b), rescaled to zero terminal SNR (Lin et al. 2024), with v-prediction;
diffusers' ``CogVideoXDDIMScheduler`` with ``timestep_spacing="trailing"`` samples it. This process is that
table, with the :class:`~videogen.diffusion.flow.RectifiedFlow` interface:

    timestep index k = round(1000 t) - 1 in {-1, 0, ..., 999};  abar(-1) = 1 (clean, DDIM's final alpha)
    xt = sqrt(abar_k) x0 + sqrt(1 - abar_k) noise,   v = sqrt(abar_k) noise - sqrt(1 - abar_k) x0

so t = 1 is pure noise, t in (0, 1) is snapped to the grid the model was trained on (training draws
t as usual and trains on the integer timestep it rounds to) and the network sees the integer k
(:meth:`DiscreteDDPM.network_timestep`). Its sampler is :func:`videogen.diffusion.samplers.ddim`
(the path's alphas are piecewise constant in t: no ODE velocity); "trailing" spacing with N steps
is ``t = round(1000 - 1000 i / N) / 1000``, i = 0..N (:func:`trailing_timesteps`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from videogen.diffusion.flow import expand_like


def cogvideox_alphas_cumprod(snr_shift_scale: float = 3.0, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                             beta_end: float = 0.012) -> Tensor:
    """(num_train_timesteps,) float64 abar of ``CogVideoXDDIMScheduler(beta_schedule="scaled_linear",
    rescale_betas_zero_snr=True, snr_shift_scale=...)``, computed as it computes them."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
    abar = torch.cumprod(1.0 - betas, dim=0)
    abar = abar / (snr_shift_scale + (1 - snr_shift_scale) * abar)
    root = abar.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)  # zero terminal SNR
    return root ** 2


class DiscreteDDPM:
    """v-prediction DDPM on a table of abar (one per integer timestep), t in [0, 1] snapped to it."""

    name = "ddpm_discrete"

    def __init__(self, alphas_cumprod: Tensor) -> None:
        self.num_train_timesteps = len(alphas_cumprod)
        # index k + 1 for k in -1..N-1: abar(-1) = 1 (set_alpha_to_one)
        self.table = torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod]).float()

    def network_timestep(self, t: Tensor) -> Tensor:
        """The integer timestep k = round(N t) - 1 the network was trained with (long)."""
        return torch.round(t.double() * self.num_train_timesteps).long() - 1

    def _abar(self, t: Tensor) -> Tensor:
        k = self.network_timestep(t).clamp(-1, self.num_train_timesteps - 1)
        return self.table.to(t.device)[k + 1]

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        abar = self._abar(t)
        return abar.sqrt(), (1 - abar).sqrt()

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = (expand_like(v, x0) for v in self.alpha_sigma(t))
        return alpha * x0 + sigma * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = (expand_like(v, x0) for v in self.alpha_sigma(t))
        return alpha * noise - sigma * x0

    def predict_x0(self, pred: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = (expand_like(v, xt) for v in self.alpha_sigma(t))
        return alpha * xt - sigma * pred

    def velocity(self, pred: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        raise ValueError("the discrete DDPM process (CogVideoX) has no ODE velocity: sample it with --sampler ddim")

    def ddim_step(self, pred: Tensor, xt: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """Deterministic DDIM (eta = 0) from t to t_next, as CogVideoXDDIMScheduler.step computes it."""
        abar = expand_like(self._abar(t), xt)
        abar_next = expand_like(self._abar(t_next), xt)
        x0 = self.predict_x0(pred, xt, t)
        a = ((1 - abar_next) / (1 - abar)).sqrt()
        b = abar_next.sqrt() - abar.sqrt() * a
        return a * xt + b * x0


def trailing_timesteps(num_steps: int, num_train_timesteps: int = 1000, device=None) -> Tensor:
    """(num_steps + 1,) t of diffusers' "trailing" spacing: (k + 1) / N for its integer timesteps k, then 0."""
    import numpy as np

    k = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)).astype(np.int64) - 1
    if len(k) != num_steps:
        raise ValueError(f"{num_steps} steps do not fit {num_train_timesteps} trailing timesteps")
    # t_next of the last step: k - N // steps < 0 -> abar = 1, t = 0
    t = torch.from_numpy((k + 1).astype(np.float64) / num_train_timesteps)
    nxt = torch.from_numpy(np.maximum(k - num_train_timesteps // num_steps + 1, 0).astype(np.float64)
                           / num_train_timesteps)
    if not torch.equal(t[1:], nxt[:-1]):  # DDIM's previous timestep is k - N // steps: one grid when it divides
        raise ValueError(f"{num_steps} steps: use a number of steps that divides {num_train_timesteps} (trailing DDIM "
                         "steps back by 1000 // steps)")
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)]).float().to(device)
