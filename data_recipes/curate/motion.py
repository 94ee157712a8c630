"""Motion: how much a clip moves (to drop static clips) and how much its camera shakes (jittery).

Two scores per clip, from up to ``pairs`` evenly spaced pairs of consecutive analysis frames, each
pair seen in colour (``change.py``: luma and CIE94 chroma change, and one gray image along the
colour axis the pair changes on, so an object as bright as its background still moves):

* ``motion``: dense optical flow (OpenCV's Farneback) counted only where the pixels changed (in
  brightness or colour, ``change.changed``: on flat, unchanged areas Farneback returns encoder noise, up to several
  pixels on a still clip), averaged over the whole frame, as a fraction of the frame's shorter side
  per second; a frozen pair (under ``FROZEN_CHANGED`` of the pixels changed) counts 0 and is not
  run through the flow at all.
  It means the same at any resolution and frame rate: a still clip scores 0, the synthetic set's
  moving shapes (a tenth to a fifth of the frame, 0.5 to 10 pixels a frame) 1e-4 to 0.2;
* ``jitter``: the spread (standard deviation, both axes) of the frame-to-frame global shift found
  by phase correlation of the luma (not the colour-axis image: that shows the moving object more
  than the scene, so its shift is the object's; steady clips' jitter rose 5x on it), as a
  fraction of the shorter side: a still camera or a steady pan scores
  ~0 (the shift is the same every frame), a shaking camera high.

Clips under ``static_motion`` are ``static``; clips over ``max_jitter`` are ``jittery``. Images are
not scored.
"""

from __future__ import annotations

import numpy as np

from data_recipes.curate.change import FROZEN_CHANGED, changed, contrast_channel, see


def pair_starts(num_frames: int, pairs: int) -> list[int]:
    """First frame of up to ``pairs`` evenly spaced consecutive pairs."""
    n = num_frames - 1
    if n <= 0:
        return []
    return sorted({round(i * (n - 1) / max(1, pairs - 1)) for i in range(min(pairs, n))})


def motion_scores(frames: np.ndarray, indices: list[int], fps: float, pairs: int = 16) -> dict[str, float]:
    """``{"motion", "jitter"}`` of a clip's analysis frames (``indices``: their native frame numbers)."""
    import cv2

    starts = pair_starts(len(frames), pairs)
    if not starts:
        return {"motion": 0.0, "jitter": 0.0}
    short = float(min(frames.shape[1:3]))
    window = cv2.createHanningWindow((frames.shape[2], frames.shape[1]), cv2.CV_32F)
    moved, shifts = [], []
    used = sorted({i for a in starts for i in (a, a + 1)})
    seen = see(frames[used])  # the frames of every pair, seen at once
    where = {f: k for k, f in enumerate(used)}
    for a in starts:
        b = a + 1
        step = indices[b] - indices[a]  # native frames between the two
        sa, sb = seen[where[a]], seen[where[b]]
        moving = changed(sa, sb)  # (h, w)
        if moving.mean() < FROZEN_CHANGED:  # a repeated frame: whatever flow finds is noise; nothing shifted
            moved.append(0.0)
            shifts.append((0.0, 0.0))
            continue
        ga, gb = contrast_channel(sa.lab, sb.lab, moving)  # (h, w) uint8 each
        flow = cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=3, winsize=21, iterations=3,
                                            poly_n=5, poly_sigma=1.1, flags=0)  # (h, w, 2)
        moved.append(float((np.linalg.norm(flow, axis=-1) * moving).mean()) / step)
        # the camera's shift, from the luma as before (copies: OpenCV 5 windows its inputs in place)
        (dx, dy), _ = cv2.phaseCorrelate(sa.luma.copy(), sb.luma.copy(), window)
        shifts.append((dx / step, dy / step))
    per_second = fps if fps > 0 else 1.0
    jitter = 0.0
    if len(shifts) > 1:
        xy = np.asarray(shifts)  # (P, 2)
        mad = np.median(np.abs(xy - np.median(xy, axis=0)), axis=0) * 1.4826  # robust standard deviation
        jitter = float(np.linalg.norm(mad)) / short
    return {"motion": round(float(np.mean(moved)) / short * per_second, 6), "jitter": round(jitter, 6)}
