"""``VideoDataModule``: WebDataset shards of variable-size clips, streamed into shape buckets.

Configured in YAML under ``data:`` (see ``configs/data/quickstart.yaml`` and docs/data.md) from three
injected values: the shape table and batch sizes (``bucketer``, a :class:`~videogen.data.buckets.Bucketer`),
how each sample becomes a clip (``clips``, a :class:`~videogen.data.loader.StreamOptions`) and how batches
are loaded (``loader``, a :class:`~videogen.data.loader.LoaderOptions`); each is a dataclass, written as
a plain mapping:

.. code-block:: yaml

    data:
      class_path: videogen.data.VideoDataModule
      init_args:
        train_shards: data/synthetic/train
        val_shards: data/synthetic/val
        bucketer:
          buckets:
            - {num_frames: 9, height: 64, width: 112}
            - {num_frames: 9, height: 64, width: 64, batch_size: 8}
          batch_size: 4
        clips: {frame_stride: 2}
        loader: {num_workers: 2, val_batches: 4}

A token budget's ``bucketer.token_shape`` (VAE compression x DiT patch) is not typed: a DiT stage sets
it at setup, and refuses a typed one that disagrees (``videogen/callbacks/config_check.py``).

Batches are dicts: ``video`` float in [-1, 1], ``(B, 3, T, H, W)`` (a list of ``(3, T, H, W)`` in
packing mode), ``caption`` (list of str), ``key``, ``meta`` (each sample's json), ``fps`` and
``bucket``. Videos travel from workers as uint8 and become float on the device. From a latent cache
(`videogen encode`) ``latent`` replaces ``video``, and a cache written with ``--text-encoder`` adds
``text``: per sample, ``{caption name: float16 (n, D)}`` (see ``videogen/data/text_embeddings.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any, Callable, TypeVar

import torch
from lightning.pytorch import LightningDataModule

from videogen.data.buckets import Bucketer
from videogen.data.loader import LoaderOptions, StatefulLoader, StreamOptions, VideoStream
from videogen.data.manifest import ManifestError, manifests_of
from videogen.data.score_filter import ScoreFilter
from videogen.data.shards import expand_urls
from videogen.data.sizing import check_names, filtered_shard_shapes, shard_shapes
from videogen.data.stages import to_float
from videogen.data.text_embeddings import text_spec

log = logging.getLogger("videogen.data")
T = TypeVar("T")


def decided_on_rank_zero(decide: Callable[[], T]) -> T:
    """``decide()`` run on global rank 0 only, its result sent to every process of the job (a
    collective: call it on all; without a process group it is just ``decide()``).

    Rank 0's error is raised on every rank with the same words, so a shard set that cannot be sized
    stops the whole job at setup instead of one rank while the others wait for it. The ranks of a
    sequence-parallel group share a data-parallel rank, so the decision cannot depend on it: it is
    taken once for the whole job."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return decide()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = decide()
        except Exception as e:  # noqa: BLE001 - sent to the other ranks, then raised here as it is
            error = e
    box = [(result, None if error is None else (type(error), str(error)))]
    dist.broadcast_object_list(box, src=0)
    result, failure = box[0]
    if error is not None:
        raise error
    if failure is not None:
        kind, message = failure
        try:
            exception = kind(message)
        except Exception:  # noqa: BLE001 - an exception type that needs other arguments
            exception = RuntimeError(message)
        raise exception from None
    return result


