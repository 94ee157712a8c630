"""Log media (videos, images, text tables) to whatever loggers the trainer has (TensorBoard, W&B).

``to_loggers`` is the one dispatch: it picks each logger's kind by class (Lightning's
``TensorBoardLogger`` / ``WandbLogger``; neither import needs wandb installed), counts the loggers
that took the media, and turns a logging error into a warning: logging never stops training.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from videogen.data.stages import to_uint8

log = logging.getLogger("videogen")


def side_by_side(*videos: torch.Tensor) -> torch.Tensor:
    """Videos (B, C, T, H, W) placed left to right: (B, C, T, H, sum W)."""
    return torch.cat([v.detach() for v in videos], dim=-1)


def to_loggers(trainer, tag: str, tensorboard: Callable | None = None, wandb: Callable | None = None,
               other: Callable | None = None) -> int:
    """Call ``tensorboard(logger)``, ``wandb(logger)`` or ``other(logger)`` for each of the trainer's loggers
    by its kind (``other``: any further logger; it returns False when the logger cannot take the media).
    Returns how many loggers took it; an error is logged as a warning, never raised."""
    took = 0
    for logger in trainer.loggers if trainer is not None else []:
        kind = tensorboard if isinstance(logger, TensorBoardLogger) else (
            wandb if isinstance(logger, WandbLogger) else other)
        if kind is None:
            continue
        try:
            if kind(logger) is not False:
                took += 1
        except Exception as e:  # a logging failure must never stop training
            log.warning("could not log %s to %s: %s", tag, type(logger).__name__, e)
    return took


def log_videos(trainer, tag: str, videos: Sequence[torch.Tensor], step: int, fps: int = 8) -> int:
    """Log (C, T, H, W) videos in [-1, 1] to every logger that takes video. Returns how many took them."""
    if not videos or trainer is None:
        return 0
    clips = [to_uint8(v) for v in videos]

    def to_wandb(logger):
        import wandb

        logger.experiment.log({tag: [wandb.Video(c.numpy(), fps=fps, format="mp4") for c in clips],
                               "trainer/global_step": step})

    return to_loggers(trainer, tag, wandb=to_wandb, tensorboard=lambda logger: logger.experiment.add_video(
        tag, torch.stack(clips), global_step=step, fps=fps))  # (N, T, C, H, W)


def log_image(trainer, tag: str, image, step: int) -> int:
    """Log one image (a PIL image or HWC array) to TensorBoard, W&B and any logger with ``log_image``."""
    import numpy as np

    def to_wandb(logger):
        import wandb

        logger.experiment.log({tag: wandb.Image(image), "trainer/global_step": step})

    def to_other(logger):
        if not hasattr(logger, "log_image"):
            return False
        logger.log_image(tag, [image], step=step)

    return to_loggers(trainer, tag, wandb=to_wandb, other=to_other, tensorboard=lambda logger: logger.experiment.add_image(
        tag, np.asarray(image), step, dataformats="HWC"))


def log_text_table(trainer, tag: str, columns: Sequence[str], rows: Sequence[Sequence[str]], step: int) -> int:
    """Rows of text to TensorBoard (a markdown table) and W&B (a Table). Returns how many loggers took them."""
    def to_tensorboard(logger):
        md = "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                       + ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows])
        logger.experiment.add_text(tag, md, global_step=step)

    return to_loggers(trainer, tag, tensorboard=to_tensorboard, wandb=lambda logger: logger.log_table(
        key=tag, columns=list(columns), data=[list(r) for r in rows], step=step))
