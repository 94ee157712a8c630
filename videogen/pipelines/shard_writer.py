"""Shard writers: the predictions of a corpus-wide predict run -> one output shard per input shard.

``videogen encode`` and ``videogen recaption`` have one shape: a stream reads this rank's whole input
shards (``split_shards(..., whole=True)``) and yields batches, never spanning shards, then a marker
per shard, ``{"shard_done": url, "skipped": {...}}`` (or ``{"shard_failed": url, "error": ...}`` for a
shard that could not be read); a predict module turns each batch into a prediction (markers pass
through); a :class:`ShardWriter` here writes each prediction's samples into the output shard named
like its input shard.

A shard is written atomically (``TarShardWriter``) with a record in ``OUT/.done/`` once it is
complete: a rerun skips finished shards (:func:`finished_shards`; resumable by shard). A shard that
could not be read is dropped (never half written) and counted as ``unreadable_shard``. At the end,
once every input shard is done, global rank 0 writes ``dataset.json`` from the records of every
finished shard in the folder (:func:`write_manifest`), with what the job records about itself
(the VAE's identity, the captioner that wrote each caption name).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from lightning.pytorch.callbacks import BasePredictionWriter

from videogen.data.manifest import DatasetManifest, ShardStats
from videogen.data.npy import npy_bytes
from videogen.data.writer import TarShardWriter

log = logging.getLogger("videogen")

DONE = ".done"


def finished_shards(out: str | Path) -> dict[str, dict[str, Any]]:
    """The records of the shards a previous run finished (tar and record both present), by shard name."""
    out = Path(out)
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / DONE).glob("*.json")) if (out / p.stem).is_file()}


def write_manifest(out: str | Path, records: Iterable[dict[str, Any]], created_by: dict[str, Any]) -> DatasetManifest:
    """``OUT/dataset.json`` from the shards' ``.done`` records (their statistics and skips)."""
    records = list(records)
    skipped = [{"file": r["source"], "reason": reason, "count": n} for r in records for reason, n in r["skipped"].items()]
    manifest = DatasetManifest(shards=[ShardStats.from_dict(r["stats"]) for r in records], created_by=created_by,
                               skipped=skipped)
    manifest.save(out)
    return manifest


