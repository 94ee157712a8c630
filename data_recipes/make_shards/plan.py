"""``make-shards`` steps 1 and 2: list and probe the files, then plan the shards.

The plan attaches captions (sidecar ``name.txt`` or a jsonl/csv captions file), applies the filters,
cuts long videos into clips (frame ranges), assigns keys and packs samples into shards of about
``shard_size_mb`` in sorted order. It depends only on the inputs and the arguments, never on
``workers``. Nothing here writes a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from videogen.data.decode import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, DecodeError, ImageDecoder, PyAVDecoder

MAX_KEY_CHARS = 80  # tar (USTAR) member names are at most 100 bytes: key + "-cNNN" + ".webm" fits
MEMBER_EXT = {"jpeg": "jpg"}  # one spelling per format inside shards


class MakeShardsError(ValueError):
    """A problem with the arguments or the output folder (bad input files are skipped, not raised)."""


# ---------------------------------------------------------------- listing files and captions


def list_files(src: Path) -> list[tuple[str, int, int]]:
    """Every file under ``src`` as ``(relative posix path, size, mtime_ns)``, sorted (``--out`` is
    never inside ``src``: videogen.data.out_folder)."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in files:
            path = Path(root) / name
            try:
                st = path.stat()
            except OSError:  # a dangling link: listed with size -1, reported as unreadable
                st = None
            found.append((path.relative_to(src).as_posix(), st.st_size if st else -1, st.st_mtime_ns if st else 0))
    return sorted(found)


