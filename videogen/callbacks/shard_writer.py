"""``LatentShardWriter``: predictions of a predict run -> latent-cache shards, one per input shard.

Each rank writes the shards it was given (whole input shards, see ``ShardPassStream``), atomically,
under the input shard's name, plus a small record per finished shard in ``OUT/.done/``. Finished
shards are skipped by a rerun (resumable by shard). At the end rank 0 writes ``dataset.json`` from
the records of every shard, with the VAE's identity, so a stale cache is refused downstream.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from videogen.data.manifest import DatasetManifest, ShardStats
from videogen.data.writer import TarShardWriter

log = logging.getLogger("videogen")

DONE = ".done"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def finished_shards(out: str | Path) -> set[str]:
    """Names of the shards a previous run finished (tar and record both present)."""
    out = Path(out)
    return {p.stem for p in (out / DONE).glob("*.json") if (out / p.stem).is_file()}


class LatentShardWriter(BasePredictionWriter):
    def __init__(self, out: str | Path, created_by: dict[str, Any]):
        super().__init__(write_interval="batch")
        self.out, self.created_by = Path(out), created_by
        self._open: dict[str, TarShardWriter] = {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if "shard_done" in prediction:
            self._finish(prediction["shard_done"], prediction["skipped"])
            return
        for i, key in enumerate(prediction["key"]):
            url = prediction["url"][i]
            writer = self._open.get(url)
            if writer is None:
                writer = self._open[url] = TarShardWriter(self.out / Path(url).name)
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
            writer.write(sample)

    def _finish(self, url: str, skipped: dict[str, int]) -> None:
        name = Path(url).name
        writer = self._open.pop(url, None) or TarShardWriter(self.out / name)  # an all-bad shard: empty
        stats = writer.close()
        (self.out / DONE).mkdir(parents=True, exist_ok=True)
        record = {"source": url, "stats": stats.to_dict(), "skipped": skipped}
        (self.out / DONE / f"{name}.json").write_text(json.dumps(record))
        log.info("encoded %s: %d samples%s", name, stats.num_samples, f", skipped {skipped}" if skipped else "")

    def on_predict_end(self, trainer, pl_module) -> None:
        for url in list(self._open):  # a stream that ended without its marker (should not happen)
            self._open.pop(url).abort()
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            write_cache_manifest(self.out, self.created_by)


def write_cache_manifest(out: Path, created_by: dict[str, Any]) -> DatasetManifest:
    records = [json.loads(p.read_text()) for p in sorted((out / DONE).glob("*.json"))]
    skipped = [{"file": r["source"], "reason": reason, "count": n} for r in records for reason, n in r["skipped"].items()]
    manifest = DatasetManifest(shards=[ShardStats.from_dict(r["stats"]) for r in records], created_by=created_by,
                               skipped=skipped)
    manifest.save(out)
    return manifest
