"""The synthetic set's pixel judge: what a clip shows, and did a generated video show what its prompt asked for?

The prompts are the synthetic set's captions (``videogen make-synthetic``: short ``a red circle`` or
the long ones that name size, colour, shape, direction, speed and background). What a prompt asks
for comes from the sample's ground-truth ``attributes`` when known (a held-out shard set's json),
else from the prompt's words (:func:`prompt_attributes`, the synthetic vocabulary). The video is
judged from its pixels by :func:`judge_clip`. Accuracy of an attribute = share of the videos whose
prompt names it that show it. The attribute values are :mod:`videogen.evaluation.synthetic_world`'s.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from videogen.evaluation.synthetic_world import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SIZES, SPEEDS, STILL

ATTRIBUTES = ("colour", "shape", "direction", "speed", "size")
COARSE_THRESHOLD = 60.0  # RGB distance from the background above which a pixel is surely object
SQUARE_MIN_FILL = 0.89  # fill ratio thresholds between square (1.0), circle (0.785), triangle (0.5)
CIRCLE_MIN_FILL = 0.64
FAST_MIN_TRAVEL = 0.5  # travel / free room as judged: slow <= 0.3, fast 0.69-0.9 (the edge margin shrinks it)
LARGE_MIN_AREA = 0.145  # area fraction: small is 0.12, large 0.16-0.22


def _background_model(frames: np.ndarray) -> np.ndarray:
    """Per-row background (H, 3) from the two leftmost and rightmost columns: a robust line in y."""
    t, h = frames.shape[:2]
    border = np.concatenate([frames[:, :, :2], frames[:, :, -2:]], axis=2)  # (T, H, 4, 3)
    rows = np.median(border.transpose(1, 0, 2, 3).reshape(h, -1, 3), axis=1)  # (H, 3)
    y = np.arange(h, dtype=np.float64)
    keep = np.ones(h, dtype=bool)
    for _ in range(3):  # fit a + b*y per channel, drop rows the object (or noise) pulls off the line
        if keep.sum() < 2:
            return np.repeat(np.median(rows, axis=0, keepdims=True), h, axis=0)
        coef = np.polyfit(y[keep], rows[keep], 1)  # (2, 3)
        fit = coef[0][None] * y[:, None] + coef[1][None]  # (H, 3)
        resid = np.linalg.norm(rows - fit, axis=1)
        keep = resid < max(8.0, 3 * float(np.median(resid[keep])))
    return fit


def judge_clip(frames: np.ndarray) -> dict[str, Any]:
    """Estimate the attributes of a clip from its pixels alone.

    ``frames``: (T, H, W, 3) uint8 RGB (a still image is T=1). Returns ``colour``, ``shape``,
    ``direction`` (``"none"`` for no motion), ``speed``, ``size``, ``background`` (palette names),
    and the measurements behind them: ``area`` (object area / frame area, median over frames),
    ``fill`` (area / bounding-box area), ``displacement`` (dx, dy in pixels, first -> last frame),
    ``travel`` (|displacement| / free room along its axis). With no object found, the names are None.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"judge_clip wants (T, H, W, 3) RGB frames, got shape {frames.shape}")
    f = frames.astype(np.float32)
    t, h, w = f.shape[:3]
    bg = _background_model(f).astype(np.float32)[None, :, None, :]  # (1, H, 1, 3)
    coarse = np.linalg.norm(f - bg, axis=-1) > COARSE_THRESHOLD  # (T, H, W)
    bg_mid = bg[0, h // 2, 0]
    background = min(BACKGROUNDS, key=lambda n: np.linalg.norm(np.asarray(BACKGROUNDS[n].rgb) - bg_mid))
    result: dict[str, Any] = {"colour": None, "shape": None, "direction": None, "speed": None, "size": None,
                              "background": background, "area": 0.0, "fill": 0.0, "displacement": (0.0, 0.0),
                              "travel": 0.0}
    if coarse.sum() < 4 * t:
        return result
    obj = np.median(f[coarse], axis=0)  # (3,)
    result["colour"] = min(COLOURS, key=lambda n: np.linalg.norm(np.asarray(COLOURS[n]) - obj))
    # a pixel is object when it is closer to the object colour than to its row's background
    mask = np.linalg.norm(f - obj, axis=-1) < np.linalg.norm(f - bg, axis=-1)  # (T, H, W)

    areas, fills, extents, centroids = [], [], [], []
    for m in mask:
        ys, xs = np.nonzero(m)
        if len(xs) < 4:
            continue
        bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        areas.append(len(xs) / (h * w))
        fills.append(len(xs) / (bw * bh))
        extents.append((bw, bh))
        centroids.append((xs.mean(), ys.mean()))
    if not areas:
        return result
    area, fill = float(np.median(areas)), float(np.median(fills))
    result.update(area=area, fill=fill, size="large" if area >= LARGE_MIN_AREA else "small",
                  shape="square" if fill >= SQUARE_MIN_FILL else "circle" if fill >= CIRCLE_MIN_FILL else "triangle")
    dx, dy = (float(v) for v in np.subtract(centroids[-1], centroids[0]))
    result["displacement"] = (dx, dy)
    if max(abs(dx), abs(dy)) < 1.0:
        result.update(direction=STILL, speed=STILL)
        return result
    axis = 0 if abs(dx) >= abs(dy) else 1
    room = (w, h)[axis] - float(np.median([e[axis] for e in extents]))
    travel = abs((dx, dy)[axis]) / max(room, 1.0)
    result.update(direction=("right" if dx > 0 else "left") if axis == 0 else ("down" if dy > 0 else "up"),
                  travel=travel, speed="fast" if travel >= FAST_MIN_TRAVEL else "slow")
    return result


def prompt_attributes(prompt: str) -> dict[str, str]:
    """The attributes a synthetic caption names: colour and shape (the first ``<colour> <shape>`` or
    ``<colour> ... <shape>`` of the subject sentence), size, direction (left/right/up/down in the
    subject sentence; a still-image caption: ``none``) and speed (slow/fast)."""
    text = prompt.lower()
    subject = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    words = re.findall(r"[a-z]+", subject)
    out: dict[str, str] = {}
    for i, word in enumerate(words):
        if word in COLOURS and "colour" not in out:
            out["colour"] = word
            shape = next((w for w in words[i + 1: i + 5] if w in SHAPES), None)
            if shape:
                out["shape"] = shape
        elif word in SIZES and "size" not in out:
            out["size"] = word
    for word in words:
        if word in DIRECTIONS:
            out["direction"] = word
            break
    else:
        if re.search(r"\b(rests|sits motionless|still image|the image shows)\b", text):
            out["direction"] = STILL
    speed = re.findall(r"\b(" + "|".join(SPEEDS) + r")\b", text)
    if speed:
        out["speed"] = speed[0]
    return out


def judge_videos(videos: Sequence[np.ndarray], targets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``judge_<attr>`` accuracies (None where no target names the attribute), ``judge_all`` (every named
    attribute right), and the per-video verdicts under ``verdicts`` (not a metric)."""
    hits = {a: [] for a in ATTRIBUTES}
    all_right, verdicts = [], []
    for frames, want in zip(videos, targets):
        got = judge_clip(frames)
        named = {a: want[a] for a in ATTRIBUTES if want.get(a) is not None}
        if want.get("direction") == STILL and "speed" in named:  # a still image has no speed to judge
            named.pop("speed")
        right = {a: got.get(a) == v for a, v in named.items()}
        for a, ok in right.items():
            hits[a].append(ok)
        if right:
            all_right.append(all(right.values()))
        verdicts.append({"want": named, "got": {a: got.get(a) for a in named}})
    metrics: dict[str, Any] = {f"judge_{a}": (float(np.mean(v)) if v else None) for a, v in hits.items()}
    metrics["judge_all"] = float(np.mean(all_right)) if all_right else None
    metrics["verdicts"] = verdicts
    return metrics
