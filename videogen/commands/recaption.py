"""``videogen recaption --ckpt CAPTIONER --data SHARDS --out DIR``: relabel a shard set with long captions.

Every input shard becomes one output shard of the same name, sample for sample and member for member
in the same order: each tar member is copied byte for byte except ``json``, where the new caption is
added as ``json.captions[NAME]`` (``txt`` is never touched; a sample without ``json`` gets one, at
the end). A sample that cannot be captioned (media that does not decode, a ``json`` that is not an
object) is copied unchanged, counted by reason, logged and listed in the manifest.

Shards are written atomically (``TarShardWriter``) with a done record in ``OUT/.done/``: a rerun skips
finished shards (resumable by shard). Shards are split over ranks (``--rank/--world-size``, else
``RANK``/``WORLD_SIZE`` or ``SLURM_PROCID``/``SLURM_NTASKS``), so ``srun -n 4 videogen recaption ...``
splits the work; the process that finishes the last shard writes ``dataset.json``, which records the
captioner that wrote each caption name (path and weights sha256).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import time
from pathlib import Path
from typing import Any

HELP = "caption every clip of a shard set with a trained captioner (json.captions[NAME]; resumable, per rank)"
DONE = ".done"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="the captioner export folder (or a captioner checkpoint)")
    parser.add_argument("--data", required=True, nargs="+", help="input shards: folder, glob, brace pattern or paths")
    parser.add_argument("--out", required=True, help="output folder (one shard per input shard)")
    parser.add_argument("--name", default="recaption", help="the caption's name in json.captions (default recaption)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips captioned together (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="caption tokens at most (default 96)")
    parser.add_argument("--sampling", choices=["greedy", "beam", "top-p"], default="greedy")
    parser.add_argument("--num-beams", type=int, default=4, help="--sampling beam: beams (default 4)")
    parser.add_argument("--top-p", type=float, default=0.9, help="--sampling top-p: nucleus mass (default 0.9)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="--sampling top-p: seed (per shard)")
    parser.add_argument("--use-txt", action="store_true", help="give the captioner each sample's txt (trained with txt_prob > 0)")
    parser.add_argument("--no-cache", action="store_true", help="generate without the KV cache (slower; for checks)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--rank", type=int, default=None, help="this process's rank (default: from the environment)")
    parser.add_argument("--world-size", type=int, default=None, help="processes sharing the work (default: environment)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit values, else torchrun's RANK/WORLD_SIZE, else SLURM's SLURM_PROCID/SLURM_NTASKS, else (0, 1)."""
    env = os.environ
    if rank is None:
        rank = int(env.get("RANK", env.get("SLURM_PROCID", 0)))
    if world_size is None:
        world_size = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", 1)))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size} is out of range: check --rank/--world-size "
                         "(or RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS)")
    return rank, world_size


# ---- reading and writing shards member by member --------------------------------------------------


def read_samples(path: str, skips=None):
    """Yield ``(key, [(suffix, bytes), ...])`` in tar order; consecutive members of a key form a sample.
    ``suffix`` is the member name after the key's first dot, exactly as written. Read by the one shard
    reader (:func:`videogen.data.tar_reader.read_tar`, strict: a shard that cannot be read raises): a
    sample over a byte budget is counted in ``skips`` and left out (its members were not read)."""
    from videogen.data.tar_reader import TarLimits, group_samples, read_tar

    for sample in group_samples(read_tar([path], skips, TarLimits(), strict=True)):
        if sample.refused:
            if skips is not None:
                skips.add(sample.refused[0], path, sample.key,
                          "over a byte budget: not read, left out of the output")
        elif sample.order:
            yield sample.key, sample.order


class _Sample:
    def __init__(self, key: str, members: list[tuple[str, bytes]]):
        self.key, self.members = key, members
        self.meta: dict[str, Any] | None = None
        self.frames = None  # (3, F, H, W) float in [-1, 1]
        self.txt = ""
        self.caption: str | None = None

    def member(self, ext: str) -> bytes | None:
        return next((data for suffix, data in self.members if suffix.lower() == ext), None)

    def to_write(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"__key__": self.key}
        has_json = False
        for suffix, data in self.members:
            if suffix.lower() == "json" and self.caption is not None:
                meta = dict(self.meta or {})
                meta["captions"] = {**(meta.get("captions") or {}), name: self.caption}
                data, has_json = json.dumps(meta, ensure_ascii=False).encode("utf-8"), True
            out[suffix] = data
        if self.caption is not None and not has_json:
            out["json"] = json.dumps({"captions": {name: self.caption}}, ensure_ascii=False).encode("utf-8")
        return out


