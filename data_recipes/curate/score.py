"""Pass 1 of a curation run, one input shard at a time: split, crop, score.

Every sample of the shard is decoded once at the analysis size; the scene-split step may turn it
into several pieces and the quality step may crop its letterbox bars (both re-encode), then every
piece gets its scores (quality, motion, perceptual hash, model scorers) in ``json["curation"]``.
The pieces are written, scored but not yet judged, to ``WORK/scored/shard-NNNNNN.tar``, and a
``.done.json`` beside it lists every piece's scores, the fragments dropped and the inputs skipped.
Judging (thresholds, duplicates across the whole set, the filter) happens after every shard is
scored (see ``decide.py``), so thresholds can change without scoring again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from data_recipes.curate import dedup, motion, quality, scene
from data_recipes.curate.frames import Clip, decode_clip, encode_rgb, full_frames
from data_recipes.curate.options import CurateOptions
from videogen.data import stages
from videogen.data.decode import DecodeError, MediaDecoder, make_decoder
from videogen.data.shards import is_remote
from videogen.data.writer import TarShardWriter

MAX_MEMBER_BYTES = 2**31


def _shape(clip: Clip) -> list:
    return [clip.width, clip.height, clip.num_frames, clip.fps]


def _reencoded(parent: Clip, key: str, frames, decoder: MediaDecoder, opts: CurateOptions, meta: dict) -> Clip:
    """A new mp4 clip from native ``frames`` (T, H, W, 3), decoded again at the analysis size."""
    mp4 = encode_rgb(frames, parent.fps)
    t, h, w = frames.shape[0], frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    meta = {**meta, "width": w, "height": h, "num_frames": t,
            "duration": round(t / parent.fps, 6) if parent.fps > 0 else 0.0}
    meta.pop("codec", None)
    record = stages.Record(key, parent.url, "mp4", mp4, parent.caption, meta, w, h, t, parent.fps)
    return decode_clip(record, decoder, opts.analysis_side, opts.max_frames)


def split_scenes(clip: Clip, decoder: MediaDecoder, opts: CurateOptions) -> tuple[list[Clip], list[dict]]:
    """The clip's scenes as new clips (or the clip itself when it has one), and the fragments dropped."""
    cuts = scene.detect_cuts(scene.cut_scores(clip.frames), opts.cut_threshold, opts.cut_ratio)
    ranges = scene.scene_ranges(clip.num_frames, clip.indices, cuts)
    if len(ranges) == 1:
        clip.scores["num_scenes"] = 1
        return [clip], []
    pieces, fragments = [], []
    frames = full_frames(clip, decoder)  # (T, H, W, 3) native
    for k, (a, b) in enumerate(ranges):
        key = f"{clip.key}_s{k}"
        info = {"source": clip.key, "index": k, "start_frame": a, "end_frame": b, "num_scenes": len(ranges)}
        if b - a < opts.min_scene_frames:
            fragments.append({"key": key, "reasons": ["scene-split:fragment"], "scores": {"scene": info}})
            continue
        piece = _reencoded(clip, key, frames[a:b], decoder, opts, clip.meta)
        piece.scores.update(num_scenes=len(ranges), scene=info)
        pieces.append(piece)
    return pieces, fragments


def crop_letterbox(clip: Clip, bars: list[int], decoder: MediaDecoder, opts: CurateOptions) -> Clip:
    t, b, l, r = bars
    frames = full_frames(clip, decoder)[:, t: clip.height - b, l: clip.width - r]  # (T, H', W', 3)
    cropped = _reencoded(clip, clip.key, frames, decoder, opts, clip.meta)
    cropped.scores.update(clip.scores)
    return cropped


