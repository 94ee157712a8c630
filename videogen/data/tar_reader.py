"""The one reader of shard tars: every place that reads a shard (the training and predict streams,
``inspect``, ``recaption``, ``curate``, the manifest scan, the filter's epoch sizing and the
captioner's vocabulary) goes through :func:`read_tar` and :func:`group_samples` (built on
:func:`read_members`). ``read_tar(..., only=("json", "txt"))`` is the metadata-only mode: the other
members are skipped over unread (``data=None``), so a scan never holds media in memory.

A shard comes from someone else and is read as hostile:

* **plain tar only** (tarfile mode ``r|``), unless a compressed shard is explicitly asked for
  (``TarLimits.compressed``; ``data.init_args.clips.compressed_shards``, ``--compressed``). A gzip, bzip2, xz or
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
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple

from videogen.data.shards import split_member_name, tar_end_problem

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
                           "read as plain tars unless compressed ones are asked for (data.init_args.clips.compressed_shards: true, "
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


def read_tar(urls: Iterable[str], skips, limits: TarLimits | int = TarLimits(), *,
             only: Iterable[str] | None = None, strict: bool = False) -> Iterator[tuple[str, str, bytes | None, str]]:
    """Yield ``(url, member_name, data, refused)`` for every regular file in every shard.

    ``data`` is ``None`` for a member over a byte budget (it is not read; ``refused`` says which) and
    for one whose extension is not in ``only`` (when given; ``refused`` is then ``""``). ``limits``
    may be a plain member budget in bytes. A shard that cannot be opened, is not a plain tar (or a
    compressed one not asked for), runs past its budget or ends early is counted once in ``skips``
    (a :class:`~videogen.data.stages.Skips`) and the stream moves on to the next shard, keeping
    whatever it read before the fault. ``strict``: such a fault is raised instead (``ShardRefused``,
    ``tarfile.TarError``, ``OSError``, ``EOFError``), for callers that treat a shard as a whole.
    """
    if isinstance(limits, int):
        limits = TarLimits(member_bytes=limits, sample_bytes=max(limits, TarLimits.sample_bytes))
    wanted = None if only is None else frozenset(only)
    want = None if wanted is None else (lambda name: split_member_name(name)[1] in wanted)
    for url in urls:
        if strict:
            for m in read_members(url, limits, skips, want=want):
                yield url, m.name, m.data, m.refused
            continue
        read_any = False
        try:
            for m in read_members(url, limits, skips, want=want):
                read_any = True
                yield url, m.name, m.data, m.refused
        except ShardRefused as e:
            skips.add(e.reason, url, detail=str(e)[:200])
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            opened = read_any or not isinstance(e, OSError)  # an OSError before any member: cannot be opened
            reason = "truncated_shard" if read_any else "not_a_tar" if opened else "unreadable_shard"
            skips.add(reason, url, detail=str(e)[:200])
        except Exception as e:  # a failing pipe: or network error
            skips.add("unreadable_shard", url, detail=str(e)[:200])
        else:
            problem = "" if limits.compressed else tar_end_problem(url)  # a cut between members reads as whole
            if problem:
                skips.add("truncated_shard", url, detail=problem)


@dataclass
class RawSample:
    """One sample: ``members`` by lower-case extension (the first of each), ``order`` every member as
    written (``(suffix, data)``, the name after the key's dot, in tar order: what a copy writes back)."""

    key: str
    url: str
    members: dict[str, bytes | None] = field(default_factory=dict)
    refused: tuple[str, str] | None = None  # (reason, ext) of the first member left unread by a budget
    order: list[tuple[str, bytes | None]] = field(default_factory=list)


def group_samples(members: Iterable[tuple]) -> Iterator[RawSample]:
    """Consecutive members with the same key (and shard) form one sample. Members come as
    ``(url, name, data, refused)`` (from :func:`read_tar`) or ``(url, name, data)``; a ``None`` data
    marks a member left unread (``refused`` says why; ``member_too_large`` when not given)."""
    current: RawSample | None = None
    for url, name, data, *rest in members:
        refused = rest[0] if rest else "member_too_large" if data is None else ""
        key, ext = split_member_name(name)
        if current is None or key != current.key or url != current.url:
            if current is not None:
                yield current
            current = RawSample(key=key, url=url)
        current.members.setdefault(ext, data)
        current.order.append((name[len(key) + 1:] if len(name) > len(key) else "", data))
        if refused and not current.refused:
            current.refused = (refused, ext)
    if current is not None:
        yield current
