"""``dataset.json``: the manifest that sits beside a folder of shards.

It records every shard with its sample count (so DDP ranks can be given equal epochs), the
resolution / duration / fps histograms, the ``shapes`` histogram the bucketer uses to size epochs,
caption-length statistics, how the set was made, and which inputs were skipped and why.

Shard sets written by other tools have no manifest: :func:`scan_shard` rebuilds the same
statistics from a tar's ``json``/``txt`` members without decoding any media.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "dataset.json"
FORMAT = "videogen-shards/1"

# What a sample's json may claim (anything else is hostile or broken, and the sample is skipped):
MAX_SIDE = 16384  # pixels per side
MAX_FRAMES = 10**6  # frames per clip (9 hours at 30 fps)
MAX_FPS = 1000.0
MAX_DURATION = 10**6  # seconds


class ManifestError(ValueError):
    """A ``dataset.json`` that cannot be used (one line naming the file and the field)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def meta_problem(meta: dict[str, Any]) -> str:
    """Why a sample's shape fields (``width``, ``height``, ``num_frames``, ``fps``, ``duration``) cannot
    be believed, or ``""``: a number given there must be finite and in range; a boolean is refused.
    Fields that are absent or not numbers (a string from another tool) are not claims: the shape is
    then probed from the media, as for shards without json."""
    for k, lo, hi in (("width", 1, MAX_SIDE), ("height", 1, MAX_SIDE), ("num_frames", 1, MAX_FRAMES),
                      ("fps", 0, MAX_FPS), ("duration", 0, MAX_DURATION)):
        v = meta.get(k)
        if isinstance(v, bool) or (isinstance(v, (int, float)) and not (math.isfinite(v) and lo <= v <= hi)):
            return f"json {k}={v!r} is not a finite number in [{lo}, {hi}]"
    return ""


def duration_bin(seconds: float) -> str:
    """Histogram bins for clip durations: 0-1s, 1-2s, 2-4s, 4-8s, 8-16s, 16s+ (images: 'image')."""
    if seconds <= 0:
        return "image"
    edges = [1, 2, 4, 8, 16]
    lo = 0
    for hi in edges:
        if seconds < hi:
            return f"{lo}-{hi}s"
        lo = hi
    return f"{edges[-1]}s+"


def shape_key(width: int, height: int, num_frames: int, fps: float) -> str:
    """``WxH/F@fps``: what the bucketer needs to know about a clip to place it (see buckets.py)."""
    return f"{int(width)}x{int(height)}/{int(num_frames)}@{round(float(fps), 3):g}"


def parse_shape_key(key: str) -> tuple[int, int, int, float]:
    """``WxH/F@fps`` back to numbers; a ``ValueError`` for a key that is not one, or out of range."""
    try:
        size, rest = key.split("/")
        frames, fps = rest.split("@")
        w, h = size.split("x")
        shape = int(w), int(h), int(frames), float(fps)
    except (ValueError, AttributeError):
        raise ValueError(f"shape {key!r} is not WIDTHxHEIGHT/FRAMES@FPS") from None
    problem = meta_problem(dict(zip(("width", "height", "num_frames", "fps"), shape)))
    if problem:
        raise ValueError(f"shape {key!r}: {problem.replace('json ', '')}")
    return shape


