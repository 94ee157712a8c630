"""Constructed clips with known answers, shared by the evaluation tests."""

import numpy as np


def moving_square(frames: int = 9, height: int = 64, width: int = 96, speed: int = 5, colour=(220, 40, 40),
                  background=(40, 40, 48)) -> np.ndarray:
    """(T, H, W, 3) uint8: a 20-pixel square sliding right ``speed`` pixels a frame over a flat background."""
    out = np.empty((frames, height, width, 3), np.uint8)
    out[:] = background
    for t in range(frames):
        x = 8 + speed * t
        out[t, 22:42, x: x + 20] = colour
    return out


def static_clip(frames: int = 9) -> np.ndarray:
    return np.repeat(moving_square(1), frames, axis=0)
