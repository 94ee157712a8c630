"""``videogen recaption``: relabel a shard set with long captions, as a corpus-wide predict job.

Every input shard becomes one output shard of the same name, sample for sample and member for member
in the same order: each tar member is copied byte for byte except ``json``, where the new caption is
added as ``json.captions[NAME]`` (``txt`` is never touched; a sample without ``json`` gets one, at
the end). A sample that cannot be captioned (media that does not decode, a ``json`` that is not an
object) is copied unchanged, counted by reason, logged and listed in the manifest.

The job has ``videogen encode``'s shape: :class:`CaptionStream` reads this rank's whole shards
(``split_shards(..., whole=True)``) and yields batches of samples, then a marker per shard;
:class:`~videogen.pipelines.recaption_module.RecaptionModule` captions each batch in a Trainer predict run;
:class:`~videogen.pipelines.shard_writer.CaptionShardWriter` writes the shards atomically, a done
record per shard in ``OUT/.done/`` (a rerun skips finished shards: resumable by shard) and
``dataset.json``, which records the captioner that wrote each caption name (path and weights sha256).

Ranks work apart, with no rendezvous: shards are split over ``--rank/--world-size``, else
``RANK``/``WORLD_SIZE`` or ``SLURM_PROCID``/``SLURM_NTASKS`` (:func:`rank_and_world`), so
``srun -n 4 videogen recaption ...`` splits the work; each process's Trainer runs on one device, and
the process that finishes the last shard writes ``dataset.json``.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

from torch.utils.data import IterableDataset


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Explicit values, else torchrun's RANK/WORLD_SIZE, else SLURM's SLURM_PROCID/SLURM_NTASKS, else (0, 1).
    (Lightning's own cluster environments would join the ranks in one process group; recaption's ranks
    need none, so a rank may run, or rerun, on its own.)"""
    env = os.environ
    if rank is None:
        rank = int(env.get("RANK", env.get("SLURM_PROCID", 0)))
    if world_size is None:
        world_size = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", 1)))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size} is out of range: check --rank/--world-size "
                         "(or RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS)")
    return rank, world_size


def predict_device(device: str | None) -> tuple[str, list[int] | int]:
    """``(accelerator, devices)`` of the Trainer for ``--device`` (None: ``cuda:LOCAL_RANK`` when GPUs exist)."""
    import torch

    if device is None:
        if not torch.cuda.is_available():
            return "cpu", 1
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        return "cuda", [local % max(1, torch.cuda.device_count())]
    d = torch.device(device)
    return ("cuda", [d.index or 0]) if d.type == "cuda" else (d.type, 1)


# ---- reading shards member by member --------------------------------------------------------------


def read_samples(path: str, skips=None) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
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


class CopiedSample:
    """One input sample, copied member for member; ``frames`` once decoded, ``caption`` once captioned."""

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


def prepare(sample: CopiedSample, decoder, num_frames: int, frame_size: int, size_multiple: int = 16) -> str | None:
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


class CaptionStream(IterableDataset):
    """Every sample of this rank's shards once, shard by shard, in tar order.

    Shards are split by :func:`~videogen.data.shards.split_shards` (whole shards only, so each output
    shard is written by one process); shards named in ``skip`` (finished by a previous run) are left
    out, and with ``stop_after`` only the first that many of the rest are read. A batch is
    ``{"url", "shard_index", "samples"}``: samples in tar order, ``batch_size`` of them with frames
    (the others, which cannot be captioned, ride along to be copied); batches never span shards. After
    a shard's last batch comes ``{"shard_done": url, "skipped": {...}}``, or ``{"shard_failed": url,
    "error": ...}`` when the shard could not be read to its end.
    """

    def __init__(self, urls: list[str], *, batch_size: int, num_frames: int, frame_size: int, rank: int = 0,
                 world_size: int = 1, skip: frozenset[str] = frozenset(), stop_after: int | None = None):
        self.urls, self.batch_size, self.num_frames, self.frame_size = list(urls), batch_size, num_frames, frame_size
        self.rank, self.world_size, self.skip, self.stop_after = rank, world_size, skip, stop_after

    def shards(self) -> list[str]:
        """This process's shards to read, in order (``shard_index`` is the position here)."""
        from torch.utils.data import get_worker_info

        from videogen.data.shards import split_shards

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = [u for u in split_shards(self.urls, self.rank, self.world_size, worker, workers, whole=True).urls
                if Path(u).name not in self.skip]
        return mine if self.stop_after is None else mine[: self.stop_after]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from videogen.data.decode import make_decoder
        from videogen.data.stages import Skips

        decoder = make_decoder()
        for i, url in enumerate(self.shards()):
            skips = Skips()
            pending: list[CopiedSample] = []
            try:
                for key, members in read_samples(url, skips):
                    s = CopiedSample(key, members)
                    reason = prepare(s, decoder, self.num_frames, self.frame_size)
                    if reason:
                        skips.add(reason, url, key)
                    pending.append(s)
                    if sum(p.frames is not None for p in pending) >= self.batch_size:
                        yield {"url": url, "shard_index": i, "samples": pending}
                        pending = []
            except (tarfile.TarError, OSError, EOFError) as e:
                skips.add("unreadable_shard", url, detail=str(e)[:200])
                yield {"shard_failed": url, "error": str(e)}
                continue
            if pending:
                yield {"url": url, "shard_index": i, "samples": pending}
            yield {"shard_done": url, "skipped": dict(skips.counts)}


