"""How many samples, of which shapes, a shard set holds: what equal epochs on every rank are sized by.

From the manifests (``dataset.json``) when they list the shards, else by scanning local shards'
``json``/``txt`` members (:func:`shard_shapes`); with a score filter, by reading the json of local
shards and keeping the samples that pass (:func:`filtered_shard_shapes`). The filter's names are
checked here against the scores the manifests list (:func:`check_names`). The filter language itself
is :mod:`videogen.data.score_filter` (pure, no I/O); this module does the reading.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from typing import Any

from videogen.data.manifest import (ManifestError, _is_int, manifest_for, manifests_of, meta_problem, parse_shape_key,
                                    scan_shard)
from videogen.data.score_filter import FilterError, MissingScore, ScoreFilter, known_names, sample_values
from videogen.data.shards import local_path, shard_name
from videogen.data.tar_reader import TarLimits, group_samples, read_tar

log = logging.getLogger("videogen.data")


def shard_shapes(urls: list[str], manifest: str | None = None, limits: TarLimits | None = None) -> tuple[Counter, int]:
    """The shape histogram and sample count of these shards, from manifests (``manifest``, else the
    ``dataset.json`` beside them) or, for local shards no manifest lists, by scanning their tars."""
    shapes: Counter = Counter()
    count = 0
    manifests = manifests_of(urls, manifest)
    listed: dict[int, dict[str, Any]] = {}
    for url in urls:
        m = manifests[url]
        if m is not None and id(m) not in listed:
            listed[id(m)] = {s.name: s for s in m.shards}
        stats = listed[id(m)].get(shard_name(url)) if m is not None else None
        path = local_path(url)
        if stats is None and path is None:
            where = manifest or manifest_for(url)
            raise ManifestError(f"{url}: remote shards need their sample counts up front, from {where} "
                                "(make-shards and make-synthetic write it beside the shards); it is missing or does "
                                "not list this shard (give its location with data.manifest)")
        if stats is None:
            log.info("%s: not in a dataset.json manifest; scanning its headers to count samples", url)
            try:
                stats = scan_shard(path, limits=limits)
            except Exception as e:  # an unreadable shard is counted as empty; the stream will skip it
                log.warning("%s: cannot be scanned (%s); counted as empty", url, e)
                continue
        for key, n in stats.shapes.items():
            shapes[parse_shape_key(key)] += n
        count += stats.num_samples
    return shapes, count


def manifest_score_types(manifest) -> dict[str, str]:
    """The curation scores a ``dataset.json`` says its samples carry (``created_by.curation.scores``)."""
    scores = (manifest.created_by.get("curation") or {}).get("scores") if manifest is not None else None
    return dict(scores) if isinstance(scores, dict) else {}


def filtered_shapes(path: str, score_filter: ScoreFilter, limits: TarLimits | None = None) -> tuple[Counter, int]:
    """The shape histogram (``(w, h, frames, fps) -> count``) and count of a local shard's samples that
    pass, read from their ``json`` members alone (through the one shard reader; media is skipped over,
    not read). Samples whose json holds no shape, or a shape that is not believable
    (:func:`~videogen.data.manifest.meta_problem`), are not counted (the stream probes or skips them)."""
    shapes: Counter = Counter()
    count = 0
    for sample in group_samples(read_tar([path], None, limits or TarLimits(), only=("json",), strict=True)):
        raw = sample.members.get("json")
        if raw is None:
            continue
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if not isinstance(meta, dict) or meta_problem(meta):
            continue
        w, h, n, fps = (meta.get(k) for k in ("width", "height", "num_frames", "fps"))
        if not (_is_int(w) and _is_int(h) and _is_int(n) and fps is not None):
            continue
        try:
            if not score_filter(sample_values(meta)):
                continue
        except MissingScore:
            continue
        shapes[(w, h, n, float(fps))] += 1
        count += 1
    return shapes, count


def check_names(score_filter: ScoreFilter, urls: list[str], manifest: str | None = None) -> ScoreFilter:
    """The filter checked (not parsed again) against the names these shards carry: the json fields
    every sample has and the curation scores their manifests list; an unknown name is a
    :class:`FilterError`."""
    types: dict[str, str] = {}
    for m in {id(m): m for m in manifests_of(urls, manifest).values()}.values():
        types.update(manifest_score_types(m))
    try:
        return score_filter.checked(known_names(types))
    except FilterError as e:
        if types:
            raise
        raise FilterError(f"{e}\n(these shards' dataset.json lists no curation scores: run `videogen curate` on "
                          "them first, or filter on width, height, fps, num_frames, duration only)") from None


def filtered_shard_shapes(urls: list[str], score_filter: ScoreFilter, manifest: str | None = None,
                          limits: TarLimits | None = None) -> tuple[Counter, int]:
    """Shape histogram and count of the samples that pass, for equal epochs per rank: local shards
    are read (their json members only); remote ones are counted from their manifest, unfiltered
    (an overestimate: a rank whose share runs dry wraps around), with a warning."""
    shapes: Counter = Counter()
    count = 0
    remote = [u for u in urls if local_path(u) is None]
    for url in urls:
        if local_path(url) is None:
            continue
        try:
            s, n = filtered_shapes(local_path(url), score_filter, limits)
        except (OSError, tarfile.TarError) as e:  # the stream skips it and counts why
            log.warning("%s: cannot be read to count the samples filter %r keeps (%s); counted as empty",
                        url, score_filter.text, e)
            continue
        shapes.update(s)
        count += n
    if remote:
        log.warning("filter %r: %d remote shards are counted from their manifest, unfiltered; epochs hold more "
                    "batches than the samples that pass fill once", score_filter.text, len(remote))
        s, n = shard_shapes(remote, manifest, limits)
        shapes.update(s)
        count += n
    return shapes, count
