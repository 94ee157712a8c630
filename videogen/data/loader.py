"""The stateful stream: an IterableDataset of planned-then-decoded batches and a DataLoader that
can save and restore its position mid-epoch.

Equal epochs on every rank: each rank yields exactly ``batches_per_rank`` batches per epoch
(computed from the manifests' sample counts). A rank whose shards run dry wraps around to the
start of its shards (a new pass, reshuffled), so no rank ever waits on another at the end of an
epoch, whatever the shard counts.

Exact resume: every batch carries which worker planned it and that worker's plan position. The
loader records, per worker, how many batches it delivered and the plan position reached. A
resumed loader gives each worker its position back (replaying the plan without decoding up to
it) and rotates the workers' roles so DataLoader's round-robin continues with the worker whose
turn was next: the batches after a resume are exactly those an uninterrupted run would have seen.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from videogen.data import stages
from videogen.data.buckets import Bucketer
from videogen.data.decode import make_decoder, pixel_limit
from videogen.data.score_filter import ScoreFilter
from videogen.data.shards import split_shards, take_share
from videogen.data.tar_reader import TarLimits
from videogen.data.text_embeddings import TextSpec

log = logging.getLogger("videogen.data")

# planned batches in a row whose every sample fails to decode before a worker gives up
MAX_FAILED_BATCHES = 50


@dataclass(frozen=True)
class StreamOptions:
    """How each sample becomes a clip (the training and validation streams alike): ``data.init_args.clips``.

    Args:
        frame_stride: take every n-th frame; ``target_fps`` overrides it per clip.
        span_clip: widen each clip's stride to the largest that fits its bucket's frames, so a
            sample spans (nearly) the whole clip instead of a window at the native frame rate.
        require_caption: skip samples without a ``txt`` caption.
        max_member_mb: members larger than this are skipped without being read.
        max_sample_mb: a sample whose members add up to more than this is skipped, the members
            past the budget unread (``sample_too_large``).
        compressed_shards: also read gzip/bzip2/xz-compressed tars (inflated bytes count against
            the budgets); by default a compressed stream is refused (``compressed_shard``).
        max_image_pixels: images over this many pixels are refused undecoded (default: 64x the
            largest bucket's area, at least 64 Mi pixels).
        decode_timeout: seconds one sample may take to decode before it is skipped.
        decoder: ``auto`` (decord, PyAV fallback), ``decord`` or ``pyav``.
    """

    frame_stride: int = 1
    target_fps: float | None = None
    span_clip: bool = False
    require_caption: bool = True
    max_member_mb: float = 512.0
    max_sample_mb: float = 1024.0
    compressed_shards: bool = False
    max_image_pixels: int | None = None
    decode_timeout: float | None = 30.0
    decoder: str = "auto"

    @property
    def tar_limits(self) -> TarLimits:
        return TarLimits(member_bytes=int(self.max_member_mb * 2**20),
                         sample_bytes=max(int(self.max_sample_mb * 2**20), 1), compressed=self.compressed_shards)

    def image_pixels(self, bucketer: Bucketer) -> int:
        return self.max_image_pixels or pixel_limit(bucketer.largest_area())


@dataclass(frozen=True)
class LoaderOptions:
    """How the batches are loaded: ``data.init_args.loader``.

    Args:
        num_workers: dataloader worker processes per rank.
        shuffle_buffer: samples held for shuffling (training only).
        seed: the stream's seed (shard order, shuffling, clip starts, crops).
        pin_memory: the loader's ``pin_memory``.
        val_batches: validation batches per rank (default: what the val shards fill).
    """

    num_workers: int = 2
    shuffle_buffer: int = 64
    seed: int = 0
    pin_memory: bool = False
    val_batches: int | None = None

    def __post_init__(self):
        if self.num_workers < 0:
            raise ValueError(f"data.init_args.loader.num_workers must be >= 0, got {self.num_workers}")


class VideoStream(IterableDataset):
    """One rank's epoch of batches; ``len()`` is the number of batches per epoch on this rank."""

    def __init__(self, urls: list[str], bucketer: Bucketer, batches_per_rank: int, *, options: StreamOptions,
                 rank: int = 0, world_size: int = 1, seed: int = 0, shuffle_buffer: int = 0, train: bool = True,
                 score_filter: ScoreFilter | None = None, text_spec: TextSpec | None = None):
        """``score_filter``: keep the samples whose scores pass (parsed and checked once, by the datamodule);
        ``text_spec``: a latent cache's caption embeddings, read and checked."""
        if batches_per_rank < 1:
            raise ValueError("batches_per_rank must be >= 1")
        self.urls, self.bucketer, self.batches_per_rank = list(urls), bucketer, batches_per_rank
        self.options, self.rank, self.world_size = options, rank, world_size
        self.score_filter, self.text_spec = score_filter, text_spec
        self.seed, self.shuffle_buffer, self.train = seed, shuffle_buffer, train
        # set by the loader before each iteration (workers receive a copy)
        self.epoch = 0
        self.num_workers = 1
        self.rotation = 0
        self.progress: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return self.batches_per_rank

    def worker_quota(self, virtual_worker: int) -> int:
        """Batches a worker yields per epoch: batch i of the rank comes from worker i % num_workers."""
        return len(range(virtual_worker, self.batches_per_rank, self.num_workers))

    def _records(self, virtual_worker: int, rng: random.Random, skips: stages.Skips) -> Iterator[stages.Record]:
        urls = list(self.urls)
        if self.train:  # all ranks agree on the epoch's shard order
            random.Random(f"{self.seed}-shards-{self.epoch}").shuffle(urls)
        split = split_shards(urls, self.rank, self.world_size, virtual_worker, self.num_workers)
        decoder = make_decoder(self.options.decoder)
        for p in itertools.count():
            pass_urls = list(split.urls)
            if p > 0 and self.train:
                rng.shuffle(pass_urls)
            members = stages.read_tar(pass_urls, skips, self.options.tar_limits)
            samples = take_share(stages.group_samples(members), split)
            records = stages.parse(samples, skips, decoder, self.options.require_caption,
                                   self.options.image_pixels(self.bucketer), self.text_spec)
            records = stages.select(records, self.score_filter, skips)
            if self.train:  # shuffled within a pass, so a wrap-around never overtakes the pass before it
                records = stages.shuffle(records, self.shuffle_buffer, rng)
            n = 0
            for record in records:
                n += 1
                yield record
            if n == 0:
                raise RuntimeError(
                    f"rank {self.rank} worker {virtual_worker}: no usable sample in its shards "
                    f"({', '.join(split.urls[:3])}{' ...' if len(split.urls) > 3 else ''}); "
                    f"skipped so far: {dict(skips.counts)}. Check the shards with `videogen inspect`.")

    def plans(self, virtual_worker: int, skips: stages.Skips) -> Iterator[list[stages.Planned]]:
        """The worker's endless sequence of planned batches for this epoch (nothing decoded)."""
        rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{virtual_worker}")
        records = self._records(virtual_worker, rng, skips)
        planned = stages.plan(records, self.bucketer, skips, rng, frame_stride=self.options.frame_stride,
                              target_fps=self.options.target_fps, random_clip=self.train,
                              span_clip=self.options.span_clip)
        return stages.batch(planned, self.bucketer)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if (info.num_workers if info is not None else 1) != self.num_workers:
            raise RuntimeError("VideoStream must be iterated through its StatefulLoader")
        v = (worker + self.rotation) % self.num_workers  # the role this worker plays (see module doc)
        yielded, plan_pos = self.progress.get(v, (0, 0))
        remaining = self.worker_quota(v) - yielded
        if remaining <= 0:
            return
        skips = stages.Skips()
        plans = self.plans(v, skips)
        for _ in range(plan_pos):  # replay up to the saved position without decoding
            next(plans)
        skips.take_delta()  # skips seen while replaying were counted before the interruption
        decode = stages.TimedDecoder(make_decoder(self.options.decoder), self.options.decode_timeout,
                                     self.options.image_pixels(self.bucketer))
        failed_in_a_row = 0
        while remaining > 0:
            planned = next(plans)
            plan_pos += 1
            items = stages.decode_batch(planned, decode, skips)
            if not items:
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_FAILED_BATCHES:
                    raise RuntimeError(
                        f"rank {self.rank} worker {v}: no sample of the last {failed_in_a_row} planned batches "
                        f"could be decoded (skips: {dict(skips.counts)}); the shards look unusable. "
                        "Check them with `videogen inspect`, or raise data.init_args.clips.decode_timeout.")
                continue
            failed_in_a_row = 0
            out = stages.collate(items, self.bucketer.packing)
            out.update(_worker=v, _plan_pos=plan_pos, _skips=skips.take_delta())
            remaining -= 1
            yield out


class ShardPassStream(IterableDataset):
    """Every sample once, shard by shard, in order: the input of `videogen encode` (recaption reads whole
    samples, members and all, with :class:`videogen.pipelines.recaption.CaptionStream`).

    Shards are split over ranks and workers by :func:`split_shards` (whole shards only, so each
    output shard is written by one process). Batches never span shards; after a shard's last batch
    comes a marker ``{"shard_done": url, "skipped": {...}}`` (also for a shard with no usable sample),
    so a writer knows the shard is complete. Clips are centred, nothing is shuffled or repeated, and
    samples that fail to decode are skipped (counted in the marker), never duplicated.
    """

    def __init__(self, urls: list[str], bucketer: Bucketer, *, options: StreamOptions, rank: int = 0,
                 world_size: int = 1):
        self.urls, self.bucketer, self.options = list(urls), bucketer, options
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = split_shards(self.urls, self.rank, self.world_size, worker, workers, whole=True).urls
        decoder = make_decoder(self.options.decoder)
        pixels = self.options.image_pixels(self.bucketer)
        decode = stages.TimedDecoder(decoder, self.options.decode_timeout, pixels)
        for url in mine:  # whole shards, never a share of one
            skips = stages.Skips()
            samples = stages.group_samples(stages.read_tar([url], skips, self.options.tar_limits))
            records = stages.parse(samples, skips, decoder, self.options.require_caption, pixels)
            planned = stages.plan(records, self.bucketer, skips, random.Random(0),
                                  frame_stride=self.options.frame_stride, target_fps=self.options.target_fps,
                                  random_clip=False, span_clip=self.options.span_clip)
            for planned_batch in stages.batch(planned, self.bucketer, flush=True):
                items = stages.decode_batch(planned_batch, decode, skips, fill=False)
                if items:
                    yield stages.collate(items, self.bucketer.packing)
            yield {"shard_done": url, "skipped": dict(skips.counts)}


def _worker_signals(worker_id: int) -> None:
    """Workers leave SLURM's signals to the main process: a worker that inherited Lightning's SIGUSR1
    handler would save a stale checkpoint and requeue the job on its own."""
    import signal

    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class StatefulLoader(DataLoader):
    """A DataLoader over a :class:`VideoStream` with ``state_dict``/``load_state_dict``.

    Lightning saves and restores the state of the training loader in its checkpoints. A
    ``resumable=False`` loader (validation) starts every iteration from the beginning of epoch 0.
    """

    def __init__(self, dataset: VideoStream, num_workers: int = 0, resumable: bool = True, **kwargs):
        kwargs.setdefault("persistent_workers", False)
        kwargs.setdefault("worker_init_fn", _worker_signals)
        super().__init__(dataset, batch_size=None, num_workers=num_workers, **kwargs)
        self.resumable = resumable
        self.skipped: Counter = Counter()
        self._state = self._epoch_start(0)

    def _epoch_start(self, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "delivered": 0, "progress": {}, "skipped": {}}

    @property
    def epoch(self) -> int:
        return self._state["epoch"]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stream: VideoStream = self.dataset
        state = self._state if self.resumable else self._epoch_start(0)
        workers = max(1, self.num_workers)
        progress = {int(v): tuple(p) for v, p in state["progress"].items()}
        delivered = state["delivered"]
        if delivered >= len(stream):  # the saved position is the end of an epoch: start the next one
            state = self._epoch_start(state["epoch"] + 1)
            progress, delivered = {}, 0
        stream.epoch, stream.num_workers = state["epoch"], workers
        stream.rotation, stream.progress = delivered % workers, progress
        skipped = Counter(state["skipped"])
        self.skipped = skipped
        for batch in super().__iter__():
            v = batch.pop("_worker")
            progress[v] = (progress.get(v, (0, 0))[0] + 1, batch.pop("_plan_pos"))
            skipped.update(batch.pop("_skips"))
            delivered += 1
            if self.resumable:
                self._state = {"epoch": state["epoch"], "delivered": delivered, "progress": dict(progress),
                               "skipped": dict(skipped)}
            yield batch
        if skipped:
            log.warning("epoch %d: skipped %d samples (%s)", state["epoch"], sum(skipped.values()),
                        ", ".join(f"{k}={n}" for k, n in sorted(skipped.items())))

    def state_dict(self) -> dict[str, Any]:
        stream: VideoStream = self.dataset
        return {**self._state, "progress": {str(v): list(p) for v, p in self._state["progress"].items()},
                "num_workers": max(1, self.num_workers), "rank": stream.rank, "world_size": stream.world_size,
                "batches_per_rank": len(stream)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stream: VideoStream = self.dataset
        checks = {"num_workers": max(1, self.num_workers), "world_size": stream.world_size,
                  "batches_per_rank": len(stream)}
        for key, now in checks.items():
            if state.get(key) != now:
                raise ValueError(
                    f"cannot resume the data stream exactly: the checkpoint was saved with {key}={state.get(key)}, "
                    f"this run has {key}={now}. Resume with the same data settings and number of devices "
                    f"(data.init_args.loader.num_workers, trainer.devices/num_nodes, the same shards).")
        self._state = {k: state[k] for k in ("epoch", "delivered", "progress", "skipped")}
