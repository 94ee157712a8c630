"""How every stage optimises: an injected optimizer and learning-rate schedule, stepped every optimizer step.

Each stage module takes ``optimizer: OptimizerCallable`` (params -> optimizer) and ``lr_scheduler:
LRSchedulerCallable`` (optimizer -> schedule), given in its config as ``class_path`` + ``init_args``::

    optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 3.0e-3, betas: [0.9, 0.99], weight_decay: 0.0}}
    lr_scheduler: {class_path: videogen.modules.lr_schedule.WarmupCosine, init_args: {warmup: 50, decay: 3000}}

(``init_args`` left out take the class's own defaults: torch's AdamW has ``betas`` (0.9, 0.999) and
``weight_decay`` 0.01, so a config names all three.) :func:`optimizer_config` builds what
``configure_optimizers`` returns from them, one way for every stage, and :func:`clip_gradients` clips
every stage's gradients (``fused: true`` with ``bf16-mixed`` included).
"""

from __future__ import annotations

import functools
import math
from typing import Iterable

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup: int, decay: int | None, floor: float) -> float:
    """Learning-rate factor: linear warm-up, then constant (``decay=None``) or cosine to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    if decay is None:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, decay - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine(LambdaLR):
    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, decay: int | None = None, floor: float = 0.1):
        """The learning rate times :func:`warmup_cosine` of the optimizer step.

        Args:
            optimizer: the optimizer whose learning rate it scales.
            warmup: steps of linear warm-up from ``lr / warmup`` to ``lr``.
            decay: the step at which the cosine reaches ``floor * lr`` (None: constant after warm-up).
            floor: the last learning rate as a share of ``lr``.
        """
        super().__init__(optimizer, functools.partial(warmup_cosine, warmup=warmup, decay=decay, floor=floor))


def optimizer_config(optimizer: OptimizerCallable, lr_scheduler: LRSchedulerCallable,
                     parameters: Iterable[torch.nn.Parameter]) -> dict:
    """``configure_optimizers``'s answer for ``parameters`` (only those that train: LoRA's adapters), its
    schedule stepped after every optimizer step."""
    opt = optimizer([p for p in parameters if p.requires_grad])
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler(opt), "interval": "step"}}


def clip_gradients(module: LightningModule, optimizer: torch.optim.Optimizer, value: float | None,
                   algorithm: str | None = "norm") -> None:
    """``module.clip_gradients``, except under ``bf16-mixed`` (no loss scaler: the gradients are already
    unscaled), where Lightning refuses any optimizer that unscales in its own step (``fused: true``
    AdamW) although there is nothing to unscale: there the gradients are clipped directly."""
    plugin = module.trainer.precision_plugin
    if not value or not (isinstance(plugin, MixedPrecision) and plugin.scaler is None):
        module.clip_gradients(optimizer, value, algorithm)
        return
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, value)
    else:
        torch.nn.utils.clip_grad_norm_(params, value)
