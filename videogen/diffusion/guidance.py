"""Classifier-free guidance (Ho & Salimans 2022).

    out = uncond + scale * (cond - uncond)

scale = 1 is the conditional model, 0 the unconditional one. Guidance is linear in
the prediction, and every process's ``velocity`` is affine in it, so guiding the
velocity equals guiding the eps/v/flow prediction. :func:`videogen.pipelines.video.generate_latents` guides
through :func:`guided` (the null branch: the encoded ``NULL_CAPTION``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from videogen.diffusion.samplers import ModelFn


def classifier_free_guidance(cond_out: Tensor, uncond_out: Tensor, scale: float) -> Tensor:
    return uncond_out + scale * (cond_out - uncond_out)


def guided(model_fn_doubled: ModelFn, scale: float) -> ModelFn:
    """Wrap a model_fn that sees a doubled batch (its conditioning = cat([cond, uncond])) into a
    guided model_fn over the plain batch: one network call per step for both branches."""

    def model_fn(xt: Tensor, t: Tensor) -> Tensor:
        out = model_fn_doubled(torch.cat([xt, xt]), torch.cat([t, t]))  # (2B, ...)
        cond_out, uncond_out = out.chunk(2)
        return classifier_free_guidance(cond_out, uncond_out, scale)

    return model_fn
