"""Scene split: find hard cuts and cut the clip into its scenes.

The content detector compares consecutive analysis frames by their colour histograms (4 bins per
RGB channel, 64 joint bins, soft-binned): the score of a frame pair is half the L1 distance of the normalised
histograms, 0 for the same colours and 1 for no colour in common. A moving object barely changes
its frame's colours; a cut to another shot changes many. A pair is a cut when its score is over
``threshold`` and over ``ratio`` times the median score of the clip (the clip's own level of
change, so steady noise or a flicker of the whole clip is not a cut). Detection needs every frame:
clips longer than the analysis frame budget are judged on evenly spaced frames and their cuts are
placed at the nearest analysed frame.

Scenes shorter than ``min_frames`` are dropped; the rest are re-encoded as ``KEY_s0``, ``KEY_s1``,
... with the sample's caption and json carried over (width, height, frame count and duration
updated, ``curation.scene`` naming the source key and frame range).
"""

from __future__ import annotations

import numpy as np

BINS = 4  # per channel


FINE = 16  # per channel: pixels are counted in 16^3 fine bins, then spread onto the coarse ones


def _soft_weights() -> np.ndarray:
    """(FINE^3, BINS^3): how each fine bin's count splits over the coarse bins (trilinear between
    the coarse bin centres, at the fine bin's centre)."""
    centre = (np.arange(FINE) + 0.5) * (256 / FINE)  # (FINE,) channel value
    pos = centre / (256 // BINS) - 0.5  # in coarse bin units
    lo = np.clip(np.floor(pos), 0, BINS - 2).astype(np.int64)
    frac = np.clip(pos - lo, 0.0, 1.0)
    one = np.zeros((FINE, BINS))  # (FINE, BINS) per channel
    one[np.arange(FINE), lo] += 1 - frac
    one[np.arange(FINE), lo + 1] += frac
    return np.einsum("rR,gG,bB->rgbRGB", one, one, one).reshape(FINE**3, BINS**3)


_SOFT = _soft_weights()


def histograms(frames: np.ndarray) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T, 64) soft colour histograms, each summing to 1.

    Each pixel's weight is split between the two nearest bin centres of every channel (trilinear,
    over the 8 joint bins around it; computed from 16-level fine bins), so a colour near a bin edge
    (an orange of green 66, the edge at 64) moved by camera noise shifts the histogram a little, not
    a whole bin's worth."""
    t = len(frames)
    q = (frames // (256 // FINE)).astype(np.int64)  # (T, h, w, 3) fine bin per channel
    joint = ((q[..., 0] * FINE + q[..., 1]) * FINE + q[..., 2]).reshape(t, -1)  # (T, N)
    offset = (np.arange(t) * FINE**3)[:, None]
    counts = np.bincount((joint + offset).ravel(), minlength=t * FINE**3).reshape(t, FINE**3)  # (T, 4096)
    soft = counts @ _SOFT  # (T, 64)
    return soft / soft.sum(axis=1, keepdims=True)


def cut_scores(frames: np.ndarray) -> np.ndarray:
    """(T, h, w, 3) -> (T-1,) histogram distance of each consecutive pair, in [0, 1]."""
    if len(frames) < 2:
        return np.zeros(0)
    h = histograms(frames)
    return 0.5 * np.abs(np.diff(h, axis=0)).sum(axis=1)


def detect_cuts(scores: np.ndarray, threshold: float, ratio: float = 3.0) -> list[int]:
    """Pair indices ``i`` (between analysis frames i and i+1) that are cuts."""
    if len(scores) == 0:
        return []
    level = float(np.median(scores))
    return [int(i) for i in np.flatnonzero((scores > threshold) & (scores > ratio * level))]


def scene_ranges(num_frames: int, indices: list[int], cuts: list[int]) -> list[tuple[int, int]]:
    """Native frame ranges ``[start, stop)`` of the scenes, from cuts between analysis frames.

    A cut between analysis frames i and i+1 starts the new scene at native frame ``indices[i+1]``."""
    starts = [0] + [indices[c + 1] for c in cuts] + [num_frames]
    return [(a, b) for a, b in zip(starts[:-1], starts[1:]) if b > a]
