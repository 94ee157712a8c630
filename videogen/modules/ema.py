"""The EMA of a trained network, one way for every stage (the VAE's and the DiT's ``ema_decay``).

:func:`ema_of` builds it (``torch.optim.swa_utils.AveragedModel`` with buffers averaged too), frozen: it is
updated by copying (:func:`update_ema`, from the module's ``optimizer_step``, so the step and its EMA both
land before any callback, a checkpoint, sees the batch's end), never by gradients (DDP refuses unused
trainable parameters). Its weights serve validation, sampling and the export (``export_prefix``
``ema.module.``).
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_of(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """A frozen EMA copy of ``model`` with ``decay``; None when ``decay`` is None or 0 (no EMA)."""
    if not decay:
        return None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    return ema.requires_grad_(False)


def update_ema(ema: AveragedModel | None, model: nn.Module) -> None:
    """One EMA step towards ``model``'s current weights (nothing without an EMA)."""
    if ema is not None:
        ema.update_parameters(model)
