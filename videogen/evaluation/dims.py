"""Per-video quality dimensions in the style of VBench (Huang et al. 2024), computed without
downloaded weights. Frames are (T, H, W, 3) uint8 RGB; every score is a float, higher is better
except ``motion_magnitude`` (a measurement). Formulas (docs/evaluate.md has the same):

* temporal flicker: ``1 - mean_t mean|f_t - f_{t-1}| / 255`` (VBench's temporal_flickering);
* motion smoothness: every odd frame predicted from its two neighbours by flow-compensated
  interpolation (OpenCV Farneback flow from f_{t-1} to f_{t+1}, both warped half way and averaged),
  ``1 - mean|pred - f_t| / 255``; VBench interpolates with the AMT network, here the flow replaces it;
* dynamic degree: per consecutive pair the mean of the top 5 % Farneback flow magnitudes; a video is
  dynamic when at least ``max(1, round(4 T / 16))`` pairs exceed ``6 * min(H, W) / 256`` pixels
  (VBench's thresholds, with RAFT replaced by Farneback); ``motion_magnitude`` is the mean of those
  per-pair values divided by min(H, W);
* consistency of frame features (T, D): ``mean_{t>=1} (max(0, cos(f_0, f_t)) + max(0, cos(f_{t-1}, f_t))) / 2``
  (VBench's subject/background consistency).
"""

from __future__ import annotations

import numpy as np

TOP_FRACTION = 0.05
DYNAMIC_PIXELS_AT_256 = 6.0


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense optical flow (H, W, 2) in pixels from RGB frame ``a`` to ``b`` (Farneback)."""
    import cv2

    return cv2.calcOpticalFlowFarneback(_gray(a), _gray(b), None, 0.5, 3, 15, 3, 5, 1.2, 0)


def temporal_flicker(frames: np.ndarray) -> float | None:
    if len(frames) < 2:
        return None
    diff = np.abs(np.diff(frames.astype(np.float32), axis=0))
    return float(1.0 - diff.mean() / 255.0)


def _warp(frame: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.remap(frame.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The frame half way between ``a`` and ``b`` (float32 (H, W, 3)): with F the flow a -> b,
    ``(a(x - F/2) + b(x + F/2)) / 2``."""
    h, w = a.shape[:2]
    f = flow(a, b)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    half_x, half_y = f[..., 0] / 2, f[..., 1] / 2
    return (_warp(a, xs - half_x, ys - half_y) + _warp(b, xs + half_x, ys + half_y)) / 2


def motion_smoothness(frames: np.ndarray) -> float | None:
    if len(frames) < 3:
        return None
    errors = [np.abs(interpolate(frames[t - 1], frames[t + 1]) - frames[t].astype(np.float32)).mean()
              for t in range(1, len(frames) - 1, 2)]
    return float(1.0 - np.mean(errors) / 255.0)


def motion(frames: np.ndarray) -> tuple[bool, float] | None:
    """``(dynamic, motion_magnitude)`` of one video (None for fewer than 2 frames)."""
    if len(frames) < 2:
        return None
    h, w = frames.shape[1:3]
    peaks = []
    for a, b in zip(frames[:-1], frames[1:]):
        mag = np.linalg.norm(flow(a, b), axis=-1).ravel()
        k = max(1, int(round(TOP_FRACTION * mag.size)))
        peaks.append(float(np.partition(mag, mag.size - k)[-k:].mean()))
    threshold = DYNAMIC_PIXELS_AT_256 * min(h, w) / 256.0
    needed = max(1, round(4 * len(frames) / 16))
    return sum(p > threshold for p in peaks) >= needed, float(np.mean(peaks) / min(h, w))


def consistency(features: np.ndarray) -> float | None:
    """VBench's consistency of (T, D) frame features (the first frame and the previous one)."""
    if len(features) < 2:
        return None
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    to_first = np.clip(f[1:] @ f[0], 0, None)
    to_prev = np.clip(np.sum(f[1:] * f[:-1], axis=1), 0, None)
    return float(np.mean((to_first + to_prev) / 2))
