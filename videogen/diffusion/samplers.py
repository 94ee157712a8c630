"""ODE samplers as pure functions sharing one signature (k-diffusion style).

    sample(model_fn, noise, timesteps, callback=None) -> x

``model_fn(xt, t)`` returns the velocity dx/dt (for DDPM wrap the network with
``process.velocity``); ``t`` is passed as a (B,) tensor. ``noise`` is the state at
``timesteps[0]`` (pure noise at t = 1, or a noised clip for SDEdit) and the samplers
integrate to ``timesteps[-1]`` (usually 0). ``callback(i, t, x)`` sees every step.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

ModelFn = Callable[[Tensor, Tensor], Tensor]
Callback = Optional[Callable[[int, Tensor, Tensor], None]]


def euler(model_fn: ModelFn, noise: Tensor, timesteps: Tensor, callback: Callback = None) -> Tensor:
    """Explicit Euler: x <- x + (t_next - t) v(x, t). One model call per step."""
    x = noise
    for i in range(len(timesteps) - 1):
        t, t_next = timesteps[i], timesteps[i + 1]
        x = x + (t_next - t) * model_fn(x, t.expand(x.shape[0]))
        if callback is not None:
            callback(i, t_next, x)
    return x


def heun(model_fn: ModelFn, noise: Tensor, timesteps: Tensor, callback: Callback = None) -> Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1 without churn): Euler predictor,
    trapezoidal corrector; the last step to t = 0 stays Euler. Two model calls per step."""
    x = noise
    for i in range(len(timesteps) - 1):
        t, t_next = timesteps[i], timesteps[i + 1]
        v = model_fn(x, t.expand(x.shape[0]))
        x_euler = x + (t_next - t) * v
        if float(t_next) > 0:
            v_next = model_fn(x_euler, t_next.expand(x.shape[0]))
            x = x + (t_next - t) * 0.5 * (v + v_next)
        else:
            x = x_euler
        if callback is not None:
            callback(i, t_next, x)
    return x


def ddim(process) -> Callable[..., Tensor]:
    """Deterministic DDIM (Song et al. 2021, eta = 0) for a process with ``ddim_step`` (the discrete DDPM):
    a sampler with the shared signature whose ``model_fn(xt, t)`` returns the network's prediction (v)
    rather than a velocity: x <- process.ddim_step(pred, x, t, t_next). One model call per step."""

    def sample(model_fn: ModelFn, noise: Tensor, timesteps: Tensor, callback: Callback = None) -> Tensor:
        x = noise
        for i in range(len(timesteps) - 1):
            t, t_next = timesteps[i], timesteps[i + 1]
            b = x.shape[0]
            x = process.ddim_step(model_fn(x, t.expand(b)), x, t.expand(b), t_next.expand(b))
            if callback is not None:
                callback(i, t_next, x)
        return x

    return sample
