"""``videogen curate --calibrate``: set each threshold by looking at your own clips.

For every rule of ``decide.RULES`` whose step ran, over the pieces that carry its score: the
threshold the rule uses (read from the same ``Rule``, so it is the one the decision used), how many
pieces fail it, the score's quantiles, and the ``EXAMPLES`` pieces nearest the threshold on each
side (the ones a change of threshold would move first), each drawn as a PNG strip of ``FRAMES``
evenly spaced frames at the analysis size with its key and score written under it:

    OUT/calibration/FLAG/drop-1-KEY.png, drop-2-..., keep-1-KEY.png, ...  (FLAG: static, jittery, dark, ...)

and the whole as ``calibration`` in curation.json (``videogen curate --calibrate``, on a first run
or on a rerun that only judges again: the frames come from the scored pieces in ``OUT/.curate``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes.curate.decide import RULES, Rule
from data_recipes.curate.frames import spread
from data_recipes.curate.options import CurateOptions

EXAMPLES = 3
FRAMES = 4
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
CAPTION = 14  # pixels of text under a strip


def _side(rule: Rule, entries: list[dict], opts: CurateOptions) -> tuple[list[tuple], list[tuple]]:
    """(failing, passing) pieces as (distance to the threshold, value, entry), nearest first."""
    fail, keep = [], []
    t = rule.threshold(opts)
    for e in entries:
        s = e.get("scores") or {}
        if not e["scored"] or not isinstance(s.get(rule.score), (int, float)) or isinstance(s.get(rule.score), bool):
            continue
        try:
            failed = rule.fails(s, opts)
        except KeyError:
            continue
        (fail if failed else keep).append((abs(float(s[rule.score]) - t), float(s[rule.score]), e))
    fail.sort(key=lambda x: (x[0], x[2]["order"]))
    keep.sort(key=lambda x: (x[0], x[2]["order"]))
    return fail, keep


def plan(entries: list[dict], opts: CurateOptions) -> dict[str, dict[str, Any]]:
    """Per rule (``SCORE:FLAG``): the threshold, counts, quantiles and the example pieces chosen."""
    out = {}
    for rule in RULES:
        if rule.step not in opts.steps:
            continue
        fail, keep = _side(rule, entries, opts)
        values = np.array([v for _, v, _ in fail + keep])
        if not len(values):
            continue
        out[f"{rule.score}:{rule.flag}"] = {
            "score": rule.score, "flag": rule.flag, "step": rule.step, "option": rule.option,
            "threshold": rule.threshold(opts), "fails_when": ("below" if rule.below else "above"),
            "pieces": int(len(values)), "failing": len(fail),
            "quantiles": {f"{q:g}": round(float(np.quantile(values, q)), 6) for q in QUANTILES},
            "examples": {side: [{"key": e["key"], "value": v} for _, v, e in rows[:EXAMPLES]]
                         for side, rows in (("drop", fail), ("keep", keep))}}
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def strip(frames: np.ndarray, caption: str) -> np.ndarray:
    """(T, h, w, 3) uint8 -> (h + CAPTION, FRAMES * w, 3) uint8: ``FRAMES`` evenly spaced frames side by
    side, the caption under them."""
    from PIL import Image, ImageDraw

    picks = spread(len(frames), FRAMES)
    row = np.concatenate([frames[i] for i in picks], axis=1)  # (h, k * w, 3)
    img = Image.new("RGB", (row.shape[1], row.shape[0] + CAPTION), "white")
    img.paste(Image.fromarray(row), (0, 0))
    ImageDraw.Draw(img).text((2, row.shape[0] + 1), caption, fill="black")
    return np.asarray(img)


def write(folder: Path, calibration: dict[str, dict], frames_of) -> None:
    """Draw every example of ``calibration`` (``frames_of(key)`` -> its (T, h, w, 3) analysis frames)
    into ``folder/calibration/FLAG/SIDE-N-KEY.png``; adds each example's ``png`` (relative to the report)."""
    from PIL import Image

    for item in calibration.values():
        for side, examples in item["examples"].items():
            for n, ex in enumerate(examples, 1):
                frames = frames_of(ex["key"])
                if frames is None:  # (unreadable now: counted as a skip when it was scored)
                    continue
                rel = Path("calibration") / _safe(item["flag"]) / f"{side}-{n}-{_safe(ex['key'])}.png"
                path = folder / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                caption = f"{ex['key']}  {item['score']} {ex['value']:.6g} ({side}; threshold {item['threshold']:g})"
                Image.fromarray(strip(frames, caption)).save(path)
                ex["png"] = str(rel)