def _extension(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _stem(rel: str) -> str:
    return rel[: -len(_extension(rel)) - 1] if _extension(rel) else rel


def _rel_to_src(path: str, src: Path) -> str:
    p = path.strip().replace("\\", "/")
    if os.path.isabs(p):
        try:
            return Path(p).resolve().relative_to(src.resolve()).as_posix()
        except ValueError:
            return p
    return Path(os.path.normpath(p)).as_posix()


def read_captions_file(path: Path, src: Path) -> dict[str, str]:
    """``{relative path: caption}`` from a jsonl file (rows ``{"file"|"path"|"video": ..., "caption"|
    "text": ...}``) or a csv file with such a header. The first row for a file wins."""
    file_keys, text_keys = ("file", "path", "video"), ("caption", "text")
    rows: list[tuple[str, dict]] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                if not any(k in header for k in file_keys) or not any(k in header for k in text_keys):
                    raise MakeShardsError(f"{path}: the csv header {header} needs a 'file' (or 'path'/'video') "
                                          "column and a 'caption' (or 'text') column")
                rows = [(f"row {i}", row) for i, row in enumerate(reader, start=2)]
        elif path.suffix.lower() in (".jsonl", ".json"):
            with open(path, encoding="utf-8-sig") as f:
                for i, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise MakeShardsError(f"{path} line {i}: not valid JSON ({e}); fix or delete that line") from e
                    if not isinstance(row, dict):
                        raise MakeShardsError(f"{path} line {i}: expected a JSON object, got {type(row).__name__}")
                    rows.append((f"line {i}", row))
        else:
            raise MakeShardsError(f"{path}: captions file must end in .jsonl or .csv")
    except (OSError, UnicodeDecodeError) as e:
        raise MakeShardsError(f"{path}: cannot read the captions file ({e}); it must be UTF-8 text") from e
    captions: dict[str, str] = {}
    for where, row in rows:
        file = next((row[k] for k in file_keys if isinstance(row.get(k), str) and row[k].strip()), None)
        text = next((row[k] for k in text_keys if isinstance(row.get(k), str)), None)
        if file is None or text is None:
            raise MakeShardsError(f"{path} {where}: needs a 'file' (or 'path'/'video') and a 'caption' "
                                  f"(or 'text') string; got keys {sorted(row)}")
        captions.setdefault(_rel_to_src(file, src), text.strip())
    return captions


# ---------------------------------------------------------------- probing one file


def probe_file(src: str, rel: str, size: int) -> dict[str, Any]:
    """``{"file", "info": {...}}`` for good media, else ``{"file", "reason", "detail"}``."""
    ext = _extension(rel)
    if ext not in MEDIA_EXTENSIONS:
        return {"file": rel, "reason": "not media", "detail": f"extension {ext or '(none)'!r} is not one of "
                f"{', '.join(MEDIA_EXTENSIONS)}"}
    if size == 0:
        return {"file": rel, "reason": "empty file", "detail": "0 bytes"}
    try:
        data = (Path(src) / rel).read_bytes()
        decoder = ImageDecoder() if ext in IMAGE_EXTENSIONS else PyAVDecoder()
        info = decoder.probe(data)
        decoder.decode(data, [0])  # the header can be fine and the stream broken
    except (OSError, DecodeError) as e:
        return {"file": rel, "reason": "unreadable", "detail": str(e)[:300]}
    return {"file": rel, "info": info.to_dict()}


def probe_job(job: tuple[str, str, int]) -> dict[str, Any]:
    return probe_file(*job)


# ---------------------------------------------------------------- the plan


def _sidecar_caption(src: Path, rel: str, names: set[str]) -> str | None:
    sidecar = _stem(rel) + ".txt"
    if sidecar not in names:
        return None
    try:
        return (src / sidecar).read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise DecodeError(f"sidecar {sidecar} is not UTF-8 ({e.reason}); re-save it as UTF-8") from e


def _clip_ranges(num_frames: int, fps: float, clip_seconds: float, min_frames: int) -> list[tuple[int, int]]:
    """Frame ranges ``[f0, f1)`` of ``clip_seconds`` each; a tail shorter than half a clip (or than
    ``min_frames``) is dropped."""
    per_clip = max(1, round(clip_seconds * fps))
    ranges = [(f0, min(f0 + per_clip, num_frames)) for f0 in range(0, num_frames, per_clip)]
    if ranges and (ranges[-1][1] - ranges[-1][0]) < max(min_frames, per_clip / 2, 1):
        ranges.pop()
    return ranges


def _filter(info: dict, rel: str, opts: dict) -> tuple[str, str] | None:
    w, h = info["width"], info["height"]
    if min(w, h) < opts["min_side"]:
        return "too small", f"{w}x{h}: shorter side {min(w, h)} < --min-side {opts['min_side']}"
    if _extension(rel) in IMAGE_EXTENSIONS:
        return None  # images are one-frame videos: frame and duration filters are for videos
    if info["num_frames"] < opts["min_frames"]:
        return "too few frames", f"{info['num_frames']} frames < --min-frames {opts['min_frames']}"
    if opts["max_duration"] is not None and info["duration"] > opts["max_duration"] and not opts["clip_seconds"]:
        return "too long", f"{info['duration']:.3f} s > --max-duration {opts['max_duration']} s"
    return None


def _sanitize(rel: str) -> str:
    """``dir/sub dir/clip.v2.mp4`` -> ``dir__sub_dir__clip_v2``: ASCII letters, digits, ``_`` and ``-``."""
    parts = (re.sub(r"[^0-9A-Za-z_-]+", "_", part).strip("_") for part in _stem(rel).split("/"))
    return "__".join(p for p in parts if p)


def _unique_key(rel: str, wanted: list[str], used: set[str]) -> str:
    """A key from the relative path; on a clash (or if too long/empty) a hash of the path is added."""
    base = _sanitize(rel)
    if base and len(base) <= MAX_KEY_CHARS and not any(base + s in used for s in wanted):
        return base
    digest = hashlib.sha1(rel.encode("utf-8")).hexdigest()
    for n in range(10, 41):
        key = f"{base[:MAX_KEY_CHARS - 12]}-{digest[:n]}".lstrip("-")
        if not any(key + s in used for s in wanted):
            return key
    raise MakeShardsError(f"{rel}: cannot find a unique sample key (two inputs with the same path hash?)")


def build_plan(probed: list[dict], names: set[str], src: Path, captions: dict[str, str], opts: dict
               ) -> tuple[list[list[dict]], list[dict]]:
    """Probe results -> (shards: lists of samples, skipped). ``probed`` is sorted by file."""
    samples, skipped, used = [], [], set()
    caption_files = {_stem(rel) + ".txt" for rel in names if _extension(rel) in MEDIA_EXTENSIONS}
    for r in probed:
        rel = r["file"]
        if "info" not in r:
            if not (r["reason"] == "not media" and rel in caption_files):  # sidecars are not skipped files
                skipped.append(r)
            continue
        info = r["info"]
        try:
            caption = captions.get(rel) or _sidecar_caption(src, rel, names)
        except (OSError, DecodeError) as e:
            skipped.append({"file": rel, "reason": "bad caption", "detail": str(e)})
            continue
        if not caption and not opts["allow_missing_captions"]:
            skipped.append({"file": rel, "reason": "no caption", "detail": f"no {_stem(rel)}.txt beside it and no "
                            "row in the captions file; pass --allow-missing-captions to keep it"})
            continue
        rejected = _filter(info, rel, opts)
        if rejected:
            skipped.append({"file": rel, "reason": rejected[0], "detail": rejected[1]})
            continue
        ext = MEMBER_EXT.get(_extension(rel), _extension(rel))
        size = (src / rel).stat().st_size
        limit = opts["max_duration"] if opts["max_duration"] is not None else opts["clip_seconds"]
        clips = None
        if opts["clip_seconds"] and ext not in IMAGE_EXTENSIONS and info["duration"] > limit:
            if info["fps"] <= 0:
                skipped.append({"file": rel, "reason": "unreadable", "detail": "no frame rate: cannot cut clips"})
                continue
            clips = _clip_ranges(info["num_frames"], info["fps"], opts["clip_seconds"], opts["min_frames"])
            if not clips:
                skipped.append({"file": rel, "reason": "too few frames", "detail": f"{info['num_frames']} frames "
                                f"make no clip of {opts['clip_seconds']} s at {info['fps']:g} fps"})
                continue
        suffixes = [f"-c{k:03d}" for k in range(len(clips))] if clips is not None else [""]
        key = _unique_key(rel, suffixes, used)
        used.update(key + s for s in suffixes)
        base = {"source": rel, "size": size, "caption": caption or "", "info": info}
        if clips is None:
            samples.append({**base, "key": key, "ext": ext, "est_bytes": size})
        for k, (f0, f1) in enumerate(clips or []):
            samples.append({**base, "key": key + suffixes[k], "ext": "mp4", "clip": [f0, f1],
                            "est_bytes": size * (f1 - f0) // max(info["num_frames"], 1)})
    return pack(samples, int(opts["shard_size_mb"] * 1024 * 1024)), sorted(skipped, key=lambda s: s["file"])


def pack(samples: list[dict], target_bytes: int) -> list[list[dict]]:
    """Consecutive samples into shards of about ``target_bytes`` (a shard holds at least one)."""
    shards: list[list[dict]] = []
    size = 0
    for s in samples:
        cost = s["est_bytes"] + len(s["caption"].encode("utf-8")) + 2048  # + json and tar headers
        if not shards or (size + cost > target_bytes and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += cost
    return shards
