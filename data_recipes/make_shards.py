"""Real videos and images in a folder -> WebDataset shards + ``dataset.json`` (``videogen make-shards``).

Three steps, each over ``workers`` processes:

1. **probe**: every file under ``src`` is listed; media (by extension) is probed with
   ``videogen.data.decode`` and its first frame decoded, so corrupt files are caught here.
2. **plan**: captions are attached (sidecar ``name.txt`` or a jsonl/csv captions file), the filters
   applied, long videos cut into clips (frame ranges), keys assigned and samples packed into shards
   of about ``shard_size_mb`` in sorted order. The plan depends only on the inputs and the arguments,
   never on ``workers``, and is saved as ``OUT/.make-shards/plan.json``.
3. **write**: each shard is written atomically (``TarShardWriter``); when it is on disk a
   ``.make-shards/shard-NNNNNN.done.json`` records its statistics. A rerun with the same arguments
   keeps every shard that has both and writes the rest; other arguments into the same folder are
   refused.

Original bytes are stored as they are; only clips are re-encoded (H.264 mp4, frame-accurate,
video only). Nothing here aborts on a bad input file: it is skipped and listed with its reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sys
from collections import Counter
from contextlib import contextmanager
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from videogen.data.decode import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, DecodeError, ImageDecoder, PyAVDecoder
from videogen.data.manifest import MANIFEST_NAME, DatasetManifest, ShardStats, provenance
from videogen.data.out_folder import check_out_apart
from videogen.data.writer import TarShardWriter, shard_name

STATE_DIR = ".make-shards"
PLAN_FORMAT = "videogen-make-shards-plan/1"
CLIP_CODEC, CLIP_CRF, CLIP_PRESET = "libx264", 18, "veryfast"
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


def _probe_job(job: tuple[str, str, int]) -> dict[str, Any]:
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


# ---------------------------------------------------------------- writing one shard


def cut_clips(data: bytes, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, bytes, dict]]:
    """Re-encode frame ranges ``[f0, f1)`` of a video as H.264 mp4 clips in one decoding pass.
    Yields ``(range index, mp4 bytes, {"width", "height", "num_frames"})``; a range the video
    ends before is not yielded (a range it ends inside comes out shorter)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or stream.guessed_rate)
        width, height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2  # yuv420p
        k, enc = 0, None
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i < ranges[k][0]:
                    continue
                if enc is None:
                    enc = _ClipEncoder(rate, width, height)
                enc.add(frame)
                if i + 1 == ranges[k][1]:
                    clip, enc = enc.finish(), None
                    yield (k, *clip)
                    k += 1
                    if k == len(ranges):
                        return
            if enc is not None:
                clip, enc = enc.finish(), None
                yield (k, *clip)
        finally:
            if enc is not None:  # stopped mid-clip (an error, or the consumer gave up)
                enc.discard()


