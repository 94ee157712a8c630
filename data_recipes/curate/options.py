"""The settings of a curation run: which steps, their thresholds, the scorers. One dataclass, so
the constructor signature is the configuration (``videogen curate`` makes one flag per field)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields

# the steps in the order they run (a sample dropped by an earlier step is scored but not judged by later ones)
STEPS = ("scene-split", "quality", "motion", "dedup")


@dataclass
class CurateOptions:
    steps: tuple[str, ...] = STEPS
    analysis_side: int = field(default=128, metadata={"help": "frames are analysed with their shorter side scaled "
                                                              "down to this many pixels"})
    max_frames: int = field(default=512, metadata={"help": "analyse at most this many evenly spaced frames per clip"})
    # scene split
    cut_threshold: float = field(default=0.15, metadata={"help": "histogram distance (0-1) between two frames "
                                                                 "over which they are a cut"})
    cut_ratio: float = field(default=4.0, metadata={"help": "... and over this many times the clip's median "
                                                            "frame-to-frame distance"})
    min_scene_frames: int = field(default=9, metadata={"help": "scenes shorter than this are dropped (fragments)"})
    # quality
    min_side: int = field(default=0, metadata={"help": "drop clips whose shorter side is below this (pixels)"})
    min_bitrate_kbps: float = field(default=0.0, metadata={"help": "drop clips under this bitrate (0: off)"})
    min_sharpness: float = field(default=0.0, metadata={"help": "drop clips whose Laplacian variance is below this "
                                                                "(blurry; 0: off)"})
    min_brightness: float = field(default=0.0, metadata={"help": "drop clips darker than this mean luma (0-1)"})
    max_brightness: float = field(default=1.0, metadata={"help": "drop clips brighter than this mean luma (0-1)"})
    max_black_fraction: float = field(default=0.5, metadata={"help": "drop clips with more black frames than this "
                                                                     "share"})
    max_frozen_fraction: float = field(default=0.5, metadata={"help": "drop moving clips with more frozen frame "
                                                                      "pairs than this share"})
    crop_letterbox: bool = field(default=True, metadata={"help": "re-encode letterboxed clips without their black "
                                                                 "bars"})
    # motion
    static_motion: float = field(default=5e-5, metadata={"help": "clips with less motion are static (fraction of "
                                                                 "the shorter side per second)"})
    max_jitter: float = field(default=0.015, metadata={"help": "clips whose global shift varies more are jittery "
                                                               "(fraction of the shorter side per frame)"})
    motion_pairs: int = field(default=16, metadata={"help": "frame pairs of optical flow per clip"})
    # dedup
    dedup_max_distance: int = field(default=40, metadata={"help": "clips whose 256-bit pHashes differ in at most "
                                                                  "this many bits ..."})
    dedup_max_colour: float = field(default=6.0, metadata={"help": "... and whose colour layouts differ by at most "
                                                                   "this much (mean, 0-255) are duplicates"})
    # model scorers (run whenever given, after motion)
    clip_model: str | None = field(default=None, metadata={"help": "local folder of a Hugging Face CLIP model: "
                                                                   "adds clip_score (caption-video similarity)"})
    scorers: tuple[str, ...] = field(default=(), metadata={"help": "more scorers by class path, "
                                                                   "package.module.Class or package.module.Class=PATH"})
    # decisions
    filter: str | None = None
    keep_all: bool = field(default=False, metadata={"help": "write every sample with its scores and flags and drop "
                                                            "none (select later with data.filter)"})

    def __post_init__(self):
        self.steps = tuple(self.steps)
        self.scorers = tuple(self.scorers)
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown curation step {unknown[0]!r}: the steps are {', '.join(STEPS)}")
        if not self.steps:
            raise ValueError("no curation steps given: name at least one of " + ", ".join(STEPS))
        if self.min_scene_frames < 1 or self.analysis_side < 16 or self.max_frames < 4 or self.motion_pairs < 1:
            raise ValueError("min_scene_frames >= 1, analysis_side >= 16, max_frames >= 4 and motion_pairs >= 1")
        if not 0 <= self.dedup_max_distance < 128:
            raise ValueError(f"dedup_max_distance is in bits of a 256-bit hash: 0..127, got {self.dedup_max_distance}")

    @functools.cached_property
    def score_filter(self):
        """``filter`` parsed, once (a :class:`~videogen.data.score_filter.ScoreFilter`; None without one):
        a malformed expression fails when first asked for, before any scoring."""
        from videogen.data.score_filter import ScoreFilter

        return ScoreFilter(self.filter) if self.filter else None

    def ordered_steps(self) -> list[str]:
        return [s for s in STEPS if s in self.steps]

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}
