"""The health of a shard set, found by decoding every sample (``videogen inspect DIR`` prints it).

The samples go through the loader's own stages (``read_tar -> group_samples -> parse``), so a
sample counts as good here exactly when the training stream could use it; then every frame of
each record is decoded (``--frames N``: N evenly spaced frames, first and last included) with the
loader's decoder. What it reports:

* good samples and shards; resolution (as decoded), duration and fps histograms; caption words;
* every bad sample with its shard, key, reason and detail: what ``parse`` skips (empty media,
  missing caption, malformed json, ...), shards that are truncated or not tars, media that fails
  to decode, and media whose decoded shape disagrees with its json (``meta_mismatch``);
* the manifest (``dataset.json``), when there is one: its sample count against what was found,
  and the inputs it says were skipped when the set was made. Without one (shards made by other
  tools) the statistics come from the decode pass alone;
* :func:`bucket_report`: how the good samples fall into a bucket table (``--buckets``);
* a latent cache (``videogen encode``): its ``latent.npy`` samples are read, not decoded, and
  reported by latent shape (``CxTxHxW``), with their caption embeddings (``text.*.npy``) checked and
  counted per caption name; an array that does not load or fit its json is a bad sample
  (``bad_latent``).
* the curation scores of a set made by ``videogen curate`` (``json["curation"]``): min / mean / max
  of each number, how often each flag is true.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

CHUNK_FRAMES = 32  # frames decoded per call when checking a whole clip (bounds memory on long clips)


def frame_indices(num_frames: int, wanted: int) -> list[int]:
    """All frames (``wanted <= 0``), else ``wanted`` evenly spaced ones, first and last included."""
    if wanted <= 0 or wanted >= num_frames:
        return list(range(num_frames))
    if wanted == 1:
        return [0]
    return sorted({round(i * (num_frames - 1) / (wanted - 1)) for i in range(wanted)})


def decode_record(record, decoder, wanted: int) -> tuple[int, int]:
    """Decode the record's frames (in chunks); return the decoded ``(width, height)``."""
    from videogen.data.decode import DecodeError, decoder_for

    dec = decoder_for(record.ext, decoder)
    indices = frame_indices(record.num_frames, wanted)
    shape = None
    for i in range(0, len(indices), CHUNK_FRAMES):
        frames = dec.decode(record.media, indices[i: i + CHUNK_FRAMES])  # (T, H, W, 3)
        if frames.ndim != 4 or frames.shape[0] != len(indices[i: i + CHUNK_FRAMES]) or frames.shape[3] != 3:
            raise DecodeError(f"decoder returned an array of shape {tuple(frames.shape)}")
        if shape is not None and frames.shape[1:3] != shape:
            raise DecodeError(f"frame size changes mid-clip: {shape} then {frames.shape[1:3]}")
        shape = frames.shape[1:3]
    h, w = shape
    return int(w), int(h)


def inspect_shard(url: str, decoder_name: str = "auto", frames: int = 0, limits=None,
                  text_spec=None) -> dict[str, Any]:
    """Decode one shard: ``{"shard", "stats" (ShardStats dict of its good samples), "bad", "frames", "seconds",
    "curation", "latents", "text_embeddings"}``. A latent-cache sample (``latent.npy``, from ``videogen encode``)
    is read, not decoded: its array is loaded (``allow_pickle=False``, header checked against its size) and
    checked against the clip its json describes, and its shape counted in ``latents`` (``CxTxHxW``); with
    ``text_spec`` (the cache's text encoder) its caption embeddings are checked as training checks them and
    counted per caption name in ``text_embeddings``."""
    from videogen.data import stages
    from videogen.data.decode import DecodeError, make_decoder
    from videogen.data.manifest import ShardStats
    from videogen.data.tar_reader import TarLimits

    began = time.perf_counter()
    skips = stages.Skips(max_logged=0, keep=True)
    decoder = make_decoder(decoder_name)
    stats = ShardStats(name=Path(url).name)
    decoded_frames = 0
    curation: dict[str, dict] = {}
    latents: Counter = Counter()
    embeddings: Counter = Counter()
    records = stages.parse(stages.group_samples(stages.read_tar([url], skips, limits or TarLimits())), skips, decoder,
                           require_caption=True, text_spec=text_spec)
    for r in records:
        if r.ext == stages.LATENT_EXTENSION:  # read, not decoded: the encoded clip's shape is its json's
            try:
                z, _, _ = stages.load_latent(r)
            except DecodeError as e:
                skips.add("bad_latent", r.url, r.key, str(e)[:200])
                continue
            latents["x".join(map(str, z.shape))] += 1
            embeddings.update(list(r.text or {}))  # the caption names it carries
            width, height = r.width, r.height
        else:
            try:
                width, height = decode_record(r, decoder, frames)
            except DecodeError as e:
                skips.add("decode_error", r.url, r.key, str(e))
                continue
            except Exception as e:  # a decoder bug is reported for the sample, not raised for the set
                skips.add("decode_error", r.url, r.key, f"{type(e).__name__}: {e}"[:200])
                continue
            if (width, height) != (r.width, r.height):
                skips.add("meta_mismatch", r.url, r.key,
                          f"json says {r.width}x{r.height}, the media decodes to {width}x{height}; fix the json "
                          "(the loader sizes clips from it)")
                continue
            decoded_frames += len(frame_indices(r.num_frames, frames))
        duration = r.meta.get("duration")
        if not isinstance(duration, (int, float)) or duration <= 0:
            duration = r.num_frames / r.fps if r.fps > 0 else 0.0
        stats.add({"width": width, "height": height, "num_frames": r.num_frames, "fps": r.fps,
                   "duration": float(duration)}, r.caption)
        add_curation(curation, r.meta.get("curation"))
    return {"shard": stats.name, "stats": stats.to_dict(), "bad": skips.records, "frames": decoded_frames,
            "seconds": round(time.perf_counter() - began, 3), "curation": curation, "latents": dict(latents),
            "text_embeddings": dict(embeddings)}


