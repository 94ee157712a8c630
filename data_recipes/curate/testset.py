"""A labelled set for checking curation: synthetic clips of every kind the steps must find.

``write_curation_set(out, num_clips, seed)`` writes WebDataset shards + ``dataset.json`` and
``labels.json`` (key -> kind and what the steps should report). The kinds:

* ``normal``: a shape moving in a straight line (``data_recipes.synthetic.generate_sample``), at
  least ``MIN_SPEED`` pixels a frame (the synthetic set also has shapes that creep a few pixels in
  a whole clip: near enough to static that they are left out here);
* ``static``: the same kind of scene with the shape standing still;
* ``two_scene``: two different moving scenes (other colour and background) joined by a hard cut
  at a known frame (``cut``);
* ``duplicate``: the exact bytes of a ``normal`` clip under another key, or its frames scaled to
  3/4 and re-encoded at a worse quality (crf 32); ``dup_of`` names the original, which sits in an
  earlier shard;
* ``black``: every frame black;
* ``jittery``: a moving shape filmed by a shaking camera (each frame shifted by up to 4 px);
* ``letterbox``: a moving shape with black bars above and below (``bars``: top, bottom, left, right);
* ``colour_motion``: a shape moving at least 1 pixel a frame that only colour tells from its
  background: ``isoluminant`` (the same BT.601 luma, another hue: filmed with camera noise, sigma
  2, at crf 23, as the footage that showed grayscale measures blind to it) or ``low_contrast``
  (16-24 levels lighter or darker, the same hue); must be kept;
* ``colour_static``: the same kinds of scene with the shape standing still; must be dropped as static.

Clips of every kind come from their own random streams, so no two clips are alike by chance.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from data_recipes.curate.frames import encode_rgb
from data_recipes.synthetic import ClipSpec, draw_spec, generate_sample, long_caption, render_frames, shape_coverage, \
    short_caption
from videogen.evaluation.synthetic_world import BACKGROUNDS

# share of each kind (the rest are normal clips)
MIX = {"static": 0.1, "two_scene": 0.1, "duplicate": 0.12, "black": 0.06, "jittery": 0.08, "letterbox": 0.08,
       "colour_motion": 0.08, "colour_static": 0.04}
LABELS_NAME = "labels.json"
MIN_SPEED = 0.5  # pixels a frame: a normal clip's shape moves at least this fast
STREAM = 10**6  # random streams of the kinds start here: generate_sample(index, seed) uses [seed, index]


def moving(spec: ClipSpec, min_speed: float = MIN_SPEED) -> bool:
    """The shape travels at least ``min_speed`` pixels a frame (slower is near enough to static)."""
    travel = float(np.hypot(spec.end[0] - spec.start[0], spec.end[1] - spec.start[1]))
    return spec.num_frames > 1 and travel / (spec.num_frames - 1) >= min_speed


def _spec(seed: int, stream: int, index: int, min_speed: float = MIN_SPEED) -> ClipSpec:
    """A clearly moving spec of at least 17 frames from its own random stream."""
    rng = np.random.default_rng([seed, STREAM + stream, index])
    for _ in range(1000):
        spec = draw_spec(rng)
        if spec.num_frames >= 17 and moving(spec, min_speed):
            return spec
    raise RuntimeError("no spec drawn")  # pragma: no cover  (1000 draws always find one)


LUMA = np.array([0.299, 0.587, 0.114])  # BT.601


def isoluminant_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(object, background) RGB of the same BT.601 luma and different hue, at least 80 apart in RGB."""
    for _ in range(1000):
        bg = rng.uniform(70, 190, 3)
        d = np.cross(LUMA, rng.normal(size=3))  # a direction of no luma change
        d /= np.linalg.norm(d)
        room = min(((240 if v > 0 else 16) - b) / v for b, v in zip(bg, d) if abs(v) > 1e-6)  # to the gamut's edge
        if room >= 80:
            return bg + d * rng.uniform(80, room), bg
    raise RuntimeError("no isoluminant pair drawn")  # pragma: no cover