def prepare(sample: _Sample, decoder, num_frames: int, frame_size: int, size_multiple: int = 16) -> str | None:
    """Parse the json/txt and decode ``num_frames`` evenly spaced frames; the skip reason, or None."""
    import torch

    from videogen.data.decode import MEDIA_EXTENSIONS, DecodeError, decoder_for
    from videogen.data.stages import UNSAFE_EXTENSIONS, cover_size
    from videogen.models.captioner import sample_indices

    exts = {s.lower() for s, _ in sample.members}
    if exts & UNSAFE_EXTENSIONS:
        return "unsafe_member"
    raw = sample.member("json")
    if raw is not None:
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "bad_json"
        if not isinstance(meta, dict):
            return "bad_json"
        sample.meta = meta
    txt = sample.member("txt")
    sample.txt = txt.decode("utf-8", "replace").strip() if txt else ""
    ext = next((e for e in MEDIA_EXTENSIONS if e in exts), None)
    if ext is None:
        return "no_media"
    media = sample.member(ext)
    try:
        dec = decoder_for(ext, decoder)
        info = dec.probe(media)
        h, w = info.height, info.width
        scale = frame_size / min(h, w)  # short side -> frame_size, long side a multiple of size_multiple
        out_h, out_w = (max(size_multiple, round(h * scale / size_multiple) * size_multiple) if h > w else frame_size,
                        max(size_multiple, round(w * scale / size_multiple) * size_multiple) if w > h else frame_size)
        size = cover_size(w, h, out_h, out_w)
        idx = sample_indices(info.num_frames, num_frames).tolist()
        frames = dec.decode(media, idx, None if size == (h, w) else size)  # (F, H', W', 3)
    except DecodeError:
        return "decode_error"
    top, left = (frames.shape[1] - out_h) // 2, (frames.shape[2] - out_w) // 2
    frames = frames[:, top: top + out_h, left: left + out_w]
    sample.frames = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # c f h w
    return None


# ---- the command ------------------------------------------------------------------------------------


def finished_shards(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / DONE).glob("*.json")) if (out / p.stem).is_file()}


def recaption(ckpt: str, data: list[str] | str, out: str | Path, *, name: str = "recaption", batch_size: int = 16,
              max_new_tokens: int = 96, sampling: str = "greedy", num_beams: int = 4, top_p: float = 0.9,
              temperature: float = 1.0, seed: int = 0, use_txt: bool = False, use_cache: bool = True,
              device: str | None = None, rank: int | None = None, world_size: int | None = None,
              progress: bool = True, stop_after_shards: int | None = None) -> dict[str, Any]:
    """Caption this rank's shards; returns a summary (``shards``, ``captions``, ``skipped``, ``seconds``,
    ``manifest``: whether this process wrote dataset.json). ``stop_after_shards``: stop early (tests)."""
    import torch
    from tqdm import tqdm

    from videogen.pipelines.captioning import CaptionRunner, load_captioner
    from videogen.data.decode import make_decoder
    from videogen.data.out_folder import check_out_apart
    from videogen.data.shards import expand_urls, split_shards
    from videogen.data.stages import Skips
    from videogen.data.writer import TarShardWriter

    if not name or "." in name:
        raise ValueError(f"--name {name!r}: give a plain caption name (no dots), e.g. recaption")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    check_out_apart(out, data)
    rank, world_size = rank_and_world(rank, world_size)
    if device is None:
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        device = f"cuda:{local % max(1, torch.cuda.device_count())}" if torch.cuda.is_available() else "cpu"
    export, tokens = load_captioner(ckpt)
    identity = captioner_identity(ckpt, export)
    out = Path(out)
    urls = expand_urls(data)
    names = [Path(u).name for u in urls]
    if len(set(names)) != len(names):
        raise ValueError("input shards share file names (from different folders); recaption each folder on its own")
    done = finished_shards(out)
    for shard, record in done.items():
        wrote = record.get("captioner", {}).get("weights_sha256")
        if record.get("name") == name and wrote != identity["weights_sha256"]:
            raise ValueError(f"{out}: {shard} was captioned as {name!r} by another captioner ({record['captioner'].get('path')}); "
                             "write to a new folder or use another --name")
    mine = [u for u in split_shards(urls, rank, world_size, whole=True).urls if Path(u).name not in done]
    runner = CaptionRunner(export, tokens, device)
    decoder = make_decoder()
    summary: dict[str, Any] = {"shards": 0, "captions": 0, "skipped": {}, "seconds": 0.0, "manifest": False}
    began = time.perf_counter()
    bar = tqdm(desc=f"recaption rank {rank}/{world_size}", unit="caption", disable=not progress)
    for i, url in enumerate(mine):
        if stop_after_shards is not None and i >= stop_after_shards:
            break
        skips = Skips()
        lengths: list[int] = []
        writer = TarShardWriter(out / Path(url).name)
        gen = torch.Generator(device).manual_seed(seed + i)

        def flush(pending: list[_Sample]) -> None:
            todo = [s for s in pending if s.frames is not None]
            if todo:
                caps = runner([s.frames for s in todo], [s.txt for s in todo] if use_txt else None,
                              max_new_tokens=max_new_tokens, method=sampling, num_beams=num_beams, top_p=top_p,
                              temperature=temperature, generator=gen, use_cache=use_cache)
                for s, c in zip(todo, caps):
                    s.caption = c
                    lengths.append(len(c.split()))
                bar.update(len(todo))
            for s in pending:
                writer.write(s.to_write(name))

        try:
            pending: list[_Sample] = []
            for key, members in read_samples(url, skips):
                s = _Sample(key, members)
                reason = prepare(s, decoder, runner.decode_frames, runner.frame_size)
                if reason:
                    skips.add(reason, url, key)
                pending.append(s)
                if sum(p.frames is not None for p in pending) >= batch_size:
                    flush(pending)
                    pending = []
            flush(pending)
        except (tarfile.TarError, OSError, EOFError) as e:
            writer.abort()
            skips.add("unreadable_shard", url, detail=str(e)[:200])
            print(f"videogen recaption: {url} could not be read ({e}); it is left out (see the summary)")
            summary["skipped"]["unreadable_shard"] = summary["skipped"].get("unreadable_shard", 0) + 1
            continue
        except BaseException:
            writer.abort()
            raise
        writer.close()
        from videogen.data.manifest import scan_shard

        stats = scan_shard(writer.path)  # the written shard's statistics, from its json/txt members
        record = {"source": url, "name": name, "captioner": identity, "stats": stats.to_dict(),
                  "skipped": dict(skips.counts), "skipped_keys": skips_records(skips), "caption_words": lengths}
        (out / DONE).mkdir(parents=True, exist_ok=True)
        tmp = out / DONE / f"{Path(url).name}.json.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, out / DONE / f"{Path(url).name}.json")
        summary["shards"] += 1
        summary["captions"] += len(lengths)
        for reason, n in skips.counts.items():
            summary["skipped"][reason] = summary["skipped"].get(reason, 0) + n
    bar.close()
    summary["seconds"] = round(time.perf_counter() - began, 3)
    done = finished_shards(out)
    if all(n in done for n in names):
        write_manifest(out, urls, done, identity, name, {"ckpt": str(ckpt), "data": data, "sampling": sampling,
                                                          "max_new_tokens": max_new_tokens, "use_txt": use_txt})
        summary["manifest"] = True
    return summary


