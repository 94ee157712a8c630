"""Shape buckets: where each clip goes, and how many clips make a batch.

A bucket is ``(num_frames, height, width)`` plus an optional batch size. A clip goes to the bucket
whose aspect ratio is closest to its own (compared in log space), then the longest bucket its
duration can fill, then the one whose area is closest to its own; it is resized to cover the bucket
keeping its aspect and cropped (center for validation, random for training). A clip too short for
every bucket is skipped as ``too_short``.

Batch size per bucket: the bucket's own ``batch_size`` if set, else ``token_budget // tokens``
(tokens = the number of ``token_shape`` voxels in the clip: the VAE compression times the DiT patch
size; unset, a DiT stage's own), else the default ``batch_size``.

In **packing** mode (``packing=True``) a clip is not forced into a bucket: it keeps its native aspect
and duration, scaled down to at most ``max_area`` pixels with sides multiples of ``size_multiple``
and frames of the form ``1 + k * frame_multiple``; batches are filled greedily up to
``token_budget`` tokens (``stages.batch``), for NaViT-style sequence packing downstream.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bucket:
    """One target shape. ``batch_size=None`` means: from the token budget, or the default."""

    num_frames: int
    height: int
    width: int
    batch_size: int | None = None

    def __post_init__(self):
        if self.num_frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError(f"bucket {self}: frames, height and width must be >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"bucket {self}: batch_size must be >= 1 (or unset)")

    @property
    def name(self) -> str:
        return f"{self.num_frames}x{self.height}x{self.width}"


@dataclass(frozen=True)
class Target:
    """Where one clip goes: the output shape, its batching key and which native frames to read."""

    num_frames: int
    height: int
    width: int
    key: str


def tokens(num_frames: int, height: int, width: int, token_shape: tuple[int, int, int]) -> int:
    pt, ph, pw = token_shape
    return math.ceil(num_frames / pt) * math.ceil(height / ph) * math.ceil(width / pw)


@dataclass(frozen=True)
class Bucketer:
    """The shape table and how many clips make a batch: ``data.init_args.bucketer`` of a config.

    Args:
        buckets: the shape table (frames, height, width, optional batch_size).
        batch_size: batch size for buckets without their own and no token budget.
        token_budget: tokens per batch; sets per-bucket batch sizes (and the pack size when packing).
        token_shape: pixel voxels per token, (frames, height, width): VAE compression x DiT patch.
            Left unset, a DiT stage sets it at setup from its ``latent_grid``
            (``videogen/callbacks/config_check.py``); a typed value that disagrees with the stage is refused.
        packing: emit variable-size clips packed up to ``token_budget`` instead of buckets.
        max_area, max_frames, size_multiple, frame_multiple: clip sizes in packing mode.
    """

    buckets: list[Bucket] = field(default_factory=list)
    batch_size: int = 1
    token_budget: int | None = None
    token_shape: tuple[int, int, int] | None = None
    packing: bool = False
    max_area: int = 256 * 256
    max_frames: int = 33
    size_multiple: int = 16
    frame_multiple: int = 4

    def __post_init__(self):
        if not self.packing and not self.buckets:
            raise ValueError("give a bucket table (data.init_args.bucketer.buckets) or set packing: true")
        if self.packing and not self.token_budget:
            raise ValueError("packing needs a token_budget (tokens per packed batch)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "buckets", list(self.buckets))
        if self.token_shape is None:  # the budget is checked once the shape is known (see token_shape above)
            return
        object.__setattr__(self, "token_shape", tuple(self.token_shape))
        if self.packing and tokens(self.max_frames, *self._fit_area(1, 1), self.token_shape) > self.token_budget:
            raise ValueError(f"token_budget {self.token_budget} is smaller than one clip of max_area {self.max_area} "
                             f"and max_frames {self.max_frames}: raise it or lower those")
        for b in self.buckets:
            if self.batch_size_of(b) < 1:
                raise ValueError(f"bucket {b.name} holds {self.tokens(b.num_frames, b.height, b.width)} tokens, "
                                 f"more than token_budget {self.token_budget}: raise the budget or drop it")

    def tokens(self, num_frames: int, height: int, width: int) -> int:
        """Tokens of a clip (:func:`tokens` at this bucketer's token shape)."""
        if self.token_shape is None:
            raise ValueError("data.init_args.bucketer.token_budget needs the token shape (VAE compression x DiT "
                             "patch): a DiT stage sets it at setup; without one give data.init_args.bucketer."
                             "token_shape, e.g. [4, 16, 16]")
        return tokens(num_frames, height, width, self.token_shape)

    def largest_area(self) -> int:
        """Pixels of the largest frame a clip is cut to (the image pixel limit is set from it)."""
        return self.max_area if self.packing else max(b.height * b.width for b in self.buckets)

    def batch_size_of(self, bucket: Bucket) -> int:
        if bucket.batch_size is not None:
            return bucket.batch_size
        if self.token_budget is not None:
            return self.token_budget // self.tokens(bucket.num_frames, bucket.height, bucket.width)
        return self.batch_size

    def target(self, width: int, height: int, available_frames: int) -> Target | None:
        """The shape a clip of ``width x height`` with ``available_frames`` (after stride) goes to."""
        if width < 1 or height < 1 or available_frames < 1:
            return None
        if self.packing:
            return self._packed_target(width, height, available_frames)
        fitting = [b for b in self.buckets if b.num_frames <= available_frames]
        if not fitting:
            return None
        aspect, area = math.log(width / height), width * height

        def rank(b: Bucket):
            return (round(abs(math.log(b.width / b.height) - aspect), 2), -b.num_frames,
                    abs(math.log(b.width * b.height / area)))

        b = min(fitting, key=rank)
        return Target(b.num_frames, b.height, b.width, key=b.name)

    def place(self, width: int, height: int, num_frames: int, fps: float = 0.0, frame_stride: int = 1,
              target_fps: float | None = None) -> Target | None:
        """The shape a clip goes to when read at its stride (:func:`frame_stride_for`), or None when no
        bucket fits it: the one placement rule of the stream's plan, epoch sizing and ``inspect --buckets``."""
        return self.target(width, height, available_frames(num_frames, frame_stride_for(fps, frame_stride, target_fps)))

    def placed(self, shapes: dict[tuple[int, int, int, float], int], frame_stride: int,
               target_fps: float | None) -> Counter:
        """Samples per target key of a shape histogram (``(w, h, frames, fps) -> count``); ``too_short``
        counts those no bucket fits."""
        out: Counter = Counter()
        for (w, h, frames, fps), count in shapes.items():
            t = self.place(w, h, frames, fps, frame_stride, target_fps)
            out[t.key if t else "too_short"] += count
        return out

    def _fit_area(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the native aspect scaled to at most max_area, sides multiples of size_multiple."""
        m = self.size_multiple
        scale = min(1.0, math.sqrt(self.max_area / (width * height)))
        h = max(m, int(height * scale) // m * m)
        w = max(m, int(width * scale) // m * m)
        return h, w

    def _packed_target(self, width: int, height: int, available_frames: int) -> Target:
        h, w = self._fit_area(width, height)
        f = min(available_frames, self.max_frames)
        f = 1 + (f - 1) // self.frame_multiple * self.frame_multiple
        return Target(f, h, w, key="packed")

    def batch_tokens(self, t: Target) -> int:
        return self.tokens(t.num_frames, t.height, t.width)

    def expected_batches(self, shapes: dict[tuple[int, int, int, float], int], frame_stride: int,
                         target_fps: float | None, world_size: int) -> int:
        """Batches one rank can fill per epoch, from a manifest's shape histogram (see manifest.py)."""
        per_key: dict[str, float] = {}
        sizes: dict[str, int] = {}
        total_tokens = 0.0
        for (w, h, frames, fps), count in shapes.items():
            t = self.place(w, h, frames, fps, frame_stride, target_fps)
            if t is None:
                continue
            share = count / world_size
            if self.packing:
                total_tokens += share * self.batch_tokens(t)
            else:
                per_key[t.key] = per_key.get(t.key, 0.0) + share
                sizes[t.key] = self.batch_size_of(next(b for b in self.buckets if b.name == t.key))
        if self.packing:
            return int(total_tokens // self.token_budget)
        return int(sum(n // sizes[k] for k, n in per_key.items()))


def frame_stride_for(fps: float, frame_stride: int, target_fps: float | None) -> int:
    """Frame step: ``round(fps / target_fps)`` when a target fps is set (and the fps known), else the fixed stride."""
    if target_fps and fps > 0:
        return max(1, round(fps / target_fps))
    return frame_stride


def available_frames(num_frames: int, stride: int) -> int:
    """How many frames a clip of ``num_frames`` gives at this stride."""
    return 0 if num_frames < 1 else (num_frames - 1) // stride + 1