@dataclass
class ShardStats:
    """Statistics of one shard (or, merged, of a whole set)."""

    name: str = ""
    num_samples: int = 0
    size_bytes: int = 0
    resolutions: Counter = field(default_factory=Counter)
    durations: Counter = field(default_factory=Counter)
    fps: Counter = field(default_factory=Counter)
    shapes: Counter = field(default_factory=Counter)
    caption_words: list[int] = field(default_factory=lambda: [0, 0, 0])  # [count, sum, max]
    caption_min_words: int | None = None

    def add(self, meta: dict[str, Any], caption: str | None) -> None:
        self.num_samples += 1
        if meta_problem(meta):  # counted, but its claims are not: the stream skips it as bad_meta
            meta = {}
        w, h = meta.get("width"), meta.get("height")
        if _is_int(w) and _is_int(h):
            self.resolutions[f"{w}x{h}"] += 1
            frames = meta.get("num_frames") if _is_int(meta.get("num_frames")) else 1
            fps = float(meta["fps"]) if _is_real(meta.get("fps")) else 0.0
            self.shapes[shape_key(w, h, frames, fps)] += 1
            self.fps[f"{round(fps, 3):g}"] += 1
        duration = meta.get("duration")
        self.durations[duration_bin(float(duration) if _is_real(duration) else 0.0)] += 1
        if caption is not None:
            n = len(caption.split())
            c = self.caption_words
            c[0], c[1], c[2] = c[0] + 1, c[1] + n, max(c[2], n)
            self.caption_min_words = n if self.caption_min_words is None else min(self.caption_min_words, n)

    def merge(self, other: "ShardStats") -> None:
        self.num_samples += other.num_samples
        self.size_bytes += other.size_bytes
        for mine, theirs in [(self.resolutions, other.resolutions), (self.durations, other.durations),
                             (self.fps, other.fps), (self.shapes, other.shapes)]:
            mine.update(theirs)
        a, b = self.caption_words, other.caption_words
        self.caption_words = [a[0] + b[0], a[1] + b[1], max(a[2], b[2])]
        mins = [m for m in (self.caption_min_words, other.caption_min_words) if m is not None]
        self.caption_min_words = min(mins) if mins else None

    def caption_summary(self) -> dict[str, float]:
        count, total, longest = self.caption_words
        return {"count": count, "min_words": self.caption_min_words or 0,
                "mean_words": round(total / count, 2) if count else 0.0, "max_words": longest}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("resolutions", "durations", "fps", "shapes"):
            d[k] = dict(sorted(getattr(self, k).items()))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShardStats":
        """From a manifest's shard entry; a ``ValueError`` naming the field for an entry that is not one."""
        if not isinstance(d, dict):
            raise ValueError(f"a shard entry is a {type(d).__name__}, not an object")
        if not isinstance(d.get("name", ""), str):
            raise ValueError(f"shard name {d.get('name')!r} is not a string")
        for k in ("num_samples", "size_bytes"):
            if k in d and not (_is_int(d[k]) and d[k] >= 0):
                raise ValueError(f"shard {d.get('name')!r}: {k}={d[k]!r} is not a count")
        for k in ("resolutions", "durations", "fps", "shapes"):
            counts = d.get(k, {})
            if not isinstance(counts, dict) or not all(_is_int(n) and n >= 0 for n in counts.values()):
                raise ValueError(f"shard {d.get('name')!r}: {k} is not a histogram of counts")
        for key in d.get("shapes", {}):
            try:
                parse_shape_key(key)
            except ValueError as e:
                raise ValueError(f"shard {d.get('name')!r}: {e}") from None
        s = cls(name=d.get("name", ""), num_samples=int(d.get("num_samples", 0)), size_bytes=int(d.get("size_bytes", 0)))
        for k in ("resolutions", "durations", "fps", "shapes"):
            getattr(s, k).update(d.get(k, {}))
        words = d.get("caption_words", [0, 0, 0])
        if not (isinstance(words, list) and len(words) == 3 and all(_is_int(n) for n in words)):
            raise ValueError(f"shard {d.get('name')!r}: caption_words={words!r} is not [count, sum, max]")
        s.caption_words = list(words)
        s.caption_min_words = d.get("caption_min_words") if _is_int(d.get("caption_min_words")) else None
        return s


def scan_shard(path: str | os.PathLike, probe_missing: bool = True, limits=None) -> ShardStats:
    """Rebuild a shard's statistics from its ``json``/``txt`` members.

    Samples are grouped by key the WebDataset way (everything before the first dot of the
    basename). A sample counts if it has a media member. When its ``json`` lacks the shape fields
    (shards made by other tools) and ``probe_missing`` is set, the media container is probed for
    them; media that cannot be probed does not count. Read by the one shard reader with ``limits``
    (a :class:`~videogen.data.tar_reader.TarLimits`, default budgets). Raises ``tarfile.TarError``
    or ``OSError`` for a shard that is not a readable (plain) tar.
    """
    from videogen.data.decode import IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, DecodeError, decoder_for, make_decoder
    from videogen.data.tar_reader import TarLimits, group_samples, read_tar

    path = Path(path)
    stats = ShardStats(name=path.name, size_bytes=path.stat().st_size)
    decoder = make_decoder() if probe_missing else None
    wanted = ("json", "txt", *MEDIA_EXTENSIONS) if probe_missing else ("json", "txt")
    for sample in group_samples(read_tar([str(path)], None, limits or TarLimits(), only=wanted, strict=True)):
        ext = next((e for e in sample.members if e in MEDIA_EXTENSIONS), None)  # the first media member
        if ext is None or sample.refused:  # the stream skips it too
            continue
        raw = sample.members.get("json")
        try:
            meta = json.loads(raw.decode("utf-8")) if raw is not None else {}
            meta = meta if isinstance(meta, dict) else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = {}
        if meta_problem(meta):  # the stream skips it as bad_meta
            continue
        has_shape = all(isinstance(meta.get(k), int) for k in ("width", "height")) and (
            ext in IMAGE_EXTENSIONS or isinstance(meta.get("num_frames"), int))
        if not has_shape and decoder is not None:
            try:
                info = decoder_for(ext, decoder).probe(sample.members[ext] or b"")
            except DecodeError:
                continue
            meta = {**meta, "width": info.width, "height": info.height, "num_frames": info.num_frames,
                    "fps": info.fps, "duration": info.duration}
        txt = sample.members.get("txt")
        stats.add(meta, txt.decode("utf-8", "replace") if txt is not None else None)
    return stats