def captioner_identity(ckpt: str, export) -> dict[str, Any]:
    return {"path": str(Path(ckpt).resolve()), "weights_sha256": export.manifest["weights_sha256"],
            "class_path": export.config["class_path"]}


def recaption(ckpt: str, data: list[str] | str, out: str | Path, *, name: str = "recaption", batch_size: int = 16,
              max_new_tokens: int = 96, sampling: str = "greedy", num_beams: int = 4, top_p: float = 0.9,
              temperature: float = 1.0, seed: int = 0, use_txt: bool = False, use_cache: bool = True,
              device: str | None = None, rank: int | None = None, world_size: int | None = None,
              progress: bool = True, stop_after_shards: int | None = None) -> dict[str, Any]:
    """Caption this rank's shards; returns a summary (``shards``, ``captions``, ``skipped``, ``seconds``,
    ``manifest``: whether this process wrote dataset.json). ``stop_after_shards``: stop early (tests)."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.plugins.environments import LightningEnvironment
    from torch.utils.data import DataLoader

    from videogen.pipelines.shard_writer import CaptionShardWriter, finished_shards
    from videogen.data.manifest import DatasetManifest
    from videogen.data.out_folder import check_out_apart
    from videogen.data.shards import expand_urls
    from videogen.pipelines.recaption_module import RecaptionModule

    if not name or "." in name:
        raise ValueError(f"--name {name!r}: give a plain caption name (no dots), e.g. recaption")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    check_out_apart(out, data)
    rank, world_size = rank_and_world(rank, world_size)
    accelerator, devices = predict_device(device)
    module = RecaptionModule(str(ckpt), max_new_tokens=max_new_tokens, sampling=sampling, num_beams=num_beams,
                             top_p=top_p, temperature=temperature, seed=seed, use_txt=use_txt, use_cache=use_cache)
    identity = captioner_identity(ckpt, module.export)
    out = Path(out)
    urls = expand_urls(data)
    names = [Path(u).name for u in urls]
    if len(set(names)) != len(names):
        raise ValueError("input shards share file names (from different folders); recaption each folder on its own")
    done = finished_shards(out)
    for shard, record in done.items():
        wrote = record.get("captioner", {}).get("weights_sha256")
        if record.get("name") == name and wrote != identity["weights_sha256"]:
            raise ValueError(f"{out}: {shard} was captioned as {name!r} by another captioner "
                             f"({record['captioner'].get('path')}); write to a new folder or use another --name")
    writer = CaptionShardWriter(out, names, name=name, identity=identity, progress=progress,
                                desc=f"recaption rank {rank}/{world_size}",
                                source=DatasetManifest.find(Path(urls[0]).parent),
                                args={"ckpt": str(ckpt), "data": data, "sampling": sampling,
                                      "max_new_tokens": max_new_tokens, "use_txt": use_txt})
    stream = CaptionStream(urls, batch_size=batch_size, num_frames=module.runner.decode_frames,
                           frame_size=module.runner.frame_size, rank=rank, world_size=world_size,
                           skip=frozenset(done), stop_after=stop_after_shards)
    began = time.perf_counter()
    if stream.shards():
        # one device per process: the ranks split the shards between them (rank_and_world), not Lightning
        trainer = Trainer(accelerator=accelerator, devices=devices, plugins=[LightningEnvironment()], logger=False,
                          enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                          callbacks=[writer])
        trainer.predict(module, dataloaders=DataLoader(stream, batch_size=None, num_workers=0),
                        return_predictions=False)
    else:
        writer.write_manifest_if_done()
    return {"shards": writer.shards, "captions": writer.captions, "skipped": dict(writer.skipped),
            "seconds": round(time.perf_counter() - began, 3), "manifest": writer.manifest}