def skips_records(skips) -> list[dict[str, str]]:
    return [{"reason": r, "count": n} for r, n in skips.counts.items()]


def captioner_identity(ckpt: str, export) -> dict[str, Any]:
    return {"path": str(Path(ckpt).resolve()), "weights_sha256": export.manifest["weights_sha256"],
            "class_path": export.config["class_path"]}


def write_manifest(out: Path, urls: list[str], done: dict[str, dict[str, Any]], identity: dict[str, Any], name: str,
                   args: dict[str, Any]):
    """``dataset.json`` of the output: the shards, what was skipped, caption lengths, and which
    checkpoint wrote which caption name (carried over from the input's manifest for older names)."""
    from videogen.data.manifest import DatasetManifest, ShardStats, provenance

    records = [done[Path(u).name] for u in urls]
    source = DatasetManifest.find(Path(urls[0]).parent)
    captions = dict((source.created_by.get("captions") or {}) if source else {})
    captions[name] = identity
    words = [n for r in records for n in r["caption_words"]]
    created_by = {**provenance("recaption", args), "captions": captions,
                  "caption_words": length_summary(words), "source": source.created_by if source else None}
    skipped = [{"file": r["source"], "reason": reason, "count": n} for r in records for reason, n in r["skipped"].items()]
    manifest = DatasetManifest(shards=[ShardStats.from_dict(r["stats"]) for r in records], created_by=created_by,
                               skipped=skipped)
    manifest.save(out)
    return manifest


def length_summary(words: list[int]) -> dict[str, float]:
    if not words:
        return {"count": 0}
    ordered = sorted(words)
    return {"count": len(words), "min": ordered[0], "mean": round(statistics.fmean(words), 2),
            "median": statistics.median(words), "p90": ordered[int(0.9 * (len(words) - 1))], "max": ordered[-1]}


def run(args: argparse.Namespace) -> int:
    try:
        summary = recaption(args.ckpt, args.data, args.out, name=args.name, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, sampling=args.sampling, num_beams=args.num_beams,
                            top_p=args.top_p, temperature=args.temperature, seed=args.seed, use_txt=args.use_txt,
                            use_cache=not args.no_cache, device=args.device, rank=args.rank,
                            world_size=args.world_size, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, TypeError, OSError) as e:
        print(f"videogen recaption: {e}")
        return 2
    rate = summary["captions"] / summary["seconds"] if summary["seconds"] else 0.0
    print(f"captioned {summary['captions']} clips in {summary['shards']} shards ({rate:.1f} captions/s)"
          + (f"; skipped (copied unchanged): {summary['skipped']}" if summary["skipped"] else ""))
    out = Path(args.out)
    if summary["manifest"]:
        from videogen.data.manifest import DatasetManifest

        m = DatasetManifest.load(out)
        lengths = m.created_by.get("caption_words", {})
        print(f"{out}: {m.num_samples} samples in {len(m.shards)} shards; caption words: {lengths}")
    else:
        print(f"{out}: other ranks' shards are not all done yet; the last to finish writes dataset.json")
    return 0
