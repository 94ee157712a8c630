"""``VideoDataModule``: WebDataset shards of variable-size clips, streamed into shape buckets.

Configured in YAML under ``data:`` (see ``configs/data/quickstart.yaml`` and README):

.. code-block:: yaml

    data:
      class_path: videogen.data.VideoDataModule
      init_args:
        train_shards: data/synthetic/train
        val_shards: data/synthetic/val
        buckets:
          - {num_frames: 9, height: 64, width: 112}
          - {num_frames: 9, height: 64, width: 64, batch_size: 8}
        batch_size: 4

Batches are dicts: ``video`` float in [-1, 1], ``(B, 3, T, H, W)`` (a list of ``(3, T, H, W)`` in
packing mode), ``caption`` (list of str), ``key``, ``meta`` (each sample's json), ``fps`` and
``bucket``. Videos travel from workers as uint8 and become float on the device. From a latent cache
(`videogen encode`) ``latent`` replaces ``video``, and a cache written with ``--text-encoder`` adds
``text``: per sample, ``{caption name: float16 (n, D)}`` (see ``videogen/data/text_embeddings.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, replace
from typing import Any, Callable, TypeVar

import torch
from lightning.pytorch import LightningDataModule

from videogen.data.buckets import Bucket, Bucketer
from videogen.data.loader import StatefulLoader, StreamOptions, VideoStream
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
        buckets: list[Bucket] | None = None,
        batch_size: int = 1,
        token_budget: int | None = None,
        token_shape: tuple[int, int, int] = (4, 16, 16),
        packing: bool = False,
        max_area: int = 256 * 256,
        max_frames: int = 33,
        size_multiple: int = 16,
        frame_multiple: int = 4,
        frame_stride: int = 1,
        target_fps: float | None = None,
        span_clip: bool = False,
        num_workers: int = 2,
        shuffle_buffer: int = 64,
        seed: int = 0,
        decoder: str = "auto",
        decode_timeout: float | None = 30.0,
        require_caption: bool = True,
        max_member_mb: float = 512.0,
        max_sample_mb: float = 1024.0,
        compressed_shards: bool = False,
        max_image_pixels: int | None = None,
        manifest: str | None = None,
        val_batches: int | None = None,
        pin_memory: bool = False,
        filter: str | None = None,
    ):
        """
        Args:
            train_shards: folder, glob, brace pattern, URL, or a list of those.
            val_shards: the same for validation (no shuffling, center crops, same batches every time).
            buckets: the shape table (frames, height, width, optional batch_size); see buckets.py.
            batch_size: batch size for buckets without their own and no token budget.
            token_budget: tokens per batch; sets per-bucket batch sizes (and the pack size when packing).
            token_shape: pixel voxels per token, (frames, height, width): VAE compression x DiT patch.
            packing: emit variable-size clips packed up to ``token_budget`` instead of buckets.
            max_area, max_frames, size_multiple, frame_multiple: clip sizes in packing mode.
            frame_stride: take every n-th frame; ``target_fps`` overrides it per clip.
            span_clip: widen each clip's stride to the largest that fits its bucket's frames, so a
                sample spans (nearly) the whole clip instead of a window at the native frame rate.
            num_workers: dataloader worker processes per rank.
            shuffle_buffer: samples held for shuffling (training only).
            seed: the stream's seed (shard order, shuffling, clip starts, crops).
            decoder: ``auto`` (decord, PyAV fallback), ``decord`` or ``pyav``.
            decode_timeout: seconds one sample may take to decode before it is skipped.
            require_caption: skip samples without a ``txt`` caption.
            max_member_mb: members larger than this are skipped without being read.
            max_sample_mb: a sample whose members add up to more than this is skipped, the members
                past the budget unread (``sample_too_large``).
            compressed_shards: also read gzip/bzip2/xz-compressed tars (inflated bytes count against
                the budgets); by default a compressed stream is refused (``compressed_shard``).
            max_image_pixels: images over this many pixels are refused undecoded (default: 64x the
                largest bucket's area, at least 64 Mi pixels).
            manifest: where the shards' ``dataset.json`` is (a path, URL or ``pipe:`` command);
                needed for ``pipe:`` shards, else found beside the shards.
            val_batches: validation batches per rank (default: what the val shards fill).
            filter: keep only samples whose json scores satisfy this expression, e.g.
                ``motion > 0.001 and not duplicate`` (see docs/curation.md); the others are skipped
                and counted (``filtered_out``), and epochs are sized by the samples that pass.
        """
        super().__init__()
        buckets = [b if isinstance(b, Bucket) else Bucket(**b) for b in buckets or []]
        self.save_hyperparameters(ignore=["buckets"])
        self.hparams["buckets"] = [asdict(b) for b in buckets]  # plain types: checkpoints load with weights_only
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.train_shards, self.val_shards, self.manifest = train_shards, val_shards, manifest
        self.bucketer = Bucketer(buckets, batch_size=batch_size, token_budget=token_budget, token_shape=token_shape,
                                 packing=packing, max_area=max_area, max_frames=max_frames,
                                 size_multiple=size_multiple, frame_multiple=frame_multiple)
        self.options = StreamOptions(frame_stride=frame_stride, target_fps=target_fps, span_clip=span_clip,
                                     require_caption=require_caption, max_member_bytes=int(max_member_mb * 2**20),
                                     max_sample_bytes=int(max_sample_mb * 2**20), compressed_shards=compressed_shards,
                                     max_image_pixels=max_image_pixels,
                                     decode_timeout=decode_timeout, decoder=decoder)
        self.score_filter = ScoreFilter(filter) if filter else None  # parsed once: syntax now, names once
        # the shards are listed (check_names), then handed to the stream as it is
        self.num_workers, self.shuffle_buffer, self.seed = num_workers, shuffle_buffer, seed
        self.val_batches, self.pin_memory = val_batches, pin_memory
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
        limits = self.options.tar_limits
        shapes, count = (shard_shapes(urls, self.manifest, limits) if self.score_filter is None
                         else filtered_shard_shapes(urls, self.score_filter, self.manifest, limits))
        n = self.bucketer.expected_batches(shapes, self.options.frame_stride, self.options.target_fps, world_size)
        if n < 1:
            placed = self.bucketer.placed(shapes, self.options.frame_stride, self.options.target_fps)
            raise ValueError(
                f"{name}: {count} samples over {world_size} rank(s) fill 0 batches. Samples per bucket: "
                f"{dict(placed)}; batch sizes: { {b.name: self.bucketer.batch_size_of(b) for b in self.bucketer.buckets} }. "
                "Lower the batch sizes (data.batch_size / token_budget), add buckets that fit the data "
                "(see `videogen inspect`), or add data.")
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
        options = replace(self.options, text_spec=spec, filter=self.score_filter)
        stream = VideoStream(urls, self.bucketer, n, options=options, rank=rank, world_size=world,
                             seed=self.seed, shuffle_buffer=self.shuffle_buffer if train else 0, train=train)
        workers = min(self.num_workers, n) if not train else self.num_workers
        loader = StatefulLoader(stream, num_workers=workers, resumable=train, pin_memory=self.pin_memory,
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
            self._loaders["val"] = self._make("val", self.val_shards, train=False, batches=self.val_batches)
        return self._loaders["val"]

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """uint8 -> float in [-1, 1], on the device."""
        return to_float(batch)
