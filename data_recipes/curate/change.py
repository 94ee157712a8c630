"""Change between two frames, in brightness and in colour: what the frozen-frame and motion measures see.

A pixel *changed* between two frames when

* its 8-bit luma (BT.601, as decoded: no smoothing) moved by more than ``LUMA_CHANGED`` levels, or
* its colour did: the CIE94 colour difference (Delta E 94, graphic-arts weights: Delta L*, Delta
  C* / (1 + 0.045 C*), Delta H* / (1 + 0.015 C*)) in CIELAB (OpenCV's D65 sRGB conversion) over
  ``COLOUR_CHANGED``, measured on the frames smoothed by a 3x3 Gaussian (sigma 0.8): chroma is
  coded at a quarter of the resolution and noisier, most of all on saturated colours, and the
  CIE94 weights and the smoothing keep that noise from reading as change. (Delta L* counts too:
  two colours of one BT.601 luma can differ by 7 in L*, a (16, 151, 218) disc on (80, 126, 176).)

A pair of frames is *frozen* when under ``FROZEN_CHANGED`` of its pixels changed.

The luma test alone (what curation used before; kept as it was) is blind to motion between
colours of equal brightness: a blue (76, 105, 207) disc on an orange (213, 66, 27) background,
BT.601 luma 108 and 106. Smoothing the luma as well made low-contrast edges invisible (a 14-level
edge moving 1 px/frame); CIE94 alone over 4 on smoothed frames took a still clip's I-to-P-frame edge
flicker for change, and its chroma terms alone missed the (16, 151, 218) disc above. Measured, the share of pixels
changed per pair of frames: the synthetic set at crf 18 (16 still clips: at most 0.39%; 60 moving:
median at least 1.66%), isoluminant pairs at crf 23 with camera noise (sigma 2; 18 still: at most
0.37%; 18 moving >= 1 px/frame: median at least 1.33%), low-contrast ones (16-24 luma levels, crf
18; 18 moving: median at least 0.86%). Stronger camera noise (sigma 3 at crf 23 and up) moves more
than 0.5% of the luma of a still clip by over 6 levels: its still clips read as frozen, not still.

Optical flow needs one gray image: :func:`contrast_channel` projects the two frames on the
colour axis along which that pair changes most (the first principal axis of its changed pixels'
Delta L*a*b* vectors), so a moving edge keeps its full contrast whatever its hue or brightness
(an object brighter than its background is seen through ~L*, an isoluminant one through a*b*).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

LUMA_CHANGED = 6.0  # 8-bit luma levels over which a pixel changed
COLOUR_CHANGED = 5.0  # CIE94 Delta E (smoothed frames) over which a pixel changed
FROZEN_CHANGED = 0.005  # share of changed pixels under which a pair is frozen (a repeated frame: noise only)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class Seen(NamedTuple):
    """Frames as the change measures look at them (any leading shape: one frame or a stack)."""

    luma: np.ndarray  # (..., h, w) float32, 0-255
    lab: np.ndarray  # (..., h, w, 3) float32 L* (0-100), a*, b* of the smoothed frames
    chroma: np.ndarray  # (..., h, w) float32 C* of the smoothed frames

    def __getitem__(self, i):  # frames i (an index or a slice) of a stack
        return Seen(self.luma[i], self.lab[i], self.chroma[i])


def see(frames: np.ndarray) -> Seen:
    """(T, h, w, 3) uint8 RGB -> their luma and smoothed L*a*b* and C* (one colour conversion for the
    whole stack: OpenCV's 8-bit Lab costs ~2 ms a call whatever its size)."""
    import cv2

    t, h, w = frames.shape[:3]
    smooth = np.empty_like(frames)
    for i in range(t):
        smooth[i] = cv2.GaussianBlur(frames[i], (3, 3), 0)
    u8 = cv2.cvtColor(smooth.reshape(t * h, w, 3), cv2.COLOR_RGB2Lab).reshape(t, h, w, 3)  # L*255/100, a+128, b+128
    lab = u8.astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    return Seen(frames.astype(np.float32) @ _LUMA, lab, np.hypot(lab[..., 1], lab[..., 2]))


def delta_e94(a: Seen, b: Seen) -> np.ndarray:
    """(..., h, w) the CIE94 colour difference of ``b`` from the reference ``a``."""
    d = b.lab - a.lab  # (..., h, w, 3)
    dc = b.chroma - a.chroma
    dh2 = np.maximum(d[..., 1] ** 2 + d[..., 2] ** 2 - dc * dc, 0.0)  # squared hue difference
    return np.sqrt(d[..., 0] ** 2 + (dc / (1 + 0.045 * a.chroma)) ** 2 + dh2 / (1 + 0.015 * a.chroma) ** 2)


def changed(a: Seen, b: Seen) -> np.ndarray:
    """(..., h, w) bool: the pixels that changed from ``a`` to ``b``."""
    return (np.abs(b.luma - a.luma) > LUMA_CHANGED) | (delta_e94(a, b) > COLOUR_CHANGED)


def changed_fractions(frames: np.ndarray, chunk: int = 32) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (T-1,) share of pixels changed between each consecutive pair."""
    out = []
    for s in range(0, len(frames) - 1, chunk):
        seen = see(frames[s: s + chunk + 1])  # the chunk and the first frame of the next
        out.append(changed(seen[:-1], seen[1:]).mean(axis=(-2, -1)))
    return np.concatenate(out) if out else np.zeros(0)


def contrast_channel(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two L*a*b* frames -> both as (h, w) uint8 gray along their main axis of change (see the module
    docstring), in L* units x 2.55 (as 8-bit luma would be), squeezed only when the range is wider."""
    d = (b - a)[mask]  # (N, 3) change vectors of the changed pixels
    axis = np.array([1.0, 0.0, 0.0], np.float32)  # L*: for pairs that barely changed
    if len(d) >= 3:
        _, vecs = np.linalg.eigh(d.T.astype(np.float64) @ d)  # ascending eigenvalues
        axis = vecs[:, -1].astype(np.float32)
        if axis[0] < 0:  # a sign convention only (flow does not care): brighter = higher where it can
            axis = -axis
    pa, pb = a @ axis, b @ axis  # (h, w) each
    lo, hi = float(min(pa.min(), pb.min())), float(max(pa.max(), pb.max()))
    scale = min(2.55, 255.0 / max(hi - lo, 1e-6))
    return (np.clip((pa - lo) * scale, 0, 255).astype(np.uint8),
            np.clip((pb - lo) * scale, 0, 255).astype(np.uint8))
