"""The data path as small generator stages, each testable with a list.

    shard URLs -> read_tar -> group_samples -> (take_share) -> parse -> select -> shuffle -> plan -> batch
               -> decode_batch -> collate

Everything up to ``batch`` looks only at tar headers, ``json``/``txt`` members and (when a shard
carries no shape metadata) a container probe; the expensive decode happens last, once a batch is
planned. That split makes resuming cheap and exact: a resumed stream replays the plan without
decoding anything until it reaches the saved position.

Bad input never stops the stream: each is skipped, counted by reason in :class:`Skips` and logged
with its shard and key. Members are never unpickled; members whose extension says they hold
pickled objects make the whole sample be refused.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from videogen.data.buckets import Bucketer, Target, frame_stride_for
from videogen.data.tar_reader import RawSample, TarLimits, group_samples, read_tar  # noqa: F401 (the stages' first two)
from videogen.data.decode import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, MEDIA_EXTENSIONS, DecodeError, MediaDecoder,
                                  decoder_for)
from videogen.data.manifest import meta_problem
from videogen.data.npy import read_npy
from videogen.data.score_filter import MissingScore, ScoreFilter, sample_values
from videogen.data.text_embeddings import TextSpec, read_embeddings
from videogen.models.latent_grid import LatentGrid

log = logging.getLogger("videogen.data")

# Extensions whose usual content is a pickle: such samples are refused, never opened.
UNSAFE_EXTENSIONS = frozenset({"pyd", "pickle", "pkl", "pth", "pt", "ckpt"})
# A latent-cache sample (`videogen encode`): a float16 (C, t, h, w) array, read with allow_pickle=False.
LATENT_EXTENSION = "latent.npy"


class Skips:
    """Counts skipped samples by reason; logs each one with its shard and key (the first
    ``max_logged``); with ``keep`` also keeps every one in ``records`` (for reports)."""

    def __init__(self, max_logged: int = 100, keep: bool = False):
        self.counts: Counter = Counter()
        self._delta: Counter = Counter()
        self.max_logged = max_logged
        self.records: list[dict[str, str]] | None = [] if keep else None

    def add(self, reason: str, url: str, key: str = "", detail: str = "") -> None:
        self.counts[reason] += 1
        self._delta[reason] += 1
        if self.records is not None:
            self.records.append({"shard": url.rsplit("/", 1)[-1], "key": key, "reason": reason, "detail": detail})
        if self.max_logged <= 0:
            return
        total = sum(self.counts.values())
        if total <= self.max_logged:
            log.warning("skipped %s in %s: %s%s", key or "<shard>", url, reason, f" ({detail})" if detail else "")
        elif total == self.max_logged + 1:
            log.warning("more than %d samples skipped; further skips are counted but not logged", self.max_logged)

    def take_delta(self) -> dict[str, int]:
        """The counts added since the last call (shipped to the main process with each batch)."""
        delta, self._delta = dict(self._delta), Counter()
        return delta


# ---------------------------------------------------------------------------------------------
# parsing and planning (no decoding)


@dataclass
class Record:
    key: str
    url: str
    ext: str
    media: bytes
    caption: str
    meta: dict[str, Any]
    width: int
    height: int
    num_frames: int
    fps: float
    # a latent cache's caption embeddings (data/text_embeddings.py); keyword-only, so subclasses may add fields
    text: dict[str, np.ndarray] | None = field(default=None, kw_only=True)


def _meta_shape(meta: dict[str, Any], ext: str) -> tuple[int, int, int, float] | None:
    """The shape the json gives (its numbers already checked by ``meta_problem``), or None when it
    gives none (fields missing, or not integers / numbers: then the media is probed)."""
    w, h = meta.get("width"), meta.get("height")
    if not (isinstance(w, int) and isinstance(h, int)):
        return None
    if ext in IMAGE_EXTENSIONS:
        return w, h, 1, 0.0
    n, fps = meta.get("num_frames"), meta.get("fps")
    if not (isinstance(n, int) and isinstance(fps, (int, float))):
        return None
    return w, h, n, float(fps)


def parse(samples: Iterable[RawSample], skips: Skips, video_decoder: MediaDecoder,
          require_caption: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
          text_spec: TextSpec | None = None) -> Iterator[Record]:
    """Check a raw sample against the shard contract and read its caption, metadata and shape.
    Shape fields in the json must be finite and in range (:func:`~videogen.data.manifest.meta_problem`),
    else the sample is skipped as ``bad_meta``; an image over ``max_pixels`` is refused unread.
    With ``text_spec`` (a latent cache with caption embeddings) a latent sample's embeddings are read
    and checked (``missing_text_embedding``, ``bad_text_embedding``)."""
    for s in samples:
        unsafe = sorted(UNSAFE_EXTENSIONS.intersection(s.members))
        if unsafe:
            skips.add("unsafe_member", s.url, s.key, f"refusing .{unsafe[0]} member (pickled objects are never loaded)")
            continue
        if s.refused:
            reason, ext = s.refused
            limit = "member" if reason == "member_too_large" else "sample"
            skips.add(reason, s.url, s.key, f".{ext} is over the {limit} byte budget (not read)")
            continue
        ext = LATENT_EXTENSION if LATENT_EXTENSION in s.members else next(
            (e for e in MEDIA_EXTENSIONS if e in s.members), None)
        if ext is None:
            skips.add("no_media", s.url, s.key, f"members: {sorted(s.members)}")
            continue
        media = s.members[ext]
        if not media:
            skips.add("empty_media", s.url, s.key, f".{ext} has 0 bytes")
            continue
        if "txt" in s.members:
            try:
                caption = s.members["txt"].decode("utf-8").strip()
            except UnicodeDecodeError:
                skips.add("bad_caption", s.url, s.key, "txt is not UTF-8")
                continue
        else:
            caption = None
        if require_caption and not caption:
            skips.add("missing_caption", s.url, s.key)
            continue
        meta: dict[str, Any] = {}
        if "json" in s.members:
            try:
                meta = json.loads(s.members["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                skips.add("bad_json", s.url, s.key, str(e)[:100])
                continue
            if not isinstance(meta, dict):
                skips.add("bad_json", s.url, s.key, f"json is a {type(meta).__name__}, not an object")
                continue
        problem = meta_problem(meta)
        if problem:  # Infinity, NaN, negative or absurd shape claims: never reach plan or the bucketer
            skips.add("bad_meta", s.url, s.key, problem)
            continue
        shape = _meta_shape(meta, ext)
        if shape is None and ext == LATENT_EXTENSION:
            skips.add("bad_json", s.url, s.key, "a latent sample's json needs the encoded clip's width, height, "
                      "num_frames and fps")
            continue
        if shape is None:  # shards from other tools may carry no shape: read it from the container
            try:
                info = decoder_for(ext, video_decoder, max_pixels).probe(media)
            except DecodeError as e:
                skips.add("decode_error", s.url, s.key, str(e))
                continue
            shape = (info.width, info.height, info.num_frames, info.fps)
            problem = meta_problem(dict(zip(("width", "height", "num_frames", "fps"), shape)))
            if problem:
                skips.add("bad_meta", s.url, s.key, problem.replace("json", "the media says"))
                continue
        text = None
        if text_spec is not None and ext == LATENT_EXTENSION:
            text, reason, detail = read_embeddings(s.members, caption or "", meta, text_spec)
            if text is None:
                skips.add(reason, s.url, s.key, detail)
                continue
        w, h, n, fps = shape
        yield Record(s.key, s.url, ext, media, caption or "", meta, w, h, n, fps, text=text)


def select(records: Iterable[Record], score_filter: ScoreFilter | str | None, skips: Skips) -> Iterator[Record]:
    """The filter stage: records whose json scores satisfy ``score_filter`` (parsed once, by the
    datamodule; a string is parsed here); the others are counted as ``filtered_out``, or
    ``filter_missing_score`` when the json lacks a score the expression names."""
    if not score_filter:
        yield from records
        return
    if isinstance(score_filter, str):
        score_filter = ScoreFilter(score_filter)
    for r in records:
        try:
            ok = score_filter(sample_values(r.meta))
        except MissingScore as e:
            skips.add("filter_missing_score", r.url, r.key,
                      f"json has no {e.args[0]!r} score for filter {score_filter.text!r} (curate the set first)")
            continue
        if not ok:
            skips.add("filtered_out", r.url, r.key, f"{score_filter.text!r} is false")
            continue
        yield r


def shuffle(items: Iterable[Any], bufsize: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle through a buffer of ``bufsize`` items (``bufsize <= 1``: keep the order)."""
    if bufsize <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        i = rng.randrange(len(buf))
        buf[i], item = item, buf[i]
        yield item
    rng.shuffle(buf)
    yield from buf


