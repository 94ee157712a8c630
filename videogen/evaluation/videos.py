"""The videos a report evaluates, read from disk into one shape: :class:`EvalVideo` (uint8 frames
plus the prompt and, when known, the ground-truth attributes).

* a folder of mp4s (``--videos DIR``): every ``*.mp4``; prompts from ``DIR/samples.jsonl`` (what
  ``videogen evaluate`` writes: one ``{"file", "prompt", "attributes"?, "seed"?}`` per line) or a
  ``NAME.txt`` beside ``NAME.mp4``; a video without a prompt is still measured by the prompt-free
  metrics;
* a shard set (``--reference``, or ``--prompts`` given shards): the loader's own stages
  (``read_tar -> group_samples -> parse``), the caption named by ``caption`` (``txt`` or a json
  ``captions`` name) and json ``attributes``.

Everything read is hostile: an undecodable mp4, a bad line, a clip that is too short is skipped and
counted (``Skips``), never a traceback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

log = logging.getLogger("videogen.evaluate")


@dataclass(eq=False)
class EvalVideo:
    name: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    prompt: str | None = None
    attributes: dict[str, Any] | None = None
    fps: float = 8.0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _sidecar(folder: Path, skips) -> dict[str, dict[str, Any]]:
    path = folder / "samples.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            skips.add("bad_samples_line", str(path), f"line {n}", str(e)[:100])
            continue
        if isinstance(row, dict) and isinstance(row.get("file"), str):
            out[Path(row["file"]).name] = row
        else:
            skips.add("bad_samples_line", str(path), f"line {n}", "not an object with a 'file'")
    return out


def read_video_folder(folder: str | Path, skips, limit: int | None = None) -> list[EvalVideo]:
    """The mp4s of ``folder`` in name order, with their prompts (see the module docstring)."""
    from videogen.data.decode import DecodeError, PyAVDecoder

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--videos {folder}: no such folder (give a folder of .mp4 files)")
    files = sorted(folder.glob("*.mp4"))
    if not files:
        raise FileNotFoundError(f"--videos {folder}: no .mp4 files in it")
    rows, decoder, out = _sidecar(folder, skips), PyAVDecoder(), []
    for path in files[:limit]:
        data = path.read_bytes()
        try:
            info = decoder.probe(data)
            frames = decoder.decode(data, list(range(info.num_frames)))
        except DecodeError as e:
            skips.add("decode_error", str(path), path.name, str(e)[:200])
            continue
        row = rows.get(path.name, {})
        prompt = row.get("prompt")
        if prompt is None and path.with_suffix(".txt").is_file():
            prompt = path.with_suffix(".txt").read_text(encoding="utf-8", errors="replace").strip() or None
        attributes = row.get("attributes") if isinstance(row.get("attributes"), dict) else None
        out.append(EvalVideo(path.stem, frames, prompt if isinstance(prompt, str) else None, attributes,
                             info.fps or 8.0, row.get("seed") if isinstance(row.get("seed"), int) else None))
    return out


def shard_records(spec: str, skips) -> Iterator[Any]:
    """The records of a shard set (a folder, glob or single shard), in shard order."""
    from videogen.data import stages
    from videogen.data.decode import make_decoder
    from videogen.data.shards import expand_urls

    urls = expand_urls(spec)
    if not urls:
        raise FileNotFoundError(f"{spec}: no .tar shards found")
    yield from stages.parse(stages.group_samples(stages.read_tar(urls, skips, 512 * 2**20)), skips,
                            make_decoder("pyav"), require_caption=False)


def caption_of(record, caption: str) -> str:
    if caption == "txt":
        return record.caption
    return ((record.meta.get("captions") or {}).get(caption)) or record.caption


def iter_shard_videos(spec: str, skips, limit: int | None = None, caption: str = "txt", min_frames: int = 1,
                      max_frames: int | None = None) -> Iterator[EvalVideo]:
    """Decoded clips of a shard set, one at a time (memory stays at one clip), with at least
    ``min_frames`` frames (the others counted as skipped); only the first ``max_frames`` are decoded."""
    from videogen.data.decode import DecodeError, decoder_for, make_decoder

    decoder, n = make_decoder("pyav"), 0
    for record in shard_records(spec, skips):
        if limit is not None and n >= limit:
            return
        if record.num_frames < min_frames:
            skips.add("too_short", record.url, record.key, f"{record.num_frames} frames < {min_frames}")
            continue
        count = record.num_frames if max_frames is None else min(record.num_frames, max_frames)
        try:
            frames = decoder_for(record.ext, decoder).decode(record.media, list(range(count)))
        except DecodeError as e:
            skips.add("decode_error", record.url, record.key, str(e)[:200])
            continue
        attributes = record.meta.get("attributes")
        n += 1
        yield EvalVideo(record.key, frames, caption_of(record, caption) or None,
                        attributes if isinstance(attributes, dict) else None, record.fps or 8.0)


def read_shard_videos(spec: str, skips, limit: int | None = None, caption: str = "txt",
                      min_frames: int = 1) -> list[EvalVideo]:
    """Every decoded clip of a shard set (see :func:`iter_shard_videos`)."""
    return list(iter_shard_videos(spec, skips, limit, caption, min_frames))


def fit_clip(frames: np.ndarray, num_frames: int, height: int, width: int):
    """(T, H, W, 3) uint8 -> (3, num_frames, height, width) float in [-1, 1]: the first ``num_frames``
    frames, resized to cover and centre cropped; None when the clip is shorter."""
    import torch
    import torch.nn.functional as F

    if len(frames) < num_frames:
        return None
    x = torch.from_numpy(np.ascontiguousarray(frames[:num_frames])).permute(3, 0, 1, 2).float()  # c t h w
    h, w = x.shape[2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return (x[:, :, top: top + height, left: left + width] / 127.5 - 1).clamp(-1, 1)


def to_frames(video) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8 (the rounding of written mp4s and logged videos)."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
