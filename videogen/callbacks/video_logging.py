"""Log videos to whatever loggers the trainer has (TensorBoard, Weights & Biases)."""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from videogen.data.stages import to_uint8

log = logging.getLogger("videogen")


def side_by_side(*videos: torch.Tensor) -> torch.Tensor:
    """Videos (B, C, T, H, W) placed left to right: (B, C, T, H, sum W)."""
    return torch.cat([v.detach() for v in videos], dim=-1)


def log_videos(trainer, tag: str, videos: Sequence[torch.Tensor], step: int, fps: int = 8) -> int:
    """Log (C, T, H, W) videos in [-1, 1] to every logger that takes video. Returns how many took them."""
    if not videos or trainer is None:
        return 0
    clips = [to_uint8(v) for v in videos]
    took = 0
    for logger in trainer.loggers:
        name = type(logger).__name__
        try:
            if name == "TensorBoardLogger":
                logger.experiment.add_video(tag, torch.stack(clips), global_step=step, fps=fps)  # (N, T, C, H, W)
                took += 1
            elif name == "WandbLogger":
                import wandb

                logger.experiment.log({tag: [wandb.Video(c.numpy(), fps=fps, format="mp4") for c in clips],
                                       "trainer/global_step": step})
                took += 1
        except Exception as e:  # a logging failure must never stop training
            log.warning("could not log %s to %s: %s", tag, name, e)
    return took