@dataclass
class DatasetManifest:
    shards: list[ShardStats]
    created_by: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    def totals(self) -> ShardStats:
        total = ShardStats(name="*")
        for s in self.shards:
            total.merge(s)
        return total

    def to_dict(self) -> dict[str, Any]:
        t = self.totals()
        return {
            "format": FORMAT,
            "num_samples": t.num_samples,
            "num_shards": len(self.shards),
            "size_bytes": t.size_bytes,
            "resolutions": dict(sorted(t.resolutions.items())),
            "durations": dict(sorted(t.durations.items())),
            "fps": dict(sorted(t.fps.items())),
            "shapes": dict(sorted(t.shapes.items())),
            "captions": t.caption_summary(),
            "shards": [s.to_dict() for s in self.shards],
            "created_by": self.created_by,
            "skipped": self.skipped,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder_or_file: str | os.PathLike) -> "DatasetManifest":
        path = Path(folder_or_file)
        if path.is_dir():
            path = path / MANIFEST_NAME
        return cls.from_text(path.read_text(encoding="utf-8"), str(path))

    @classmethod
    def from_text(cls, text: str, where: str) -> "DatasetManifest":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ManifestError(f"{where}: not valid JSON ({str(e)[:100]}); rewrite it with the recipe that made "
                                "the shards") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ManifestError(f"{where}: format {d.get('format') if isinstance(d, dict) else None!r} is not "
                                f"{FORMAT!r}")
        if not isinstance(d.get("shards"), list):
            raise ManifestError(f"{where}: has no `shards` list; rewrite it with the recipe that made the shards")
        created_by, skipped = d.get("created_by", {}), d.get("skipped", [])
        if not isinstance(created_by, dict) or not isinstance(skipped, list):
            raise ManifestError(f"{where}: `created_by` must be an object and `skipped` a list")
        try:
            shards = [ShardStats.from_dict(s) for s in d["shards"]]
        except ValueError as e:
            raise ManifestError(f"{where}: {e}; rewrite it with the recipe that made the shards") from None
        return cls(shards=shards, created_by=created_by, skipped=list(skipped))

    @classmethod
    def find(cls, folder: str | os.PathLike) -> "DatasetManifest | None":
        path = Path(folder) / MANIFEST_NAME
        return cls.load(path) if path.is_file() else None

    @classmethod
    def read_url(cls, url: str, max_bytes: int = 256 * 2**20) -> "DatasetManifest | None":
        """The manifest at ``url`` (a path, a folder, an http/s3 URL or a ``pipe:`` command), or None
        when nothing can be read there; a :class:`ManifestError` for one that is malformed."""
        from webdataset.gopen import gopen

        if not url.startswith(("pipe:", "http://", "https://", "s3://", "gs://")) and Path(url).is_dir():
            url = str(Path(url) / MANIFEST_NAME)
        try:
            with gopen(url, "rb") as f:
                data = f.read(max_bytes + 1)
        except Exception:  # no manifest there (or unreachable): the caller decides
            return None
        if not data:
            return None
        if len(data) > max_bytes:
            raise ManifestError(f"{url}: over {max_bytes} bytes, too large for a dataset.json")
        return cls.from_text(data.decode("utf-8", "replace"), url)


def manifest_for(url: str) -> str:
    """Where the ``dataset.json`` that lists the shard at ``url`` is: beside it. A local path or a
    ``file:`` URL gives a local path (the shard's folder, resolved), an http/s3/gs URL the URL of its
    prefix; a ``pipe:`` command is refused (:class:`ManifestError`): its location is not guessed."""
    from videogen.data.shards import local_path

    if url.startswith("pipe:"):
        raise ManifestError(f"{url}: the manifest of pipe: shards is not guessed from the command; give its "
                            "location (data.manifest: a path, URL or pipe: command that prints dataset.json)")
    path = local_path(url)
    if path is None:
        return f"{url.rpartition('/')[0]}/{MANIFEST_NAME}"
    return str(Path(path).resolve().parent / MANIFEST_NAME)


def manifests_of(urls: list[str], manifest: str | None = None) -> dict[str, DatasetManifest | None]:
    """url -> the manifest that should list it: ``manifest`` for all of them when given (a path, a
    folder, an http/s3 URL or a ``pipe:`` command that prints it), else the ``dataset.json`` beside
    each shard (:func:`manifest_for`)."""
    from videogen.data.shards import local_path

    if manifest is not None:
        m = DatasetManifest.read_url(str(manifest))
        if m is None:
            raise ManifestError(f"manifest={manifest}: no dataset.json can be read there")
        return {u: m for u in urls}
    found: dict[str, DatasetManifest | None] = {}
    out: dict[str, DatasetManifest | None] = {}
    for url in urls:
        where = manifest_for(url)
        if where not in found:
            found[where] = (DatasetManifest.find(Path(where).parent) if local_path(url) is not None
                            else DatasetManifest.read_url(where))
        out[url] = found[where]
    return out


def provenance(command: str, args: dict[str, Any]) -> dict[str, Any]:
    """What made a shard set: command, arguments, videogen version and git commit (when known)."""
    import datetime
    import subprocess

    import videogen

    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(videogen.__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()},
            "videogen_version": videogen.__version__, "git_commit": commit,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
