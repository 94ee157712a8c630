"""Where shards come from and who reads which: the one place a shard set is split.

``expand_urls`` turns what a config names (a folder, a glob, a brace pattern, a URL, a list of
those) into a sorted list of shard URLs. ``split_shards`` decides what one consumer (a dataloader
worker on one rank) reads: whole shards when there are enough of them, otherwise every consumer
reads every shard and keeps every n-th sample; with ``whole=True`` (the predict runs, ``encode``
and ``recaption``, which write one output shard per input shard) always whole shards, a consumer
past the last shard getting none. Nothing else in videogen divides data by rank or worker.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence, TypeVar

import braceexpand

T = TypeVar("T")

_REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "file:")


def is_remote(url: str) -> bool:
    """A URL rather than a plain path (``file:`` URLs included: see :func:`local_path`)."""
    return url.startswith(_REMOTE_PREFIXES)


def local_path(url: str) -> str | None:
    """The local file a shard URL names: a plain path as it is, a ``file:`` URL's path (``file:/d/x.tar``,
    ``file:///d/x.tar``, ``file:d/x.tar``); None for anything read through a pipe or the network."""
    if url.startswith("file:"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(url)
        return unquote(parsed.path) if parsed.netloc in ("", "localhost") else None
    return None if is_remote(url) else url


def expand_urls(spec: str | Sequence[str]) -> list[str]:
    """Shard URLs named by ``spec``.

    Each item may be a folder (its ``*.tar`` files), a glob (``data/*.tar``), a brace pattern
    (``shard-{000000..000009}.tar``), a local path or a URL (``pipe:``, ``http(s)://``, ``s3://``...).
    Local items are checked: a name that matches nothing is an error, not an empty epoch.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise ValueError("no shards given: name a folder, a glob, a brace pattern or a list of URLs")
    urls: list[str] = []
    for item in items:
        item = str(item)
        for url in braceexpand.braceexpand(item):
            if is_remote(url):
                urls.append(url)
            elif os.path.isdir(url):
                found = sorted(glob.glob(os.path.join(url, "*.tar")))
                if not found:
                    raise FileNotFoundError(f"{url}: folder has no *.tar shards (make some with "
                                            "`videogen make-shards` or `videogen make-synthetic`)")
                urls.extend(found)
            elif any(c in url for c in "*?["):
                found = sorted(glob.glob(url))
                if not found:
                    raise FileNotFoundError(f"{url}: pattern matches no shard")
                urls.extend(found)
            elif os.path.exists(url):
                urls.append(url)
            else:
                raise FileNotFoundError(f"{url}: no such shard (check the data path in your config)")
    return urls


def shard_name(url: str) -> str:
    """The file name a manifest lists a shard under: the basename of a path or URL, or for a
    ``pipe:`` command the basename of its last word naming a tar (``pipe:aws s3 cp s3://b/x.tar -``
    -> ``x.tar``)."""
    if url.startswith("pipe:"):
        words = [w.strip("'\"") for w in url[5:].split() if ".tar" in w]
        return words[-1].rpartition("/")[2] if words else url
    return url.rpartition("/")[2]


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset keys: everything before the first dot of the basename (folders stay in the key)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def tar_end_problem(url: str) -> str:
    """Why a local tar looks cut short ('' when it ends like a whole tar, or is not local).

    A whole tar is a multiple of 512 bytes and ends with zero blocks (end-of-archive). A shard cut
    exactly between two members reads without any error, silently losing the samples after the
    cut: only this check finds it.
    """
    path = local_path(url)
    if path is None:
        return ""
    size = os.path.getsize(path)
    if size % 512:
        return f"{size} bytes is not a whole number of 512-byte tar blocks: the shard was cut short; rewrite it"
    with open(path, "rb") as f:
        f.seek(max(0, size - 512))
        tail = f.read(512)
    if len(tail) < 512 or tail.count(0) != 512:
        return ("no end-of-archive block: the shard was cut at a member boundary and the samples after the "
                "cut are lost; rewrite it")
    return ""


@dataclass(frozen=True)
class Split:
    """What one consumer reads: these shards, and of their samples those with index % every == offset."""

    urls: tuple[str, ...]
    every: int = 1
    offset: int = 0


def split_shards(urls: Sequence[str], rank: int, world_size: int, worker: int = 0, num_workers: int = 1, *,
                 whole: bool = False) -> Split:
    """Divide shards among ``world_size`` ranks x ``num_workers`` dataloader workers.

    With at least as many shards as consumers each consumer gets whole shards (round robin);
    with fewer, all consumers read all shards and take every ``consumers``-th sample, so small
    sets (a quickstart with 3 shards on 2 ranks x 2 workers) still give every consumer data.
    ``whole``: always whole shards (round robin), so each shard is read by exactly one consumer
    (what a job writing one output shard per input shard needs); some consumers may get none.
    """
    if not 0 <= rank < world_size or not 0 <= worker < num_workers:
        raise ValueError(f"rank {rank}/{world_size}, worker {worker}/{num_workers} out of range")
    consumers = world_size * num_workers
    consumer = rank * num_workers + worker
    if whole or len(urls) >= consumers:
        return Split(tuple(urls[consumer::consumers]))
    return Split(tuple(urls), every=consumers, offset=consumer)


def take_share(samples: Iterable[T], split: Split) -> Iterator[T]:
    """Keep this consumer's samples of a stream (a no-op for whole-shard splits)."""
    if split.every == 1:
        yield from samples
        return
    for i, sample in enumerate(samples):
        if i % split.every == split.offset:
            yield sample
