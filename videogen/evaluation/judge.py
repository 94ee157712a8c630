"""The synthetic set's pixel judge on generated videos: did the video show what its prompt asked for?

The prompts are the synthetic set's captions (``videogen make-synthetic``: short ``a red circle`` or
the long ones that name size, colour, shape, direction, speed and background). What a prompt asks
for comes from the sample's ground-truth ``attributes`` when known (a held-out shard set's json),
else from the prompt's words (:func:`prompt_attributes`, the synthetic vocabulary). The video is
judged from its pixels by ``data_recipes.synthetic.judge_clip``. Accuracy of an attribute = share
of the videos whose prompt names it that show it. ``data_recipes`` is imported here only, when the
judge runs (the library does not depend on the recipes otherwise).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

ATTRIBUTES = ("colour", "shape", "direction", "speed", "size")


def _vocabulary():
    from data_recipes.synthetic import COLOURS, SHAPES, SIZES, SPEEDS

    return list(COLOURS), list(SHAPES), list(SPEEDS), list(SIZES)


def prompt_attributes(prompt: str) -> dict[str, str]:
    """The attributes a synthetic caption names: colour and shape (the first ``<colour> <shape>`` or
    ``<colour> ... <shape>`` of the subject sentence), size, direction (left/right/up/down in the
    subject sentence; a still-image caption: ``none``) and speed (slow/fast)."""
    colours, shapes, speeds, sizes = _vocabulary()
    text = prompt.lower()
    subject = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    words = re.findall(r"[a-z]+", subject)
    out: dict[str, str] = {}
    for i, word in enumerate(words):
        if word in colours and "colour" not in out:
            out["colour"] = word
            shape = next((w for w in words[i + 1: i + 5] if w in shapes), None)
            if shape:
                out["shape"] = shape
        elif word in sizes and "size" not in out:
            out["size"] = word
    for word in words:
        if word in ("left", "right", "up", "down"):
            out["direction"] = word
            break
    else:
        if re.search(r"\b(rests|sits motionless|still image|the image shows)\b", text):
            out["direction"] = "none"
    speed = re.findall(r"\b(" + "|".join(speeds) + r")\b", text)
    if speed:
        out["speed"] = speed[0]
    return out


def judge_videos(videos: Sequence[np.ndarray], targets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``judge_<attr>`` accuracies (None where no target names the attribute), ``judge_all`` (every named
    attribute right), and the per-video verdicts under ``verdicts`` (not a metric)."""
    from data_recipes.synthetic import judge_clip

    hits = {a: [] for a in ATTRIBUTES}
    all_right, verdicts = [], []
    for frames, want in zip(videos, targets):
        got = judge_clip(frames)
        named = {a: want[a] for a in ATTRIBUTES if want.get(a) is not None}
        if want.get("direction") == "none" and "speed" in named:  # a still image has no speed to judge
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
