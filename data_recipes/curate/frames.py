"""What the curation steps look at: a clip's frames, decoded once, small; and re-encoding pieces.

Every step scores the same :class:`Clip`: the sample's members and its frames decoded at an
analysis size (the shorter side scaled down to ``analysis_side`` pixels, aspect kept), at most
``max_frames`` of them evenly spaced. Steps that change the media (scene split, letterbox crop)
decode the frames they keep at full size and re-encode them with :func:`encode_rgb`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from videogen.data.decode import IMAGE_EXTENSIONS, MediaDecoder, decoder_for
from videogen.data.stages import Record


@dataclass
class Clip(Record):
    """One sample being curated: the parsed record (members and shape), its analysis frames and the
    scores so far."""

    frames: np.ndarray  # (T', h, w, 3) uint8 RGB at the analysis size
    indices: list[int]  # the native frame index of each analysis frame
    scores: dict[str, Any] = field(default_factory=dict)  # -> json["curation"]
    reasons: list[str] = field(default_factory=list)  # "step:reason" for every rule it fails

    @property
    def is_image(self) -> bool:
        return self.ext in IMAGE_EXTENSIONS or self.num_frames <= 1

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def analysis_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(h, w) with the shorter side at most ``side`` (never upscaled), both even."""
    scale = min(1.0, side / min(width, height))
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


def spread(num_frames: int, wanted: int) -> list[int]:
    """``wanted`` evenly spaced frame indices (all of them when there are fewer), first and last included."""
    if num_frames <= wanted:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (wanted - 1)) for i in range(wanted)})


def decode_clip(record: Record, decoder: MediaDecoder, side: int, max_frames: int) -> Clip:
    """Decode the analysis frames of one sample (raises ``DecodeError`` for media that cannot be read)."""
    indices = spread(record.num_frames, max_frames)
    size = analysis_size(record.width, record.height, side)
    frames = decoder_for(record.ext, decoder).decode(record.media, indices, size)  # (T, h, w, 3)
    members = {f.name: getattr(record, f.name) for f in fields(Record)}
    return Clip(**{**members, "meta": dict(record.meta)}, frames=frames, indices=indices)


def full_frames(clip: Clip, decoder: MediaDecoder, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Native-size frames ``[start, stop)`` of the clip, (T, H, W, 3) uint8."""
    stop = clip.num_frames if stop is None else stop
    return decoder_for(clip.ext, decoder).decode(clip.media, list(range(start, stop)))


def encode_rgb(frames: np.ndarray, fps: float, crf: int = 18) -> bytes:
    """(T, H, W, 3) uint8 RGB -> H.264 mp4 (yuv420p; odd sides lose their last row/column).

    :func:`videogen.evaluation.report.mp4_bytes` on the even-sided frames: the same frames give the same
    bytes; any frame rate, fractional ones included."""
    from videogen.evaluation.report import mp4_bytes

    return mp4_bytes(frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2], fps, crf)


def luma(frames: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) float32 luma in [0, 255] (BT.601 weights)."""
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