def score_clip(clip: Clip, decoder: MediaDecoder, opts: CurateOptions, scorers: list) -> Clip:
    """Every score the run's steps and scorers give (``clip.scores``); may return a cropped clip."""
    if "quality" in opts.steps:
        q = quality.quality_scores(clip.frames, len(clip.media), clip.width, clip.height, clip.duration)
        if q["letterbox"] and opts.crop_letterbox and not clip.is_image:
            bars = q["letterbox"]
            clip = crop_letterbox(clip, bars, decoder, opts)
            q = quality.quality_scores(clip.frames, len(clip.media), clip.width, clip.height, clip.duration)
            q["letterbox"], clip.scores["cropped"] = bars, True
        clip.scores.setdefault("cropped", False)
        clip.scores.update(q)
    if "motion" in opts.steps and not clip.is_image:
        clip.scores.update(motion.motion_scores(clip.frames, clip.indices, clip.fps, opts.motion_pairs))
    if "dedup" in opts.steps:
        clip.scores.update(dedup.signatures(clip.frames))
    for scorer in scorers:
        clip.scores[scorer.name] = scorer.score(clip.frames, clip.caption, clip.meta)
    return clip


def score_shard(url: str, index: int, scored_dir: str, opts: CurateOptions, scorers: list,
                decoder_name: str = "auto") -> dict[str, Any]:
    """Score one input shard into ``scored_dir``; returns (and saves) its done record."""
    began = time.perf_counter()
    decoder = make_decoder(decoder_name)
    skips = stages.Skips(max_logged=20, keep=True)  # logged (the first 20 of a shard) and kept for the report
    name = f"shard-{index:06d}"
    entries: list[dict] = []
    records = stages.parse(stages.group_samples(stages.read_tar([url], skips, MAX_MEMBER_BYTES)), skips, decoder,
                           require_caption=False)
    with TarShardWriter(Path(scored_dir) / f"{name}.tar") as writer:
        seen, written = 0, set()
        for r in records:
            seen += 1
            try:
                clip = decode_clip(r, decoder, opts.analysis_side, opts.max_frames)
                if "scene-split" in opts.steps and not clip.is_image:
                    pieces, fragments = split_scenes(clip, decoder, opts)
                else:
                    pieces, fragments = [clip], []
                pieces = [score_clip(p, decoder, opts, scorers) for p in pieces]
            except DecodeError as e:
                skips.add("decode_error", r.url, r.key, str(e)[:200])
                continue
            except Exception as e:  # an encoder or scorer failure on one sample must not end the run: count it
                skips.add("score_error", r.url, r.key, f"{type(e).__name__}: {e}"[:200])
                continue
            for f in fragments:
                entries.append({**f, "source": f"{Path(url).name}/{r.key}", "scored": False})
            for p in pieces:
                if p.key in written:
                    skips.add("duplicate_key", r.url, p.key, "a scene piece's key is taken by another sample")
                    continue
                written.add(p.key)
                meta = {**p.meta, "curation": p.scores}
                writer.write({"__key__": p.key, p.ext: p.media, "txt": p.caption, "json": meta})
                entries.append({"key": p.key, "source": f"{Path(url).name}/{r.key}", "scored": True,
                                "shape": _shape(p), "scores": p.scores})
    record = {"input": url, "input_bytes": _size(url), "name": name, "inputs_read": seen,
              "size_bytes": writer.stats.size_bytes,
              "entries": entries, "skipped": skips.records, "seconds": round(time.perf_counter() - began, 3)}
    path = Path(scored_dir) / f"{name}.done.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return record


def _size(url: str) -> int | None:
    try:
        return None if is_remote(url) else os.path.getsize(url)
    except OSError:
        return None


def load_done(scored_dir: Path, index: int, url: str) -> dict | None:
    """The done record of input shard ``url`` scored before, when its scored tar is still there whole
    and the input has kept its size (a changed input is scored again)."""
    name = f"shard-{index:06d}"
    try:
        record = json.loads((scored_dir / f"{name}.done.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    tar = scored_dir / f"{name}.tar"
    if not tar.is_file() or tar.stat().st_size != record.get("size_bytes") or record.get("input_bytes") != _size(url):
        return None
    return record