def low_contrast_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(object, background) RGB of one hue, the object 16-24 luma levels lighter or darker."""
    bg = rng.uniform(60, 190, 3)
    return bg + rng.choice([-1.0, 1.0]) * rng.uniform(16, 24), bg


def colour_frames(spec: ClipSpec, obj: np.ndarray, bg: np.ndarray, rng: np.random.Generator,
                  noise: float) -> np.ndarray:
    """The spec's shape and motion drawn in the colours ``obj`` on a flat ``bg``, with Gaussian camera noise."""
    cover = shape_coverage(spec)[..., None]  # (T, H, W, 1)
    frames = bg + (obj - bg) * cover  # (T, H, W, 3)
    if noise > 0:
        frames = frames + rng.normal(0.0, noise, frames.shape)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _colour_sample(kind: str, i: int, seed: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Clip ``i`` of ``colour_motion`` or ``colour_static``: even ones isoluminant, odd ones low-contrast."""
    spec = _spec(seed, 11 if kind == "colour_motion" else 12, i, min_speed=1.0)
    if kind == "colour_static":
        spec = dataclasses.replace(spec, end=spec.start)
    own = np.random.default_rng([seed, STREAM + 13, i, kind == "colour_static"])
    variant = "isoluminant" if i % 2 == 0 else "low_contrast"
    obj, bg = isoluminant_pair(own) if variant == "isoluminant" else low_contrast_pair(own)
    noise, crf = (2.0, 23) if variant == "isoluminant" else (0.0, 18)
    key = f"{kind.replace('_', '')}-{i:04d}"
    sample = _sample(key, colour_frames(spec, obj, bg, own, noise), spec.fps, spec, rng, crf)
    return sample, {"kind": kind, "variant": variant, "object_rgb": [round(float(v)) for v in obj],
                    "background_rgb": [round(float(v)) for v in bg]}


def _sample(key: str, frames: np.ndarray, fps: int, spec: ClipSpec, rng: np.random.Generator, crf: int = 18) -> dict:
    t, h, w = frames.shape[:3]
    meta = {"width": w, "height": h, "fps": fps, "num_frames": t, "duration": round(t / fps, 6),
            "source": "curation-testset", "attributes": spec.attributes, "captions": {"long": long_caption(spec, rng)}}
    return {"__key__": key, "mp4": encode_rgb(frames, fps, crf), "txt": short_caption(spec), "json": meta}


def _shake(frames: np.ndarray, rng: np.random.Generator, amplitude: int = 4) -> np.ndarray:
    """Shift each frame by a random (dy, dx) in [-amplitude, amplitude], edges repeated."""
    out = np.empty_like(frames)
    pad = np.pad(frames, ((0, 0), (amplitude, amplitude), (amplitude, amplitude), (0, 0)), mode="edge")
    h, w = frames.shape[1:3]
    for i in range(len(frames)):
        dy, dx = rng.integers(-amplitude, amplitude + 1, size=2)
        out[i] = pad[i, amplitude + dy: amplitude + dy + h, amplitude + dx: amplitude + dx + w]
    return out


def _resize(frames: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = frames.shape[1:3]
    size = (max(16, round(w * scale / 2) * 2), max(16, round(h * scale / 2) * 2))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def make_samples(num_clips: int, seed: int = 0) -> tuple[list[dict], dict[str, dict]]:
    """The set's samples (originals before duplicates) and its labels."""
    counts = {kind: max(1, round(num_clips * share)) for kind, share in MIX.items()}
    counts["normal"] = num_clips - sum(counts.values())
    if counts["normal"] < counts["duplicate"]:
        raise ValueError(f"{num_clips} clips are too few for every kind: give at least 12")
    rng = np.random.default_rng([seed, STREAM + 99])
    samples: list[dict] = []
    labels: dict[str, dict] = {}
    normals: list[tuple[dict, ClipSpec]] = []
    index = 0
    while len(normals) < counts["normal"]:  # the synthetic set's clips that clearly move
        spec = draw_spec(np.random.default_rng([int(seed), index]))  # what generate_sample draws (same stream)
        if moving(spec):
            s = generate_sample(index, seed)
            samples.append(s)
            normals.append((s, spec))
            labels[s["__key__"]] = {"kind": "normal"}
        index += 1
    for i in range(counts["static"]):
        spec = _spec(seed, 1, i)
        key = f"static-{i:04d}"
        samples.append(_sample(key, render_frames(dataclasses.replace(spec, end=spec.start)), spec.fps, spec, rng))
        labels[key] = {"kind": "static"}
    for i in range(counts["two_scene"]):
        a = _spec(seed, 2, i)
        b = _second_scene(a, np.random.default_rng([seed, STREAM + 3, i]))
        fa, fb = render_frames(a), render_frames(b)
        cut = max(9, len(fa) * 2 // 3)
        frames = np.concatenate([fa[:cut], fb[: max(12, len(fb))]])
        key = f"twoscene-{i:04d}"
        samples.append(_sample(key, frames, a.fps, a, rng))
        labels[key] = {"kind": "two_scene", "cut": int(cut), "num_frames": int(len(frames))}
    for i in range(counts["black"]):
        spec = _spec(seed, 5, i)
        key = f"black-{i:04d}"
        samples.append(_sample(key, np.zeros((spec.num_frames, spec.height, spec.width, 3), np.uint8), spec.fps,
                               spec, rng))
        labels[key] = {"kind": "black"}
    for i in range(counts["jittery"]):
        spec = _spec(seed, 6, i)
        key = f"jittery-{i:04d}"
        samples.append(_sample(key, _shake(render_frames(spec), np.random.default_rng([seed, STREAM + 7, i])), spec.fps, spec, rng))
        labels[key] = {"kind": "jittery"}
    for i in range(counts["letterbox"]):
        spec = _spec(seed, 8, i)
        frames = render_frames(spec)
        bar = max(4, spec.height // 8)
        frames = np.pad(frames, ((0, 0), (bar, bar), (0, 0), (0, 0)))
        key = f"letterbox-{i:04d}"
        samples.append(_sample(key, frames, spec.fps, spec, rng))
        labels[key] = {"kind": "letterbox", "bars": [bar, bar, 0, 0], "content": [spec.width, spec.height]}
    for kind in ("colour_motion", "colour_static"):
        for i in range(counts[kind]):
            sample, label = _colour_sample(kind, i, seed, rng)
            samples.append(sample)
            labels[sample["__key__"]] = label
    for i in range(counts["duplicate"]):
        original, spec = normals[i % len(normals)]
        key = f"zdup-{i:04d}"  # sorts after every original; placed in the last shards
        if i % 2 == 0:
            dup = {**original, "__key__": key}
        else:
            frames = _resize(render_frames(spec), 0.75)
            dup = _sample(key, frames, spec.fps, spec, rng, crf=32)
        samples.append(dup)
        labels[key] = {"kind": "duplicate", "dup_of": original["__key__"], "exact": i % 2 == 0}
    return samples, labels


def _second_scene(a: ClipSpec, rng: np.random.Generator) -> ClipSpec:
    """A scene of a's frame size and rate with another colour and background (drawn until one fits)."""
    for _ in range(2000):
        c = draw_spec(rng)
        if (c.width, c.height) == (a.width, a.height) and c.colour != a.colour and c.background != a.background \
                and a.colour not in BACKGROUNDS[c.background].clashes and moving(c):
            return dataclasses.replace(c, fps=a.fps, num_frames=max(12, c.num_frames))
    raise RuntimeError("no second scene fits")  # pragma: no cover  (2000 draws always find one)


def write_curation_set(out: str | Path, num_clips: int = 48, seed: int = 0, shard_size: int = 8) -> dict[str, dict]:
    """Shards (originals first, duplicates last) + ``dataset.json`` + ``labels.json`` in ``out``."""
    from videogen.data.manifest import DatasetManifest, provenance
    from videogen.data.writer import ShardSequenceWriter

    samples, labels = make_samples(num_clips, seed)
    originals = [s for s in samples if labels[s["__key__"]]["kind"] != "duplicate"]
    dups = [s for s in samples if labels[s["__key__"]]["kind"] == "duplicate"]
    order = np.random.default_rng([seed, STREAM + 100]).permutation(len(originals))
    out = Path(out)
    with ShardSequenceWriter(out, max_count=shard_size) as writer:
        for s in [originals[i] for i in order] + dups:
            writer.write(s)
    DatasetManifest(writer.finished, provenance("curation-testset", {"num_clips": num_clips, "seed": seed})).save(out)
    (out / LABELS_NAME).write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    return labels


# --- scoring a curation run against the labels ----------------------------------------------------

KINDS = ("static", "duplicate", "two_scene", "black", "jittery", "letterbox", "colour_static", "colour_motion")
COLOUR_KINDS = ("colour_static", "colour_motion")


def evaluate(report: dict, labels: dict[str, dict], cut_tolerance: int = 2) -> dict[str, dict]:
    """Precision and recall per kind of a curation ``report`` (curation.json) against ``labels``.

    A clip is *found* as: ``static`` when dropped by ``motion:static``; ``black`` by ``quality:black``;
    ``jittery`` by ``motion:jittery``; ``duplicate`` when dropped by ``dedup:duplicate`` in favour of
    its original; ``two_scene`` when split into exactly two pieces with the cut within
    ``cut_tolerance`` frames of the true one; ``letterbox`` when cropped by exactly the bars added;
    ``colour_static`` when dropped by ``motion:static``; ``colour_motion`` when kept. The two colour
    kinds are judged among the colour clips, the others among the rest (so ``colour_motion``'s
    precision is the share of kept colour clips that do move, and ``static`` keeps its meaning).
    Precision counts every clip found as that kind, recall every clip of that kind."""
    by_source: dict[str, list[dict]] = {}
    for s in report["samples"]:
        by_source.setdefault(s["source"].split("/", 1)[1], []).append(s)

    def found(key: str, kind: str) -> bool:
        pieces = by_source.get(key, [])
        if kind == "two_scene":
            starts = sorted(p["scores"]["scene"]["start_frame"] for p in pieces if "scene" in p["scores"])
            truth = labels[key].get("cut")
            return len(pieces) == 2 and truth is not None and len(starts) == 2 and abs(starts[1] - truth) <= cut_tolerance \
                if truth is not None else len(pieces) > 1
        if len(pieces) != 1:
            return False
        p = pieces[0]
        first = p["reasons"][0] if p["reasons"] else None
        if kind == "duplicate":
            return first == "dedup:duplicate" and labels[key].get("dup_of", p["scores"].get("duplicate_of")) == \
                p["scores"].get("duplicate_of")
        if kind == "letterbox":
            bars = p["scores"].get("letterbox")
            return bool(p["scores"].get("cropped")) and (labels[key].get("bars") in (None, bars))
        if kind == "colour_motion":
            return first is None
        return first == {"static": "motion:static", "black": "quality:black", "jittery": "motion:jittery",
                         "colour_static": "motion:static"}[kind]

    out = {}
    for kind in KINDS:
        truth = {k for k, v in labels.items() if v["kind"] == kind}
        family = {k for k, v in labels.items() if (v["kind"] in COLOUR_KINDS) == (kind in COLOUR_KINDS)}
        predicted = {k for k in family if found(k, kind)}
        tp = len(truth & predicted)
        out[kind] = {"clips": len(truth), "found": len(predicted), "true_positives": tp,
                     "precision": round(tp / len(predicted), 4) if predicted else 1.0,
                     "recall": round(tp / len(truth), 4) if truth else 1.0,
                     "missed": sorted(truth - predicted), "wrong": sorted(predicted - truth)}
    return out