def add_curation(totals: dict[str, dict], scores: Any) -> None:
    """Fold one sample's curation scores (json["curation"], from `videogen curate`) into per-score
    totals: numbers as count/sum/min/max, true-or-false flags as count/true."""
    if not isinstance(scores, dict):
        return
    for name, v in scores.items():
        if isinstance(v, bool):
            t = totals.setdefault(name, {"count": 0, "true": 0})
            if "true" in t:
                t["count"] += 1
                t["true"] += int(v)
        elif isinstance(v, (int, float)):
            t = totals.setdefault(name, {"count": 0, "sum": 0.0, "min": v, "max": v})
            if "sum" in t:
                t["count"] += 1
                t["sum"] += v
                t["min"], t["max"] = min(t["min"], v), max(t["max"], v)


def inspect_all(urls: list[str], decoder: str = "auto", frames: int = 0, limits=None, text_spec=None,
                workers: int = 1, total: int | None = None, progress: bool = True) -> Iterator[dict[str, Any]]:
    """:func:`inspect_shard` of every shard, in order, over ``workers`` processes (a bar on stderr)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="sample", desc="inspect", file=sys.stderr, disable=not progress or None)
    with bar:
        if workers <= 1:
            for url in urls:
                result = inspect_shard(url, decoder, frames, limits, text_spec)
                bar.update(result["stats"]["num_samples"] + len([b for b in result["bad"] if b["key"]]))
                yield result
            return
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(inspect_shard, url, decoder, frames, limits, text_spec) for url in urls]
            for future in futures:
                result = future.result()
                bar.update(result["stats"]["num_samples"] + len([b for b in result["bad"] if b["key"]]))
                yield result


def bucket_report(shapes: dict[str, int], bucketer, frame_stride: int, target_fps: float | None) -> dict[str, Any]:
    """Good samples per bucket, too-short count and full batches per epoch (one rank)."""
    from videogen.data.manifest import parse_shape_key

    parsed: Counter = Counter()
    for key, count in shapes.items():
        parsed[parse_shape_key(key)] += count
    placed = bucketer.placed(parsed, frame_stride, target_fps)
    too_short = placed.pop("too_short", 0)
    rows = []
    for b in bucketer.buckets:
        size = bucketer.batch_size_of(b)
        n = placed.get(b.name, 0)
        rows.append({"bucket": b.name, "samples": n, "batch_size": size, "full_batches": n // size,
                     "left_over": n % size})
    if bucketer.packing:
        rows.append({"bucket": "packed", "samples": placed.get("packed", 0), "batch_size": None,
                     "full_batches": None, "left_over": None})
    return {"buckets": rows, "too_short": too_short,
            "full_batches": bucketer.expected_batches(parsed, frame_stride, target_fps, world_size=1)}


def build_report(urls: list[str], folder: Path | None, name: str, decoder: str = "auto", frames: int = 0,
                 limits=None, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """The report of the shards ``urls`` (``name``: the folder or pattern as given; ``folder``: where a
    ``dataset.json`` may be). Raises ManifestError when the manifest's caption embeddings cannot be checked."""
    from videogen.data.manifest import DatasetManifest, ManifestError, ShardStats
    from videogen.data.text_embeddings import text_spec

    manifest = DatasetManifest.find(folder) if folder is not None else None
    try:  # a latent cache with caption embeddings: they are checked as training checks them
        spec = text_spec([manifest])
    except ValueError as e:
        raise ManifestError(f"{folder}/dataset.json: {e}") from None
    began = time.perf_counter()
    results = list(inspect_all(urls, decoder, frames, limits, spec, workers,
                               manifest.num_samples if manifest else None, progress))
    total = ShardStats(name="*")
    for r in results:
        total.merge(ShardStats.from_dict(r["stats"]))
    bad = [b for r in results for b in r["bad"]]
    report: dict[str, Any] = {
        "dir": name,
        "num_samples": total.num_samples,
        "num_shards": len(urls),
        "num_bad": len(bad),
        "resolutions": dict(sorted(total.resolutions.items())),
        "durations": dict(sorted(total.durations.items())),
        "fps": dict(sorted(total.fps.items())),
        "shapes": dict(sorted(total.shapes.items())),
        "captions": total.caption_summary(),
        "bad_reasons": dict(sorted(Counter(b["reason"] for b in bad).items())),
        "bad_samples": bad,
        "shards": [{"shard": r["shard"], "good": r["stats"]["num_samples"],
                    "bad": len(r["bad"]), "seconds": r["seconds"]} for r in results],
        "frames_decoded": sum(r["frames"] for r in results),
        "decode_seconds": round(time.perf_counter() - began, 3),
        "manifest": None,
        "skipped": [],
        "curation": {},
        "latents": dict(sorted(sum((Counter(r["latents"]) for r in results), Counter()).items())),
        "text_embeddings": dict(sorted(sum((Counter(r["text_embeddings"]) for r in results), Counter()).items())),
    }
    for r in results:
        for name, t in r["curation"].items():
            mine = report["curation"].get(name)
            if mine is None:
                report["curation"][name] = dict(t)
            elif "sum" in t and "sum" in mine:
                mine.update(count=mine["count"] + t["count"], sum=mine["sum"] + t["sum"],
                            min=min(mine["min"], t["min"]), max=max(mine["max"], t["max"]))
            elif "true" in t and "true" in mine:
                mine.update(count=mine["count"] + t["count"], true=mine["true"] + t["true"])
    for t in report["curation"].values():
        if "sum" in t:
            t["mean"] = round(t.pop("sum") / max(t["count"], 1), 6)
    if manifest is not None:
        listed = {s.name: s.num_samples for s in manifest.shards}
        found = {r["shard"]: r["stats"]["num_samples"] for r in results}
        report["manifest"] = {
            "num_samples": manifest.num_samples, "num_shards": len(manifest.shards),
            "count_mismatches": [{"shard": name, "manifest": listed.get(name), "good": found.get(name)}
                                 for name in sorted(set(listed) | set(found)) if listed.get(name) != found.get(name)],
            "created_by": manifest.created_by,
        }
        report["skipped"] = manifest.skipped
    return report


