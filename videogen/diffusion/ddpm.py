"""DDPM as an alternative process with the :class:`~videogen.diffusion.flow.RectifiedFlow` interface.

Continuous-time variance-preserving process (Song et al. 2021, "Score-Based Generative
Modeling through SDEs"), the t in [0, 1] limit of DDPM's linear beta schedule
(Ho et al. 2020: beta 1e-4 -> 0.02 over 1000 steps is beta_min = 0.1, beta_max = 20):

    log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2,   sigma = sqrt(1 - alpha^2)
    xt = alpha(t) x0 + sigma(t) noise

The network predicts ``eps`` (= noise, Ho et al.) or ``v`` (= alpha noise - sigma x0,
Salimans & Ho 2022). :meth:`DDPM.velocity` turns either into the probability-flow ODE
velocity dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat, so the same Euler/Heun samplers
integrate it from t = 1 to 0. alpha(1) ~ 0.0066, so sampling starts from N(0, I)
as in DDPM (not exactly zero signal) unless ``zero_terminal_snr`` (Lin et al. 2024,
"Common Diffusion Noise Schedules and Sample Steps are Flawed"): alpha is rescaled to
(alpha - alpha(1)) / (1 - alpha(1)), so t = 1 is pure noise, as sampling assumes; it
needs v-prediction (eps says nothing about x0 at zero signal). sigma'(t) ~ 1 / sqrt(t) near t = 0, so the last
step limits ODE accuracy; give DDPM more steps than rectified flow (whose paths are
nearly straight).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from videogen.diffusion.flow import expand_like


class DDPM:
    """Variance-preserving diffusion with eps- or v-prediction."""

    name = "ddpm"

    def __init__(self, prediction: Literal["eps", "v"] = "v", beta_min: float = 0.1, beta_max: float = 20.0,
                 zero_terminal_snr: bool = False) -> None:
        if prediction not in ("eps", "v"):
            raise ValueError(f"DDPM init arg prediction={prediction!r}: use 'eps' or 'v'.")
        if zero_terminal_snr and prediction != "v":
            raise ValueError("DDPM with zero_terminal_snr needs prediction='v' (eps cannot give x0 at zero signal)")
        self.prediction = prediction
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.zero_terminal_snr = zero_terminal_snr
        # alpha(1) of the plain schedule; the rescaled one is (alpha - end) / (1 - end)
        self._end = math.exp(-0.25 * (beta_max - beta_min) - 0.5 * beta_min) if zero_terminal_snr else 0.0

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = self._log_alpha(t)
        if not self.zero_terminal_snr:
            sigma = torch.sqrt(-torch.expm1(2 * log_alpha))  # sqrt(1 - alpha^2), accurate near t = 0
            return log_alpha.exp(), sigma
        one_minus = -torch.expm1(log_alpha) / (1 - self._end)  # 1 - alpha, accurate near t = 0
        alpha = 1 - one_minus
        return alpha, torch.sqrt((one_minus * (1 + alpha)).clamp_min(0))

    def _dalpha(self, t: Tensor) -> Tensor:
        """d alpha / dt."""
        return -0.5 * (self.beta_min + t * (self.beta_max - self.beta_min)) * self._log_alpha(t).exp() / (1 - self._end)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.alpha_sigma(expand_like(t, x0))
        return alpha * x0 + sigma * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        if self.prediction == "eps":
            return noise
        alpha, sigma = self.alpha_sigma(expand_like(t, x0))
        return alpha * noise - sigma * x0

    def _x0_eps(self, pred: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.alpha_sigma(expand_like(t, xt))
        if self.prediction == "eps":
            return (xt - sigma * pred) / alpha, pred
        return alpha * xt - sigma * pred, sigma * xt + alpha * pred  # alpha^2 + sigma^2 = 1

    def predict_x0(self, pred: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        return self._x0_eps(pred, xt, t)[0]

    def velocity(self, pred: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """Network output -> probability-flow ODE velocity dx/dt (singular at t = 0, never evaluated there)."""
        t_ = expand_like(t, xt)
        alpha, sigma = self.alpha_sigma(t_)
        dalpha = self._dalpha(t_)
        dsigma = -alpha * dalpha / sigma.clamp_min(1e-12)
        x0, eps = self._x0_eps(pred, xt, t)
        return dalpha * x0 + dsigma * eps