class _ClipEncoder:
    def __init__(self, rate: Fraction, width: int, height: int):
        import av

        self.buf = io.BytesIO()
        self.out = av.open(self.buf, mode="w", format="mp4")  # (faststart needs a real file)
        self.stream = self.out.add_stream(CLIP_CODEC, rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": str(CLIP_CRF), "preset": CLIP_PRESET}
        self.time_base, self.n = 1 / rate, 0

    def add(self, frame) -> None:
        import av

        if (frame.width, frame.height) != (self.stream.width, self.stream.height):  # odd size: crop 1 px
            rgb = frame.to_ndarray(format="rgb24")[: self.stream.height, : self.stream.width]  # (H, W, 3)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = self.n, self.time_base
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
        self.n += 1

    def discard(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001  (half-written clip being thrown away; nothing to report)
            pass

    def finish(self) -> tuple[bytes, dict]:
        for packet in self.stream.encode():
            self.out.mux(packet)
        self.out.close()
        return self.buf.getvalue(), {"width": self.stream.width, "height": self.stream.height, "num_frames": self.n}


def _meta(sample: dict, **override) -> dict:
    meta = {k: sample["info"][k] for k in ("width", "height", "fps", "num_frames", "duration", "codec")}
    meta.update(override, source=sample["source"])
    return meta


def _samples_of_shard(src: Path, items: list[dict], skipped: list[dict]) -> Iterator[dict]:
    """The shard's samples in plan order; clips of one source are cut in one decoding pass."""
    import av

    i = 0
    while i < len(items):
        s = items[i]
        group = [s]
        while "clip" in s and i + len(group) < len(items) and items[i + len(group)].get("clip") \
                and items[i + len(group)]["source"] == s["source"]:
            group.append(items[i + len(group)])
        i += len(group)
        try:
            data = (src / s["source"]).read_bytes()
            if len(data) != s["size"]:
                raise DecodeError(f"source changed since it was probed ({s['size']} -> {len(data)} bytes)")
            if "clip" not in s:
                yield {"__key__": s["key"], s["ext"]: data, "txt": s["caption"], "json": _meta(s)}
                continue
            done = set()
            fps = s["info"]["fps"]
            for k, mp4, got in cut_clips(data, [tuple(c["clip"]) for c in group]):
                c, done = group[k], done | {k}
                f0 = c["clip"][0]
                yield {"__key__": c["key"], "mp4": mp4, "txt": c["caption"],
                       "json": _meta(c, **got, duration=got["num_frames"] / fps, codec="h264",
                                     clip=[round(f0 / fps, 6), round((f0 + got["num_frames"]) / fps, 6)])}
            missing = [c for k, c in enumerate(group) if k not in done]
            if missing:
                raise DecodeError(f"video ended before frame {missing[0]['clip'][0]}")
        except (OSError, ValueError, DecodeError, av.FFmpegError) as e:
            skipped.append({"file": s["source"], "reason": "write failed", "detail": str(e)[:300]})


def write_shard(src: str, out: str, index: int, items: list[dict]) -> dict:
    """Write shard ``index`` atomically, then its done record; returns the record
    ``{"name", "stats", "skipped"}``."""
    out_dir, skipped = Path(out), []
    with TarShardWriter(out_dir / shard_name(index)) as writer:
        for sample in _samples_of_shard(Path(src), items, skipped):
            writer.write(sample)
    record = {"name": writer.path.name, "stats": writer.stats.to_dict(), "skipped": skipped}
    _write_json(out_dir / STATE_DIR / f"{writer.path.stem}.done.json", record)
    return record


def _write_shard_job(job: tuple[str, str, int, list[dict]]) -> dict:
    return write_shard(*job)


# ---------------------------------------------------------------- the driver


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


@contextmanager
def _pool(workers: int) -> Iterator[Any]:
    """``workers`` processes, or ``None`` (run in-process) for one. Forked where the platform allows:
    the children start at once, before any progress-bar thread exists, and need not re-import the
    package; elsewhere they are spawned."""
    if workers <= 1:
        yield None
        return
    method = "fork" if sys.platform == "linux" else "spawn"
    with get_context(method).Pool(workers) as pool:  # leaving the block terminates the workers
        yield pool


def _map(pool: Any, fn: Callable, jobs: list) -> Iterator[Any]:
    """Results of ``fn`` over ``jobs`` as they finish."""
    return map(fn, jobs) if pool is None else pool.imap_unordered(fn, jobs)


def _load_or_refuse(out: Path, args: dict, sources: str) -> dict | None:
    plan = _read_json(out / STATE_DIR / "plan.json")
    if plan is None:
        if any(out.glob("*.tar")) or (out / MANIFEST_NAME).exists():
            raise MakeShardsError(f"{out} already holds shards or a {MANIFEST_NAME} that make-shards has no plan "
                                  f"for ({STATE_DIR}/plan.json); give a new --out folder or empty this one")
        return None
    if plan.get("format") != PLAN_FORMAT or plan.get("args") != args:
        old = plan.get("args") or {}
        diff = [f"{k}: {old.get(k)!r} -> {args.get(k)!r}" for k in args if old.get(k) != args.get(k)]
        raise MakeShardsError(f"{out} was made by make-shards with other arguments ({'; '.join(diff) or 'format'}); "
                              "rerun with the same arguments to finish it, or give a new --out folder")
    if plan.get("sources") != sources:
        raise MakeShardsError(f"files under {args['src']} changed since {out} was planned; give a new --out "
                              f"folder (or delete {out}) to shard the current files")
    return plan


def _finished_shards(out: Path, plan: dict) -> dict[int, dict]:
    """Done records of the shards already on disk whole (tar present, of the recorded size)."""
    records = {}
    for i, shard in enumerate(plan["shards"]):
        record = _read_json(out / STATE_DIR / f"{Path(shard['name']).stem}.done.json")
        tar = out / shard["name"]
        if record and tar.is_file() and tar.stat().st_size == record["stats"]["size_bytes"]:
            records[i] = record
    return records


def make_shards(src: str | os.PathLike, out: str | os.PathLike, *, captions: str | os.PathLike | None = None,
                min_side: int = 0, min_frames: int = 0, max_duration: float | None = None,
                clip_seconds: float | None = None, shard_size_mb: float = 256.0,
                allow_missing_captions: bool = False, workers: int = 1, progress: bool = True) -> DatasetManifest:
    """Shard every media file under ``src`` into ``out`` (see the module docstring); returns the
    manifest it saved as ``out/dataset.json`` and prints a report."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise MakeShardsError(f"--src {src}: not a folder")
    check_out_apart(out, str(src), "--src")
    if min_side < 0 or min_frames < 0 or shard_size_mb <= 0 or workers < 1:
        raise MakeShardsError("--min-side and --min-frames must be >= 0, --shard-size-mb > 0 and --workers >= 1")
    if clip_seconds is not None and clip_seconds <= 0 or max_duration is not None and max_duration <= 0:
        raise MakeShardsError("--clip-seconds and --max-duration must be > 0")
    if clip_seconds and max_duration is not None and clip_seconds > max_duration:
        raise MakeShardsError(f"--clip-seconds {clip_seconds} is longer than --max-duration {max_duration}: "
                              "clips would be longer than the limit")
    args = {"src": str(src.resolve()), "captions": str(Path(captions).resolve()) if captions else None,
            "min_side": min_side, "min_frames": min_frames, "max_duration": max_duration,
            "clip_seconds": clip_seconds, "shard_size_mb": shard_size_mb,
            "allow_missing_captions": allow_missing_captions}
    captions_file = Path(captions).resolve() if captions else None
    files = [f for f in list_files(src) if (src / f[0]).resolve() != captions_file]
    sources = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    plan = _load_or_refuse(out, args, sources)
    with _pool(workers) as pool:
        if plan is None:
            caption_map = read_captions_file(Path(captions), src) if captions else {}
            jobs = [(str(src), rel, size) for rel, size, _ in files]
            probed = sorted(tqdm(_map(pool, _probe_job, jobs), total=len(jobs), desc="probe", unit="file",
                                 disable=not progress), key=lambda r: r["file"])
            shards, skipped = build_plan(probed, {rel for rel, _, _ in files}, src, caption_map, args)
            plan = {"format": PLAN_FORMAT, "args": args, "sources": sources, "files_seen": len(files),
                    "skipped": skipped, "shards": [{"name": shard_name(i), "samples": s} for i, s in enumerate(shards)]}
            _write_json(out / STATE_DIR / "plan.json", plan)
        records = _finished_shards(out, plan)
        todo = [(str(src), str(out), i, sh["samples"]) for i, sh in enumerate(plan["shards"]) if i not in records]
        kept = len(records)
        names = [sh["name"] for sh in plan["shards"]]
        with tqdm(total=sum(len(job[3]) for job in todo), desc="write", unit="sample", disable=not progress) as bar:
            for record in _map(pool, _write_shard_job, todo):
                index = names.index(record["name"])
                records[index] = record
                bar.update(len(plan["shards"][index]["samples"]))

    ordered = [records[i] for i in range(len(plan["shards"]))]
    skipped = sorted(plan["skipped"] + [s for r in ordered for s in r["skipped"]], key=lambda s: s["file"])
    created_by = provenance("make-shards", args)
    created_by["files_seen"] = plan["files_seen"]
    manifest = DatasetManifest([ShardStats.from_dict(r["stats"]) for r in ordered], created_by, skipped)
    manifest.save(out)
    if progress:
        print(report(manifest, plan["files_seen"], written=len(todo), kept=kept, out=out))
    return manifest


def report(manifest: DatasetManifest, files_seen: int, written: int, kept: int, out: Path) -> str:
    reasons = Counter(s["reason"] for s in manifest.skipped)
    lines = [f"make-shards: {files_seen} files seen, {manifest.num_samples} samples written to "
             f"{len(manifest.shards)} shards in {out} ({written} written now, {kept} kept from before)"]
    if reasons:
        lines.append(f"skipped {len(manifest.skipped)} files: " +
                     ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items())))
        lines.append(f"every skipped file and why: {out / MANIFEST_NAME} -> \"skipped\"")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m data_recipes.make_shards ... == videogen make-shards ...
    from videogen.cli import main

    sys.exit(main(["make-shards", *sys.argv[1:]]))
