"""``videogen curate``: the driver. Score every shard (parallel, resumable), judge the whole set,
write the kept samples as shards with a ``dataset.json`` and the report.

Layout of ``OUT``::

    shard-NNNNNN.tar      kept samples of input shard NNNNNN (in sorted input order; none when all dropped)
    dataset.json          the manifest (created_by.curation lists the score names the filter may use)
    curation.json         the report: counts per step and reason, inputs skipped, every sample's decision
    histograms/NAME.png   one histogram per numeric score, its threshold drawn in
    calibration/FLAG/     with --calibrate: example pieces each side of each threshold (calibrate.py)
    .curate/plan.json     the inputs and the scoring options (a rerun must match them)
    .curate/scored/       pass 1: every input shard's scored pieces and its .done.json

A rerun skips every shard whose ``.done.json`` and scored tar are there, and judges again (the
thresholds, dedup distance, filter and keep_all may change between runs; the scoring options may not).
``shard_index``/``num_shard_groups`` score one group of shards (``i % N == I``) and stop: one SLURM
array task each; a final run without them finds every shard scored and writes the output.
``dedup_part``/``num_dedup_parts`` (once every shard is scored) search one part of the
near-duplicate pairs (``dedup.linked_pairs``) and save it as ``.curate/dedup/part-I-of-N.npz``: one
array task each; the final run reads every part of the last complete set whose fingerprint (the
pieces that reach dedup, their signatures and the dedup options) matches, and searches itself
otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from data_recipes.curate import calibrate as calibrate_mod
from data_recipes.curate import dedup
from data_recipes.curate import report as report_mod
from data_recipes.curate.decide import decide
from data_recipes.curate.options import CurateOptions
from data_recipes.curate.score import load_done, score_shard
from data_recipes.curate.scorers import build_scorers
from videogen.data import stages
from videogen.data.manifest import MANIFEST_NAME, DatasetManifest, ShardStats, provenance
from videogen.data.out_folder import check_out_apart
from videogen.data.shards import expand_urls, is_remote
from videogen.data.writer import TarShardWriter


WORK = ".curate"
log = logging.getLogger("videogen.curate")
PLAN_FORMAT = "videogen-curate-plan/1"
# options that change what pass 1 computes: a rerun into the same folder must keep them
SCORING_OPTIONS = ("steps", "analysis_side", "max_frames", "cut_threshold", "cut_ratio", "min_scene_frames",
                   "crop_letterbox", "motion_pairs", "clip_model", "scorers")


class CurateError(ValueError):
    """A problem with the arguments or the output folder (bad input samples are skipped, not raised)."""


_JOB: dict[str, Any] = {}  # what every shard job shares: folder, options, scorer objects, decoder


def _init_job(job: dict[str, Any]) -> None:
    import cv2

    cv2.setNumThreads(1)  # one thread per worker process: the pool is the parallelism
    _JOB.clear()
    _JOB.update(job)


def _score_job(job: tuple[str, int]) -> dict:
    return score_shard(job[0], job[1], _JOB["scored"], _JOB["options"], _JOB["scorers"], _JOB["decoder"])


@contextmanager
def _pool(workers: int, job: dict[str, Any]) -> Iterator[Any]:
    """``workers`` processes (forked on Linux, spawned elsewhere: then scorers must pickle), or
    ``None`` for one: run in this process."""
    _init_job(job)
    if workers <= 1:
        yield None
        return
    method = "fork" if sys.platform == "linux" else "spawn"
    with get_context(method).Pool(workers, initializer=_init_job, initargs=(job,)) as pool:
        yield pool


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _plan(out: Path, urls: list[str], opts: CurateOptions, extra_scorers: list) -> None:
    scoring = {k: opts.to_dict()[k] for k in SCORING_OPTIONS}
    scoring["extra_scorers"] = sorted(type(s).__module__ + "." + type(s).__qualname__ for s in extra_scorers)
    inputs = [u if is_remote(u) else str(Path(u).resolve()) for u in urls]
    plan = {"format": PLAN_FORMAT, "inputs": inputs, "scoring": scoring}
    path = out / WORK / "plan.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if any(out.glob("*.tar")) or (out / MANIFEST_NAME).exists():
            raise CurateError(f"{out} already holds shards or a {MANIFEST_NAME} that curate has no plan for "
                              f"({WORK}/plan.json); give a new --out folder or empty this one") from None
        _write_json(path, plan)
        return
    except (OSError, json.JSONDecodeError) as e:
        raise CurateError(f"{path}: unreadable ({e}); delete {out / WORK} to start over") from e
    if old.get("inputs") != inputs:
        raise CurateError(f"{out} was curated from other shards ({len(old.get('inputs', []))} before, {len(inputs)} "
                          "now); give a new --out folder")
    if old.get("scoring") != scoring:
        diff = [f"{k}: {old['scoring'].get(k)!r} -> {v!r}" for k, v in scoring.items() if old["scoring"].get(k) != v]
        raise CurateError(f"{out} was scored with other options ({'; '.join(diff)}); rerun with the same ones "
                          "(thresholds, dedup distance, filter and keep_all may change), or give a new --out folder")


def _fingerprint(hashes: list[str], colours: list[str], opts: CurateOptions) -> str:
    text = json.dumps([hashes, colours, opts.dedup_max_distance, opts.dedup_max_colour, dedup.EXACT_MAX])
    return hashlib.sha256(text.encode()).hexdigest()


def _part_path(out: Path, part: int, parts: int) -> Path:
    return out / WORK / "dedup" / f"part-{part:04d}-of-{parts:04d}.npz"


def _save_part(out: Path, part: int, parts: int, found: dict):
    """A ``decide`` dedup_pairs that searches part ``part`` of ``parts`` and saves it."""
    def compute(hashes: list[str], colours: list[str], opts: CurateOptions) -> np.ndarray:
        pairs = dedup.linked_pairs(hashes, opts.dedup_max_distance, colours, opts.dedup_max_colour, part, parts)
        path = _part_path(out, part, parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, pairs=pairs, fingerprint=np.frombuffer(_fingerprint(hashes, colours, opts).encode(), np.uint8))
        os.replace(tmp, path)
        found["pairs"] = len(pairs)
        return pairs
    return compute


def _read_parts(out: Path, found: dict):
    """A ``decide`` dedup_pairs that takes the union of a complete, matching set of saved parts, or
    searches everything itself."""
    def compute(hashes: list[str], colours: list[str], opts: CurateOptions) -> np.ndarray:
        want = _fingerprint(hashes, colours, opts)
        sets: dict[int, dict[int, Path]] = {}
        for p in (out / WORK / "dedup").glob("part-*-of-*.npz"):
            try:
                part, parts = (int(x) for x in p.stem[len("part-"):].split("-of-"))
            except ValueError:
                continue
            sets.setdefault(parts, {})[part] = p
        for parts, paths in sorted(sets.items(), key=lambda kv: -max(q.stat().st_mtime for q in kv[1].values())):
            if sorted(paths) != list(range(parts)):
                continue
            pieces = []
            for path in paths.values():
                try:
                    with np.load(path, allow_pickle=False) as z:
                        pairs, fp = z["pairs"], z["fingerprint"].tobytes().decode("ascii", "replace")
                except (OSError, ValueError, KeyError) as e:
                    log.warning("curate: %s unreadable (%s): searching duplicates here", path, e)
                    break
                if fp != want or pairs.ndim != 2 or pairs.shape[1] != 3 or pairs.dtype.kind != "i" \
                        or (len(pairs) and (pairs[:, :2].min() < 0 or pairs[:, :2].max() >= len(hashes))):
                    log.warning("curate: %s was searched for other pieces or options: searching duplicates here", path)
                    break
                pieces.append(pairs)
            else:
                found["parts_read"] = parts
                pairs = np.concatenate(pieces) if pieces else np.zeros((0, 3), np.int64)
                return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        found["parts_read"] = 0
        return dedup.linked_pairs(hashes, opts.dedup_max_distance, colours, opts.dedup_max_colour)
    return compute


def curate(data: str | list[str], out: str | os.PathLike, options: CurateOptions | None = None, *, workers: int = 1,
           shard_index: int | None = None, num_shard_groups: int | None = None, dedup_part: int | None = None,
           num_dedup_parts: int | None = None, scorers: list | None = None, decoder: str = "auto",
           progress: bool = True, histograms: bool = True, calibrate: bool = False) -> dict[str, Any]:
    """Curate the shards ``data`` into ``out``; returns the report (also saved as ``curation.json``).
    With a shard group only that group is scored and ``{"group_done": ...}`` is returned; with a
    dedup part only that part of the duplicate search runs, ``{"dedup_part_done": ...}``."""
    from tqdm import tqdm

    opts = options or CurateOptions()
    out = Path(out)
    if workers < 1:
        raise CurateError(f"--workers must be >= 1, got {workers}")
    if (shard_index is None) != (num_shard_groups is None):
        raise CurateError("give both --shard-index and --num-shard-groups, or neither")
    if num_shard_groups is not None and not 0 <= shard_index < num_shard_groups:
        raise CurateError(f"--shard-index {shard_index} is not in [0, --num-shard-groups {num_shard_groups})")
    if (dedup_part is None) != (num_dedup_parts is None):
        raise CurateError("give both --dedup-part and --num-dedup-parts, or neither")
    if num_dedup_parts is not None:
        if not 0 <= dedup_part < num_dedup_parts:
            raise CurateError(f"--dedup-part {dedup_part} is not in [0, --num-dedup-parts {num_dedup_parts})")
        if num_shard_groups is not None:
            raise CurateError("--dedup-part runs after every shard group is scored: give it without --shard-index")
        if "dedup" not in opts.steps:
            raise CurateError("--dedup-part needs the dedup step in --steps")
    try:
        urls = expand_urls(data)
    except FileNotFoundError as e:
        raise CurateError(str(e)) from e
    check_out_apart(out, data)
    extra = list(scorers or [])
    run_scorers = build_scorers(opts.clip_model, opts.scorers, extra)
    opts.score_filter  # noqa: B018 - parsed now: a malformed expression fails before the scoring (names after)
    out.mkdir(parents=True, exist_ok=True)
    _plan(out, urls, opts, extra)
    scored = out / WORK / "scored"
    scored.mkdir(parents=True, exist_ok=True)

    mine = range(len(urls)) if num_shard_groups is None else range(shard_index, len(urls), num_shard_groups)
    records = {i: r for i in mine if (r := load_done(scored, i, urls[i])) is not None}
    todo = [(urls[i], i) for i in mine if i not in records]
    if dedup_part is not None and todo:
        raise CurateError(f"{len(todo)} of {len(urls)} input shards are not scored yet: score them first (the "
                          "--shard-index array, or a run without --dedup-part), then search duplicates by part")
    began = time.perf_counter()
    job = {"scored": str(scored), "options": opts, "scorers": run_scorers, "decoder": decoder}
    with _pool(min(workers, max(1, len(todo))), job) as pool, \
            tqdm(total=len(todo), desc="curate: score", unit="shard", disable=not progress) as bar:
        results = map(_score_job, todo) if pool is None else pool.imap_unordered(_score_job, todo)
        for record in results:
            records[int(record["name"].rsplit("-", 1)[1])] = record
            bar.update(1)
            bar.set_postfix(samples=sum(r["inputs_read"] for r in records.values()))
    score_seconds = round(time.perf_counter() - began, 3)
    if num_shard_groups is not None:
        missing = [i for i in range(len(urls)) if load_done(scored, i, urls[i]) is None]
        if progress:
            print(f"curate: group {shard_index} of {num_shard_groups}: {len(todo)} shards scored now, "
                  f"{len(mine) - len(todo)} before; {len(missing)} of {len(urls)} shards still unscored"
                  + ("" if missing else f"; run `videogen curate` without --shard-index to write {out}"))
        return {"group_done": shard_index, "scored_now": len(todo), "unscored": len(missing)}

    ordered = [records[i] for i in range(len(urls))]
    entries = [e for r in ordered for e in r["entries"]]
    found: dict[str, int] = {}
    if dedup_part is not None:
        began = time.perf_counter()
        decide(entries, opts, _save_part(out, dedup_part, num_dedup_parts, found))
        if progress:
            print(f"curate: dedup part {dedup_part} of {num_dedup_parts}: {found['pairs']} linked pairs in "
                  f"{time.perf_counter() - began:.1f}s -> {_part_path(out, dedup_part, num_dedup_parts)}")
        return {"dedup_part_done": dedup_part, "pairs": found["pairs"]}
    began = time.perf_counter()
    decision = decide(entries, opts, _read_parts(out, found))
    judge_seconds = round(time.perf_counter() - began, 3)
    written = write_output(out, ordered, progress)
    skipped = [{"file": f"{s['shard']}/{s['key']}" if s["key"] else s["shard"], "reason": s["reason"],
                "detail": s["detail"]} for r in ordered for s in r["skipped"]]
    args = {"data": data if isinstance(data, str) else list(data), "out": str(out), **opts.to_dict()}
    created_by = provenance("curate", args)
    created_by["curation"] = {"scores": decision["score_types"], "steps": opts.ordered_steps(), "filter": opts.filter,
                              "keep_all": opts.keep_all}
    manifest = DatasetManifest(written, created_by, skipped)
    manifest.save(out)
    rep = report_mod.build(out, ordered, entries, decision, opts, created_by, skipped,
                           {"score_seconds": score_seconds, "shards_scored_now": len(todo),
                            "judge_seconds": judge_seconds, "dedup_parts_read": found.get("parts_read", 0)})
    if histograms:
        rep["histograms"] = report_mod.histograms(out / "histograms", entries, opts)
    if calibrate:
        rep["calibration"] = calibrate_mod.plan(entries, opts)
        wanted = {ex["key"] for item in rep["calibration"].values() for side in item["examples"].values()
                  for ex in side}
        frames = analysis_frames(out, ordered, wanted, opts, decoder)
        shutil.rmtree(out / "calibration", ignore_errors=True)
        calibrate_mod.write(out, rep["calibration"], frames.get)
    _write_json(out / "curation.json", rep)
    if progress:
        print(report_mod.summary(rep))
    return rep


def analysis_frames(out: Path, ordered: list[dict], keys: set[str], opts: CurateOptions, decoder: str) -> dict:
    """key -> (T, h, w, 3) analysis frames of the scored pieces ``keys`` (read back from ``.curate/scored``)."""
    from data_recipes.curate.frames import decode_clip
    from videogen.data.decode import DecodeError, make_decoder

    dec, found = make_decoder(decoder), {}
    for record in ordered:
        if not any(e["key"] in keys for e in record["entries"]):
            continue
        skips = stages.Skips(max_logged=0)
        tar = str(out / WORK / "scored" / f"{record['name']}.tar")
        for r in stages.parse(stages.group_samples(stages.read_tar([tar], skips, 2**31)), skips, dec,
                              require_caption=False):
            if r.key in keys:
                try:
                    found[r.key] = decode_clip(r, dec, opts.analysis_side, opts.max_frames).frames
                except DecodeError as e:
                    log.warning("curate: calibration example %s could not be decoded again (%s)", r.key, e)
    return found


def write_output(out: Path, ordered: list[dict], progress: bool = True) -> list[ShardStats]:
    """Copy the kept pieces of every scored shard into ``out/shard-NNNNNN.tar`` with their final json
    (decided flags added); shards left empty are not written (and an older one is removed)."""
    from tqdm import tqdm

    stats = []
    scored = out / WORK / "scored"
    for record in tqdm(ordered, desc="curate: write", unit="shard", disable=not progress):
        target = out / f"{record['name']}.tar"
        keep = {e["key"]: e for e in record["entries"] if e["kept"]}  # judged in place by decide()
        if not keep:
            target.unlink(missing_ok=True)
            continue
        skips = stages.Skips(max_logged=0)
        with TarShardWriter(target) as writer:
            for s in stages.group_samples(stages.read_tar([str(scored / f"{record['name']}.tar")], skips, 2**31)):
                if s.key not in keep:
                    continue
                meta = json.loads(s.members["json"].decode("utf-8"))
                meta["curation"] = keep[s.key]["scores"]
                writer.write({"__key__": s.key, **{k: v for k, v in s.members.items() if k != "json"}, "json": meta})
        if skips.counts:
            raise RuntimeError(f"{scored / record['name']}.tar could not be read back ({dict(skips.counts)}); "
                               f"delete it and its .done.json and rerun")
        stats.append(writer.stats)
    return stats
