"""Write WebDataset tar shards, atomically.

A shard is written to ``NAME.tar.tmp`` and renamed to ``NAME.tar`` only when it is complete and
flushed to disk, so a finished shard on disk is always whole: an interrupted run leaves at most a
``.tmp`` file, which the next run overwrites (this is what makes the recipes resumable by shard).

A sample is a dict: ``__key__`` plus members by extension. ``bytes`` are written as they are,
``str`` as UTF-8, ``dict``/``list`` as JSON. A key may name folders inside the tar, as WebDataset
keys do (``clips/0001`` -> members ``clips/0001.mp4``, ...): its parts are separated by ``/``, and
none may be empty, ``.`` or ``..`` (no absolute keys, no climbing out); the last part has no dot
(the member's extension starts at its first dot). Backslashes and NUL are refused.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from videogen.data.manifest import ShardStats

_FORBIDDEN_KEY_CHARS = ("\\", "\0")


def key_problem(key: Any) -> str:
    """Why ``key`` cannot name a sample in a shard, or ``""``."""
    if not isinstance(key, str) or not key:
        return "an empty key"
    if any(c in key for c in _FORBIDDEN_KEY_CHARS):
        return "a backslash or NUL in the key"
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "an absolute key, an empty folder or a '.'/'..' part"
    if "." in parts[-1]:
        return "a dot in the key's last part (the extension starts at the first dot)"
    return ""


def encode_member(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    raise TypeError(f"cannot write a member of type {type(value).__name__}: give bytes, str or a dict")


class TarShardWriter:
    """One shard, written atomically; keeps the shard's :class:`ShardStats` as it goes."""

    def __init__(self, path: str | os.PathLike, mtime: float = 0.0):
        """``mtime`` stamps every member (fixed by default, so the same samples give the same bytes)."""
        self.path = Path(path)
        self.mtime = mtime
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.stats = ShardStats(name=self.path.name)
        self._keys: set[str] = set()
        self.closed = False

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        problem = key_problem(key)
        if problem:
            raise ValueError(f"bad sample key {key!r}: {problem}")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r} in {self.path.name}")
        self._keys.add(key)
        for ext, value in sample.items():
            if ext.startswith("__"):
                continue
            data = encode_member(value)
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
            try:
                self._tar.addfile(info, io.BytesIO(data))
            except OSError as e:
                raise self._write_error(e) from e
        meta = sample.get("json") if isinstance(sample.get("json"), dict) else {}
        caption = sample.get("txt") if isinstance(sample.get("txt"), str) else None
        self.stats.add(meta, caption)

    @property
    def size(self) -> int:
        return self._file.tell()

    def close(self) -> ShardStats:
        if self.closed:
            return self.stats
        try:
            self._tar.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as e:
            raise self._write_error(e) from e
        os.replace(self.tmp, self.path)
        self.stats.size_bytes = self.path.stat().st_size
        self.closed = True
        return self.stats

    def _write_error(self, e: OSError) -> OSError:
        return OSError(e.errno, f"could not write shard {self.path}: {e.strerror or e} (is the disk full? free "
                                f"space under {self.path.parent}); shards finished before it are complete, this "
                                "one is not written")

    def abort(self) -> None:
        """Drop a partial shard (on error): the final name is never created."""
        if self.closed:
            return
        try:
            for close in (self._tar.close, self._file.close):
                try:
                    close()
                except OSError:  # e.g. the disk that failed the write fails the end blocks too
                    pass
        finally:
            self.tmp.unlink(missing_ok=True)
            self.closed = True

    def __enter__(self) -> "TarShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def numbered_shard_name(index: int, prefix: str = "shard") -> str:
    return f"{prefix}-{index:06d}.tar"


class ShardSequenceWriter:
    """Rolls over to a new shard after ``max_count`` samples or ``max_size_mb`` megabytes."""

    def __init__(self, out_dir: str | os.PathLike, max_count: int = 1000, max_size_mb: float = 256.0,
                 prefix: str = "shard", start_index: int = 0):
        if max_count < 1 or max_size_mb <= 0:
            raise ValueError("max_count must be >= 1 and max_size_mb > 0")
        self.out_dir = Path(out_dir)
        self.max_count, self.max_bytes, self.prefix = max_count, int(max_size_mb * 1024 * 1024), prefix
        self.index = start_index
        self.finished: list[ShardStats] = []
        self._current: TarShardWriter | None = None

    def write(self, sample: dict[str, Any]) -> None:
        cur = self._current
        if cur is not None and (cur.stats.num_samples >= self.max_count or cur.size >= self.max_bytes):
            self._roll()
        if self._current is None:
            self._current = TarShardWriter(self.out_dir / numbered_shard_name(self.index, self.prefix))
            self.index += 1
        self._current.write(sample)

    def _roll(self) -> None:
        if self._current is not None:
            self.finished.append(self._current.close())
            self._current = None

    def close(self) -> list[ShardStats]:
        self._roll()
        return self.finished

    def __enter__(self) -> "ShardSequenceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._current is not None:
            self._current.abort()
