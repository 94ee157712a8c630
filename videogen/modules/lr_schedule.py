"""The learning-rate factor both stages use (a ``LambdaLR`` over optimizer steps)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup: int, decay: int | None, floor: float) -> float:
    """Learning-rate factor: linear warm-up, then constant (``decay=None``) or cosine to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    if decay is None:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, decay - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
