"""``make-shards`` driver: probe, plan and write over ``workers`` processes, resumable, then the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator

from data_recipes.make_shards.plan import MakeShardsError, build_plan, list_files, probe_job, read_captions_file
from data_recipes.make_shards.write import STATE_DIR, write_json, write_shard_job
from videogen.data.manifest import MANIFEST_NAME, DatasetManifest, ShardStats, provenance
from videogen.data.out_folder import check_out_apart
from videogen.data.writer import numbered_shard_name

PLAN_FORMAT = "videogen-make-shards-plan/1"


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
            probed = sorted(tqdm(_map(pool, probe_job, jobs), total=len(jobs), desc="probe", unit="file",
                                 disable=not progress), key=lambda r: r["file"])
            shards, skipped = build_plan(probed, {rel for rel, _, _ in files}, src, caption_map, args)
            plan = {"format": PLAN_FORMAT, "args": args, "sources": sources, "files_seen": len(files),
                    "skipped": skipped, "shards": [{"name": numbered_shard_name(i), "samples": s} for i, s in enumerate(shards)]}
            write_json(out / STATE_DIR / "plan.json", plan)
        records = _finished_shards(out, plan)
        todo = [(str(src), str(out), i, sh["samples"]) for i, sh in enumerate(plan["shards"]) if i not in records]
        kept = len(records)
        names = [sh["name"] for sh in plan["shards"]]
        with tqdm(total=sum(len(job[3]) for job in todo), desc="write", unit="sample", disable=not progress) as bar:
            for record in _map(pool, write_shard_job, todo):
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