class ShardWriter(BasePredictionWriter, ABC):
    """Writes a predict run's samples, shard by shard; a subclass says what a prediction's samples are
    (:meth:`samples`), what a shard's record holds (:meth:`shard_record`) and what ``dataset.json``
    records about the job (:meth:`created_by`). After the run, ``shards`` (finished by this process),
    ``skipped`` (by reason) and ``manifest`` (whether this process wrote ``dataset.json``) sum it up."""

    job = "predict"

    def __init__(self, out: str | Path, names: Sequence[str]):
        """``names``: every input shard's name (this rank's and the others'): ``dataset.json`` is written
        once all of them are done."""
        super().__init__(write_interval="batch")
        self.out, self.names = Path(out), list(names)
        self._open: dict[str, TarShardWriter] = {}
        self.shards = 0
        self.skipped: Counter = Counter()
        self.manifest = False

    @abstractmethod
    def samples(self, prediction: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(input shard url, sample to write)`` for each sample of a prediction."""

    def shard_record(self, url: str, writer: TarShardWriter, skipped: dict[str, int]) -> dict[str, Any]:
        """Close a complete shard; its ``.done`` record."""
        return {"source": url, "stats": writer.close().to_dict(), "skipped": skipped}

    @abstractmethod
    def created_by(self, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """``dataset.json``'s ``created_by``, given the records of every finished shard."""

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if "shard_done" in prediction:
            self._finish(prediction["shard_done"], prediction["skipped"])
        elif "shard_failed" in prediction:
            self._fail(prediction["shard_failed"], prediction["error"])
        else:
            for url, sample in self.samples(prediction):
                writer = self._open.get(url)
                if writer is None:
                    writer = self._open[url] = TarShardWriter(self.out / Path(url).name)
                writer.write(sample)

    def _finish(self, url: str, skipped: dict[str, int]) -> None:
        name = Path(url).name
        writer = self._open.pop(url, None) or TarShardWriter(self.out / name)  # no sample written: empty
        record = self.shard_record(url, writer, skipped)
        (self.out / DONE).mkdir(parents=True, exist_ok=True)
        tmp = self.out / DONE / f"{name}.json.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.out / DONE / f"{name}.json")
        self.shards += 1
        self.skipped.update(skipped)
        log.info("%s %s: %d samples%s", self.job, name, record["stats"]["num_samples"],
                 f", skipped {skipped}" if skipped else "")

    def _fail(self, url: str, error: str) -> None:
        writer = self._open.pop(url, None)
        if writer is not None:
            writer.abort()
        self.skipped["unreadable_shard"] += 1
        print(f"videogen {self.job}: {url} could not be read ({error}); it is left out (see the summary)")

    def on_predict_end(self, trainer, pl_module) -> None:
        for url in list(self._open):  # a stream that ended without its marker (should not happen)
            self._open.pop(url).abort()
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            self.write_manifest_if_done()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        for url in list(self._open):  # an interrupted shard leaves no tar (at most a .tmp)
            self._open.pop(url).abort()

    def write_manifest_if_done(self) -> bool:
        """``dataset.json`` when every input shard is done (whichever rank finished last); whether it was."""
        done = finished_shards(self.out)
        self.manifest = all(n in done for n in self.names)
        if self.manifest:
            write_manifest(self.out, done.values(), self.created_by(done))
        return self.manifest


class LatentShardWriter(ShardWriter):
    """``videogen encode``: latents (``latent.npy``, float16 ``(C, t, h, w)``) with the sample's ``txt``
    and ``json`` (its shape fields describing the encoded clip) and, with a text encoder, the caption
    embeddings; ``dataset.json`` records the VAE's identity."""

    job = "encode"

    def __init__(self, out: str | Path, names: Sequence[str], created_by: dict[str, Any]):
        super().__init__(out, names)
        self._created_by = created_by

    def samples(self, prediction: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        for i, key in enumerate(prediction["key"]):
            t, h, w = prediction["pixels"][i]
            meta = dict(prediction["meta"][i])
            meta["latent"] = {"shape": list(prediction["latents"][i].shape), "frames": t, "height": h, "width": w,
                              "fps": prediction["fps"][i]}
            # the shape fields describe the encoded clip, so the bucketer and manifests see what is stored
            meta.update(width=w, height=h, num_frames=t, fps=prediction["fps"][i])
            sample = {"__key__": key, "latent.npy": npy_bytes(prediction["latents"][i]), "json": meta}
            if prediction["caption"][i]:
                sample["txt"] = prediction["caption"][i]
            for ext, array in (prediction["text"][i] if "text" in prediction else {}).items():
                sample[ext] = npy_bytes(array)  # caption embeddings (videogen encode --text-encoder)
            yield prediction["url"][i], sample

    def created_by(self, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return self._created_by


class CaptionShardWriter(ShardWriter):
    """``videogen recaption``: every input sample, member for member (``CopiedSample.to_write``: only
    ``json`` changes, by the new caption); each shard's record names the captioner and the caption
    lengths; ``dataset.json`` records which captioner wrote which caption name."""

    job = "recaption"

    def __init__(self, out: str | Path, names: Sequence[str], *, name: str, identity: dict[str, Any],
                 args: dict[str, Any], source: DatasetManifest | None, progress: bool = True, desc: str = "recaption"):
        """``identity``: the captioner's (path, weights sha256, class); ``args``: the job's arguments for
        the provenance; ``source``: the input's manifest (its caption names are carried over)."""
        super().__init__(out, names)
        self.name, self.identity, self.args, self.source = name, identity, args, source
        self.progress, self.desc = progress, desc
        self._words: dict[str, list[int]] = {}
        self.captions = 0  # in the shards this process finished
        self.bar = None

    def on_predict_start(self, trainer, pl_module) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=self.desc, unit="caption", disable=not self.progress)

    def samples(self, prediction: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        url = prediction["url"]
        words = self._words.setdefault(url, [])
        captioned = [len(s.caption.split()) for s in prediction["samples"] if s.caption is not None]
        words.extend(captioned)
        if self.bar is not None:
            self.bar.update(len(captioned))
        for s in prediction["samples"]:
            yield url, s.to_write(self.name)

    def shard_record(self, url: str, writer: TarShardWriter, skipped: dict[str, int]) -> dict[str, Any]:
        from videogen.data.manifest import scan_shard

        writer.close()
        stats = scan_shard(writer.path)  # the written shard's statistics, from its json/txt members (copied bytes)
        words = self._words.pop(url, [])
        self.captions += len(words)
        return {"source": url, "name": self.name, "captioner": self.identity, "stats": stats.to_dict(),
                "skipped": skipped, "skipped_keys": [{"reason": r, "count": n} for r, n in skipped.items()],
                "caption_words": words}

    def _fail(self, url: str, error: str) -> None:
        self._words.pop(url, None)
        super()._fail(url, error)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
        super().on_predict_end(trainer, pl_module)

    def created_by(self, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from videogen.data.manifest import provenance

        captions = dict((self.source.created_by.get("captions") or {}) if self.source else {})
        captions[self.name] = self.identity
        words = [n for r in records.values() for n in r.get("caption_words", ())]
        return {**provenance("recaption", self.args), "captions": captions, "caption_words": length_summary(words),
                "source": self.source.created_by if self.source else None}


def length_summary(words: list[int]) -> dict[str, float]:
    if not words:
        return {"count": 0}
    ordered = sorted(words)
    return {"count": len(words), "min": ordered[0], "mean": round(statistics.fmean(words), 2),
            "median": statistics.median(words), "p90": ordered[int(0.9 * (len(words) - 1))], "max": ordered[-1]}
