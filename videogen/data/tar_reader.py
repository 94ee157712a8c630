"""The one reader of shard tars: every place that reads a shard (the training and predict streams,
``inspect``, ``recaption``, ``curate``, the manifest scan, the filter's epoch sizing and the
captioner's vocabulary) goes through :func:`read_members`.

A shard comes from someone else and is read as hostile:

* **plain tar only** (tarfile mode ``r|``), unless a compressed shard is explicitly asked for
  (``TarLimits.compressed``; ``data.compressed_shards``, ``--compressed``). A gzip, bzip2, xz or
  zstd stream named ``.tar`` is refused (``compressed_shard``) before a byte of it is inflated;
* **byte budgets**: a member over ``member_bytes`` is not read; a sample (consecutive members of one
  key) whose members add up to more than ``sample_bytes`` has the members past the budget left
  unread (the sample is refused as ``sample_too_large``); a shard whose (inflated) tar stream goes
  past ``shard_bytes`` is refused from that point on (``shard_too_large``). Members are read only
  when wanted and within budget, so memory stays bounded by the budgets whatever the headers claim;
* member names that are absolute or climb out of the shard (``..``) are refused
  (``unsafe_member_name``); links, folders and devices are never read.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

from videogen.data.shards import split_member_name

MIB = 2**20
# the first bytes of the compressed formats tarfile (or a pipe) could hand us under a .tar name
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class TarLimits:
    """Byte budgets of one shard read (defaults fit any real clip, not a decompression bomb)."""

    member_bytes: int = 512 * MIB
    sample_bytes: int = 1024 * MIB
    shard_bytes: int = 64 * 1024 * MIB
    compressed: bool = False  # accept gzip/bzip2/xz tars (inflated bytes count against the budgets)

    def __post_init__(self):
        if min(self.member_bytes, self.sample_bytes, self.shard_bytes) < 1:
            raise ValueError(f"{self}: byte budgets must be >= 1")


class ShardRefused(tarfile.TarError):
    """A shard the reader will not read (further): ``reason`` is the skip reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Member(NamedTuple):
    """One regular file of a shard. ``data`` is None when it was not read: ``refused`` then says why
    (``member_too_large``, ``sample_too_large``), or is ``""`` for a member the caller did not want."""

    name: str
    data: bytes | None
    refused: str = ""


def unsafe_name(name: str) -> bool:
    """An absolute member name or one with a ``..`` part (either slash)."""
    return name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/")


class _Prefixed:
    """A read-only stream with its first bytes already read (to look at the magic number)."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(n)
        if n is None or n < 0:
            out, self.head = self.head + self.stream.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        if len(out) < n:
            out += self.stream.read(n - len(out))
        return out


def open_tar(stream, url: str, limits: TarLimits) -> tarfile.TarFile:
    """A streaming TarFile over ``stream``: plain (``r|``), or any compression (``r|*``) when allowed."""
    head = stream.read(6)
    kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), None)
    if kind and not limits.compressed:
        raise ShardRefused("compressed_shard", f"{url} is a {kind}-compressed stream, not a plain tar; shards are "
                           "read as plain tars unless compressed ones are asked for (data.compressed_shards: true, "
                           "or --compressed), with the inflated bytes held to the byte budgets")
    return tarfile.open(fileobj=_Prefixed(head, stream), mode="r|*" if limits.compressed else "r|")


def read_members(url: str, limits: TarLimits, skips=None, *,
                 want: Callable[[str], bool] | None = None) -> Iterator[Member]:
    """Every regular file of the shard at ``url`` (a path or a ``pipe:``/http URL), in tar order.

    ``want(name)`` False: the member is yielded unread (``data=None``, ``refused=""``) and does not
    count against the sample budget. Unsafe names are counted in ``skips`` (when given) and not
    yielded. Raises :class:`ShardRefused` (a ``tarfile.TarError``) for a compressed shard that was
    not asked for and when the shard budget runs out; other read errors propagate as tarfile raises
    them (``TarError``, ``OSError``, ``EOFError``).
    """
    from webdataset.gopen import gopen

    stream = gopen(url, "rb")
    try:
        with open_tar(stream, url, limits) as tar:
            key, used = None, 0
            for info in tar:
                end = info.offset_data + max(info.size, 0)
                if end > limits.shard_bytes:
                    raise ShardRefused("shard_too_large", f"{url}: the tar stream goes past the shard budget of "
                                       f"{limits.shard_bytes} bytes (at member {info.name!r})")
                if not info.isfile():
                    continue
                name = info.name
                if unsafe_name(name):
                    if skips is not None:
                        skips.add("unsafe_member_name", url, name)
                    continue
                k, _ = split_member_name(name)
                if k != key:
                    key, used = k, 0
                if want is not None and not want(name):
                    yield Member(name, None)
                    continue
                if info.size > limits.member_bytes:
                    yield Member(name, None, "member_too_large")
                    continue
                if used + info.size > limits.sample_bytes:
                    used = limits.sample_bytes + 1  # the rest of this sample stays unread too
                    yield Member(name, None, "sample_too_large")
                    continue
                used += info.size
                f = tar.extractfile(info)
                yield Member(name, f.read() if f is not None else b"")
    finally:
        try:
            stream.close()
        except Exception:  # a pipe: whose command failed complains on close; the caller saw the error
            pass