class VideoDataModule(LightningDataModule):
    def __init__(
        self,
        train_shards: str | list[str],
        val_shards: str | list[str] | None = None,
        *,
        bucketer: Bucketer,
        clips: StreamOptions = StreamOptions(),
        loader: LoaderOptions = LoaderOptions(),
        manifest: str | None = None,
        filter: str | None = None,
    ):
        """
        Args:
            train_shards: folder, glob, brace pattern, URL, or a list of those.
            val_shards: the same for validation (no shuffling, center crops, same batches every time).
            bucketer: the shape table and batch sizes (see buckets.py).
            clips: how each sample becomes a clip: frame stride, decoder, size limits (see loader.py).
            loader: workers, shuffling, seed, validation batches (see loader.py).
            manifest: where the shards' ``dataset.json`` is (a path, URL or ``pipe:`` command);
                needed for ``pipe:`` shards, else found beside the shards.
            filter: keep only samples whose json scores satisfy this expression, e.g.
                ``motion > 0.001 and not duplicate`` (see docs/curation.md); the others are skipped
                and counted (``filtered_out``), and epochs are sized by the samples that pass.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["bucketer", "clips", "loader"])
        # plain types: checkpoints load with weights_only
        self.hparams.update(bucketer=asdict(bucketer), clips=asdict(clips), loader=asdict(loader))
        self.train_shards, self.val_shards, self.manifest = train_shards, val_shards, manifest
        self.bucketer, self.clips, self.loader = bucketer, clips, loader
        self.score_filter = ScoreFilter(filter) if filter else None  # parsed once: syntax now, names once
        self._loaders: dict[str, StatefulLoader] = {}

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:  # the data-parallel rank and world: under sequence parallelism
            kw = trainer.distributed_sampler_kwargs  # (videogen.parallel) a sequence group shares batches
            return (kw["rank"], kw["num_replicas"]) if kw else (0, 1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def batches_per_rank(self, urls: list[str], world_size: int, name: str) -> int:
        limits = self.clips.tar_limits
        shapes, count = (shard_shapes(urls, self.manifest, limits) if self.score_filter is None
                         else filtered_shard_shapes(urls, self.score_filter, self.manifest, limits))
        n = self.bucketer.expected_batches(shapes, self.clips.frame_stride, self.clips.target_fps, world_size)
        if n < 1:
            placed = self.bucketer.placed(shapes, self.clips.frame_stride, self.clips.target_fps)
            sizes = {b.name: self.bucketer.batch_size_of(b) for b in self.bucketer.buckets}
            raise ValueError(
                f"{name}: {count} samples over {world_size} rank(s) fill 0 batches. Samples per bucket: "
                f"{dict(placed)}; batch sizes: {sizes}. Lower the batch sizes (data.init_args.bucketer.batch_size "
                "/ token_budget), add buckets that fit the data (see `videogen inspect`), or add data.")
        return n

    def _decide(self, shards: str | list[str], world: int, name: str, batches: int | None):
        """The shard list, the filter checked against it, the batches per rank and the caption embeddings'
        spec of a latent cache that has them (its dataset.json): rank 0's work."""
        urls = expand_urls(shards)
        score_filter = check_names(self.score_filter, urls, self.manifest) if self.score_filter is not None else None
        if score_filter is not None:
            self.score_filter = score_filter  # batches_per_rank filters with it
        n = batches or self.batches_per_rank(urls, world, name)
        try:
            manifests = list({id(m): m for m in manifests_of(urls, self.manifest).values()}.values())
        except ManifestError:  # no manifest to read (pipe: shards sized by val_batches): no embeddings either
            manifests = []
        try:
            spec = text_spec(manifests)
        except ValueError as e:
            raise ValueError(f"{name} shards: {e}") from None
        return urls, score_filter, n, spec

    def _make(self, name: str, shards: str | list[str], train: bool, batches: int | None = None) -> StatefulLoader:
        rank, world = self._rank_world()
        # decided once, on rank 0, and sent to every rank: a shard that appears mid-glob or a read error on
        # one rank must not give the ranks different epoch lengths (they would hang in a collective)
        urls, score_filter, n, spec = decided_on_rank_zero(lambda: self._decide(shards, world, name, batches))
        if score_filter is not None:
            self.score_filter = score_filter
        # the checked filter, and a cache's caption embeddings, come with the batches
        stream = VideoStream(urls, self.bucketer, n, options=self.clips, rank=rank, world_size=world,
                             seed=self.loader.seed, shuffle_buffer=self.loader.shuffle_buffer if train else 0,
                             train=train, score_filter=self.score_filter, text_spec=spec)
        workers = min(self.loader.num_workers, n) if not train else self.loader.num_workers
        loader = StatefulLoader(stream, num_workers=workers, resumable=train, pin_memory=self.loader.pin_memory,
                                multiprocessing_context="spawn" if workers and os.name != "posix" else None)
        log.info("%s: %d shards, %d batches per rank per epoch (rank %d of %d)", name, len(urls), n, rank, world)
        return loader

    def train_dataloader(self) -> StatefulLoader:
        if "train" not in self._loaders:
            self._loaders["train"] = self._make("train", self.train_shards, train=True)
        return self._loaders["train"]

    def val_dataloader(self) -> StatefulLoader | list:
        if self.val_shards is None:
            return []
        if "val" not in self._loaders:
            self._loaders["val"] = self._make("val", self.val_shards, train=False, batches=self.loader.val_batches)
        return self._loaders["val"]

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """uint8 -> float in [-1, 1], on the device."""
        return to_float(batch)