def _hist(d: dict[str, int]) -> str:
    return "  ".join(f"{k}: {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def format_inspection(rep: dict[str, Any]) -> str:
    c = rep["captions"]
    lines = [f"{rep['dir']}: {rep['num_samples']} good samples, {rep['num_bad']} bad, in {rep['num_shards']} shards "
             f"({rep['frames_decoded']} frames decoded in {rep['decode_seconds']:.1f}s)",
             f"  resolutions  {_hist(rep['resolutions'])}",
             f"  durations    {_hist(rep['durations'])}",
             f"  fps          {_hist(rep['fps'])}",
             f"  captions     {c['count']} with words min {c['min_words']} / mean {c['mean_words']} / "
             f"max {c['max_words']}"]
    if rep.get("latents"):
        lines.append(f"  latents      {_hist(rep['latents'])}  (C x T x H x W: a latent cache from videogen encode)")
    if rep.get("text_embeddings"):
        lines.append(f"  text embeddings per caption  {_hist(rep['text_embeddings'])}")
    m = rep["manifest"]
    if m is None:
        lines.append("  manifest     none (dataset.json missing: shards made by another tool?); "
                     "statistics are from decoding")
    else:
        state = "agrees" if not m["count_mismatches"] else "DISAGREES"
        lines.append(f"  manifest     dataset.json lists {m['num_samples']} samples in {m['num_shards']} shards: {state}")
        for x in m["count_mismatches"]:
            lines.append(f"    {x['shard']}: manifest {x['manifest'] if x['manifest'] is not None else 'missing'}, "
                         f"good {x['good'] if x['good'] is not None else 'not found'}")
    if rep["bad_samples"]:
        lines.append(f"bad samples ({rep['num_bad']}: {_hist(rep['bad_reasons'])}):")
        for b in rep["bad_samples"]:
            detail = f"  {b['detail']}" if b["detail"] else ""
            lines.append(f"  {b['shard']}  {b['key'] or '(whole shard)'}  {b['reason']}{detail}")
    else:
        lines.append("bad samples: none")
    if rep["skipped"]:
        lines.append(f"inputs skipped when the set was made ({len(rep['skipped'])}, from dataset.json):")
        for s in rep["skipped"]:
            lines.append("  " + "  ".join(str(v) for v in s.values()))
    if rep.get("curation"):
        lines.append("curation scores (json[\"curation\"], from videogen curate):")
        for name, t in sorted(rep["curation"].items()):
            if "true" in t:
                lines.append(f"  {name:<18} true for {t['true']} of {t['count']}")
            else:
                lines.append(f"  {name:<18} min {t['min']:.4g}  mean {t['mean']:.4g}  max {t['max']:.4g}  "
                             f"({t['count']} samples)")
    if "bucketing" in rep:
        bk = rep["bucketing"]
        lines.append(f"buckets ({bk['config']}): {bk['full_batches']} full batches per epoch on one rank, "
                     f"{bk['too_short']} samples too short for every bucket")
        for row in bk["buckets"]:
            lines.append(f"  {row['bucket']:<14} {row['samples']:>6} samples  batch {row['batch_size']}  "
                         f"{row['full_batches']} full batches, {row['left_over']} left over")
    return "\n".join(lines)
