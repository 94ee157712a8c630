"""Quality: resolution, bitrate, sharpness, brightness, black and frozen frames, letterbox bars.

All from the analysis frames (see ``frames.py``) and the media's size, per clip:

* ``min_side`` (native pixels) and ``bitrate_kbps`` (media bytes x 8 / duration / 1000);
* ``sharpness``: variance of the Laplacian of the gray frames (mean over up to 8 frames, at the
  analysis size, so it compares across resolutions): low means blurry;
* ``brightness``: mean luma in [0, 1];
* ``black_fraction``: share of frames that are black (99th-percentile luma under ``BLACK_LUMA``);
* ``frozen_fraction``: share of consecutive frame pairs that do not change (under ``FROZEN_CHANGED``
  of the pixels changed in brightness or in colour, see ``change.py``: noise only; a change of
  colour counts as much as a change of brightness). ``still`` says
  every pair is frozen: a clip that never changes is left to the motion step (``static``);
  ``frozen`` is for clips that move and then freeze or stutter;
* ``letterbox``: black bars (rows/columns under ``BAR_LUMA`` in every frame, at least ``MIN_BAR``
  of the side) as ``[top, bottom, left, right]`` native pixels; with ``crop_letterbox`` the clip is
  re-encoded without them.
"""

from __future__ import annotations

import numpy as np

from data_recipes.curate.change import FROZEN_CHANGED, changed_fractions
from data_recipes.curate.frames import luma, spread

BLACK_LUMA = 20.0  # 99th-percentile luma (0-255) under which a frame is black
BAR_LUMA = 12.0  # a letterbox bar row/column: max luma over every frame and along it
MIN_BAR = 0.03  # bars thinner than this fraction of the side are ignored (encoder edge noise)


def sharpness(gray: np.ndarray) -> float:
    """Mean variance of the Laplacian over up to 8 of the (T, h, w) float frames."""
    import cv2

    picks = spread(len(gray), 8)
    return float(np.mean([cv2.Laplacian(gray[i], cv2.CV_32F).var() for i in picks]))


def _bar(profile: np.ndarray) -> int:
    """Leading entries of ``profile`` (max luma per row) that are bar: dark all the way across."""
    dark = profile <= BAR_LUMA
    return len(profile) if dark.all() else int(np.argmin(dark))


def letterbox(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` bar sizes at the analysis size, or None when there are none
    (or the frame is black through: nothing to keep)."""
    rows = gray.max(axis=(0, 2))  # (h,) brightest value of each row over every frame
    cols = gray.max(axis=(0, 1))  # (w,)
    top, left = _bar(rows), _bar(cols)
    if top == len(rows) or left == len(cols):
        return None
    bottom, right = _bar(rows[::-1]), _bar(cols[::-1])
    h, w = rows.shape[0], cols.shape[0]
    bars = [b if b >= MIN_BAR * side else 0 for b, side in ((top, h), (bottom, h), (left, w), (right, w))]
    return tuple(bars) if any(bars) else None  # type: ignore[return-value]


def to_native(bars: tuple[int, int, int, int], analysis_hw: tuple[int, int], native_wh: tuple[int, int]) \
        -> tuple[int, int, int, int]:
    """Bar sizes at the analysis size -> native pixels, rounded inwards to even (the content is kept whole)."""
    sy, sx = native_wh[1] / analysis_hw[0], native_wh[0] / analysis_hw[1]
    t, b, l, r = bars
    return (int(t * sy) // 2 * 2, int(b * sy) // 2 * 2, int(l * sx) // 2 * 2, int(r * sx) // 2 * 2)


def quality_scores(frames: np.ndarray, media_bytes: int, width: int, height: int, duration: float) -> dict:
    """Every quality score of one clip (``frames``: (T, h, w, 3) analysis frames)."""
    gray = luma(frames)  # (T, h, w)
    dark = np.percentile(gray.reshape(len(gray), -1), 99, axis=1) < BLACK_LUMA  # (T,)
    frozen = changed_fractions(frames) < FROZEN_CHANGED  # (T-1,)
    bars = letterbox(gray)
    return {
        "min_side": int(min(width, height)),
        "bitrate_kbps": round(media_bytes * 8 / duration / 1000, 3) if duration > 0 else 0.0,
        "sharpness": round(sharpness(gray), 3),
        "brightness": round(float(gray.mean()) / 255, 4),
        "black_fraction": round(float(dark.mean()), 4),
        "frozen_fraction": round(float(frozen.mean()), 4) if len(frozen) else 0.0,
        "still": bool(len(frozen) and frozen.all()),
        "letterbox": list(to_native(bars, gray.shape[1:], (width, height))) if bars else None,
    }
