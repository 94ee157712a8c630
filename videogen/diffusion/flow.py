"""Rectified flow (Liu et al. 2022; Lipman et al. 2022 flow matching; SD3's objective).

Convention: t = 0 is data, t = 1 is noise.

    xt       = (1 - t) * x0 + t * noise
    v_target = noise - x0            (= d xt / dt, what the network predicts)

Sampling integrates d x / dt = v from t = 1 down to t = 0. Every process in this
package (:class:`RectifiedFlow`, :class:`videogen.diffusion.ddpm.DDPM`) has the same
four methods, so training and sampling code does not care which one it has.
t is a tensor broadcast against the latent from the left: (B,) for (B, C, T, H, W)
or a 0-d tensor for one (C, T, H, W) clip.
"""

from __future__ import annotations

from torch import Tensor


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """(B,) or () -> (B, 1, ..., 1) so it broadcasts over x's trailing dims."""
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)).to(x.dtype)


class RectifiedFlow:
    """Straight paths between data and Gaussian noise; the network predicts the velocity."""

    name = "rectified_flow"

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        t = expand_like(t, x0)
        return (1 - t) * x0 + t * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return noise - x0

    def velocity(self, pred: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """Network output -> dx/dt for the samplers (the identity here)."""
        return pred

    def predict_x0(self, pred: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        return xt - expand_like(t, xt) * pred