@dataclass
class Planned:
    """A record with its target shape, the native frames to read and where to crop (fractions)."""

    record: Record
    target: Target
    indices: list[int]
    crop: tuple[float, float]
    stride: int


def plan(records: Iterable[Record], bucketer: Bucketer, skips: Skips, rng: random.Random, *,
         frame_stride: int = 1, target_fps: float | None = None, random_clip: bool = True,
         span_clip: bool = False) -> Iterator[Planned]:
    """Give each record a target and the frames to read (random start and crop when ``random_clip``).

    ``span_clip``: once the bucket is chosen, widen the stride to the largest that still fits the
    bucket's frames into the clip, so a sample covers (nearly) the whole clip, not a window of it."""
    for r in records:
        latent = r.ext == LATENT_EXTENSION  # frames were chosen at encode time: read a causal prefix
        step, fps_goal = (1, None) if latent else (frame_stride, target_fps)
        target = bucketer.place(r.width, r.height, r.num_frames, r.fps, step, fps_goal)
        stride = 1 if r.num_frames == 1 else frame_stride_for(r.fps, step, fps_goal)
        if target is None:
            skips.add("too_short", r.url, r.key, f"{r.num_frames} frames at stride {stride} fit no bucket")
            continue
        if latent:
            if target.height > r.height or target.width > r.width:
                skips.add("latent_too_small", r.url, r.key, f"encoded at {r.width}x{r.height}, bucket {target.key} "
                          "needs more; encode with the training buckets (videogen encode --buckets-from)")
                continue
            crop = (rng.random(), rng.random()) if random_clip else (0.5, 0.5)
            yield Planned(r, target, list(range(target.num_frames)), crop, 1)
            continue
        if span_clip and target.num_frames > 1:
            stride = max(stride, (r.num_frames - 1) // (target.num_frames - 1))
        span = (target.num_frames - 1) * stride + 1
        slack = r.num_frames - span
        start = rng.randint(0, slack) if random_clip else slack // 2
        crop = (rng.random(), rng.random()) if random_clip else (0.5, 0.5)
        yield Planned(r, target, list(range(start, start + span, stride)), crop, stride)


def batch(items: Iterable[Planned], bucketer: Bucketer, flush: bool = False) -> Iterator[list[Planned]]:
    """Full batches: per bucket (bucket mode), or greedily packed up to the token budget (packing).
    Partial batches left at the end are dropped, or yielded too with ``flush`` (single passes)."""
    if bucketer.packing:
        current: list[Planned] = []
        used = 0
        for item in items:
            n = bucketer.batch_tokens(item.target)
            if current and used + n > bucketer.token_budget:
                yield current
                current, used = [], 0
            current.append(item)
            used += n
        if flush and current:
            yield current
        return
    pending: dict[str, list[Planned]] = {}
    sizes = {b.name: bucketer.batch_size_of(b) for b in bucketer.buckets}
    for item in items:
        group = pending.setdefault(item.target.key, [])
        group.append(item)
        if len(group) >= sizes[item.target.key]:
            yield group
            pending[item.target.key] = []
    if flush:
        yield from (group for group in pending.values() if group)


# ---------------------------------------------------------------------------------------------
# decoding (the only expensive stage)


class TimedDecoder:
    """Decode under a wall-clock limit per sample, so a pathological file cannot hang a worker.

    Each decode runs on a helper thread with a stop event. On timeout the event is set and the
    sample is skipped as ``decode_timeout``; the decoder sees the event between chunks of a few
    frames (``decode.STOP_CHECK_FRAMES``) and stops there, so a timed-out decode does not run on.
    At most ``max_abandoned`` timed-out decodes may still be finishing their last chunk: past that
    bound the next decode first waits (up to the timeout) for one to end, and when none does (a
    decoder stuck inside one call) its sample is skipped without starting anything, so stuck work
    never piles up beyond the bound.
    """

    def __init__(self, video_decoder: MediaDecoder, timeout_s: float | None = 30.0,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_abandoned: int = 2):
        self.video_decoder, self.timeout_s = video_decoder, timeout_s
        self.max_pixels, self.max_abandoned = max_pixels, max_abandoned
        self._abandoned: list[threading.Thread] = []

    def __getstate__(self):  # workers get a copy without the threads
        return {k: getattr(self, k) for k in ("video_decoder", "timeout_s", "max_pixels", "max_abandoned")}

    def __setstate__(self, state):
        self.__init__(**state)

    def abandoned(self) -> int:
        """Timed-out decodes still running."""
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        return len(self._abandoned)

    def _timed(self, work) -> np.ndarray:
        if self.abandoned() >= self.max_abandoned:
            self._abandoned[0].join(self.timeout_s)
            if self.abandoned() >= self.max_abandoned:
                raise TimeoutError(f"{len(self._abandoned)} timed-out decodes are still running (a decoder stuck "
                                   "in one call); this sample is not started")
        stop, box = threading.Event(), {}

        def run():
            try:
                box["frames"] = work(stop)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        thread = threading.Thread(target=run, name="videogen-decode", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            stop.set()
            self._abandoned.append(thread)
            raise TimeoutError(f"decoding took longer than {self.timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["frames"]

    def __call__(self, item: Planned) -> np.ndarray:
        r, t = item.record, item.target
        if r.ext == LATENT_EXTENSION:
            return read_latent(item)
        size = cover_size(r.width, r.height, t.height, t.width)
        dec = decoder_for(r.ext, self.video_decoder, self.max_pixels)

        def work(stop=None):
            scale = None if size == (r.height, r.width) else size
            return dec.decode(r.media, item.indices, scale) if stop is None else \
                dec.decode(r.media, item.indices, scale, stop=stop)

        frames = self._timed(work) if self.timeout_s else work()
        if frames.shape[1:3] != size:
            raise DecodeError(f"decoder returned frames of {frames.shape[1:3]}, expected {size}")
        top = int(item.crop[0] * (size[0] - t.height))
        left = int(item.crop[1] * (size[1] - t.width))
        return frames[:, top: top + t.height, left: left + t.width]  # (T, H, W, 3)


def load_latent(r: Record) -> tuple[np.ndarray, int, int]:
    """A latent-cache record's whole ``(C, t, h, w)`` array and its compression ``(sc, tc)``, checked
    against the encoded clip its json describes; a :class:`DecodeError` saying what is wrong."""
    try:
        z = read_npy(r.media)
    except (ValueError, OSError, EOFError) as e:
        raise DecodeError(f"latent.npy is not a readable array: {e}") from None
    if z.ndim != 4 or min(z.shape) < 1:
        raise DecodeError(f"latent.npy has shape {z.shape}, expected (C, t, h, w)")
    _, lt, lh, lw = z.shape
    sc = r.width // lw
    tc = (r.num_frames - 1) // (lt - 1) if lt > 1 else 1
    if sc < 1 or lw * sc != r.width or lh * sc != r.height or (lt - 1) * tc + 1 != r.num_frames:
        raise DecodeError(f"latent.npy of shape {z.shape} does not match the encoded clip "
                          f"{r.num_frames}x{r.height}x{r.width} in its json")
    return z, sc, tc


def read_latent(item: Planned) -> np.ndarray:
    """A latent-cache sample's ``(C, t, h, w)`` array, cut to the target: the first latent frames
    (a causal VAE's prefix encodes the clip's first frames) and a crop on the latent grid."""
    r, target = item.record, item.target
    z, sc, tc = load_latent(r)
    _, lt, lh, lw = z.shape
    tt, th, tw = LatentGrid(tc, sc).latent_shape(target.num_frames, target.height, target.width)
    top, left = int(item.crop[0] * (lh - th)), int(item.crop[1] * (lw - tw))
    return np.ascontiguousarray(z[:, :tt, top: top + th, left: left + tw])


def cover_size(width: int, height: int, out_h: int, out_w: int) -> tuple[int, int]:
    """(h, w) of the native frame scaled (aspect kept) to just cover ``out_h x out_w``."""
    scale = max(out_h / height, out_w / width)
    return max(out_h, round(height * scale)), max(out_w, round(width * scale))


def decode_batch(batch_: list[Planned], decode: TimedDecoder, skips: Skips,
                 fill: bool = True) -> list[tuple[Planned, np.ndarray]]:
    """Decode a planned batch. A sample that fails is counted and (``fill``) its slot is filled with
    a copy of a good sample of the same batch, so batch shapes and counts stay as planned; a batch
    with no good sample comes back empty (the caller moves on to the next planned batch)."""
    good: list[tuple[Planned, np.ndarray]] = []
    failed = 0
    for item in batch_:
        try:
            good.append((item, decode(item)))
        except (DecodeError, TimeoutError) as e:
            reason = "decode_timeout" if isinstance(e, TimeoutError) else "decode_error"
            skips.add(reason, item.record.url, item.record.key, str(e))
            failed += 1
        except Exception as e:  # a decoder bug must not end a weeks-long run: count it, loudly
            skips.add("decode_error", item.record.url, item.record.key, f"{type(e).__name__}: {e}"[:200])
            failed += 1
    if fill and good and failed:
        good += [good[i % len(good)] for i in range(failed)]
    return good


def collate(items: list[tuple[Planned, np.ndarray]], packing: bool) -> dict[str, Any]:
    """uint8 videos ``(B, 3, T, H, W)`` (bucket mode) or a list of ``(3, T, H, W)`` (packing); latent-cache
    samples come as ``latent`` (float16 ``(B, C, t, h, w)`` or a list of ``(C, t, h, w)``) instead."""
    if items and items[0][0].record.ext == LATENT_EXTENSION:
        name = "latent"
        data: Any = ([torch.from_numpy(f) for _, f in items] if packing
                     else torch.from_numpy(np.stack([f for _, f in items])))
    elif packing:
        name, data = "video", [torch.from_numpy(np.ascontiguousarray(f.transpose(3, 0, 1, 2))) for _, f in items]
    else:  # one numpy stack and one copy: torch.stack over permuted views is ~5x slower
        name = "video"  # b t h w c -> b c t h w
        data = torch.from_numpy(np.ascontiguousarray(np.stack([f for _, f in items]).transpose(0, 4, 1, 2, 3)))
    out: dict[str, Any] = {
        name: data,
        "caption": [p.record.caption for p, _ in items],
        "key": [p.record.key for p, _ in items],
        "url": [p.record.url for p, _ in items],
        "meta": [p.record.meta for p, _ in items],
        "fps": torch.tensor([p.record.fps / p.stride for p, _ in items], dtype=torch.float32),
    }
    if all(p.record.text is not None for p, _ in items):  # float16 (n, D) per caption name
        out["text"] = [{k: torch.from_numpy(v) for k, v in p.record.text.items()} for p, _ in items]
    if not packing:
        out["bucket"] = items[0][0].target.key
    return out


def to_float(batch: dict[str, Any]) -> dict[str, Any]:
    """uint8 videos (as collated) -> float in [-1, 1] and float16 latents -> float32, in place;
    shard-end markers pass through."""
    video = batch.get("video")
    if isinstance(video, list):
        batch["video"] = [v.float().div_(127.5).sub_(1.0) for v in video]
    elif video is not None:
        batch["video"] = video.float().div_(127.5).sub_(1.0)
    latent = batch.get("latent")
    if latent is not None:
        batch["latent"] = [z.float() for z in latent] if isinstance(latent, list) else latent.float()
    return batch


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """One video (C, T, H, W) float in [-1, 1] -> (T, C, H, W) uint8: :func:`to_float`'s inverse, for
    logging and writing."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 0, 2, 3)
