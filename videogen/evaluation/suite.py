"""Which metrics run on a set of videos, with what, into one flat ``{metric: value}`` dict.

Metric groups (``--metrics``): ``fvd`` (I3D + a reference set), ``vae_fd`` (the stage-1 VAE + a
reference set), ``temporal_flicker``, ``motion_smoothness``, ``dynamic_degree`` (also reports
``motion_magnitude``), ``consistency`` (``subject_consistency`` and ``background_consistency``: the
features of an image encoder when given, else CLIP's image features, else the VAE's), ``clip_score`` (CLIP + prompts) and
``judge`` (``judge_colour/shape/direction/speed/size/all``: synthetic-set prompts). Without
``--metrics`` every group whose inputs are there runs; a group asked for whose inputs are missing is
a one-line error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from videogen.evaluation import dims
from videogen.evaluation.frechet import GaussianStats, frechet_distance
from videogen.evaluation.videos import EvalVideo, fit_clip, iter_shard_videos

log = logging.getLogger("videogen.evaluate")

GROUPS = ("fvd", "vae_fd", "temporal_flicker", "motion_smoothness", "dynamic_degree", "consistency",
          "clip_score", "judge")


@dataclass(eq=False)
class Tools:
    """What the metrics may use: extractors (None when not given), the reference set, the clip shape
    the distribution metrics compare at (frames, height, width)."""

    i3d: Any = None
    vae: Any = None
    clip: Any = None
    image_encoder: Any = None
    reference: str | None = None
    reference_limit: int | None = None
    cache_dir: str | Path | None = None
    shape: tuple[int, int, int] = (9, 64, 96)
    progress: bool = True
    _memo: dict = field(default_factory=dict)


def _needs(group: str, tools: Tools, prompts: bool) -> str | None:
    """Why ``group`` cannot run (None: it can)."""
    if group == "fvd":
        return None if tools.i3d and tools.reference else "needs --i3d FILE and --reference SHARDS"
    if group == "vae_fd":
        return None if tools.vae and tools.reference else "needs --vae VAE (or --ckpt) and --reference SHARDS"
    if group == "consistency":
        return None if tools.image_encoder or tools.vae or tools.clip else "needs --image-encoder, --clip or --vae"
    if group == "clip_score":
        return None if tools.clip and prompts else "needs --clip DIR and videos with prompts"
    if group == "judge":
        return None if prompts else "needs videos with prompts (the synthetic set's captions)"
    return None


def plan_metrics(requested: Sequence[str] | None, tools: Tools, prompts: bool) -> tuple[list[str], dict[str, str]]:
    """``(groups to run, {group: why skipped})``; a requested group that cannot run raises ValueError."""
    if requested:
        unknown = [g for g in requested if g not in GROUPS]
        if unknown:
            raise ValueError(f"--metrics {','.join(unknown)}: unknown; choose from {','.join(GROUPS)}")
        for g in requested:
            why = _needs(g, tools, prompts)
            if why:
                raise ValueError(f"--metrics {g}: {why}")
        return list(requested), {}
    run, skipped = [], {}
    for g in GROUPS:
        why = _needs(g, tools, prompts)
        (skipped.__setitem__(g, why) if why else run.append(g))
    return run, skipped


def _clips(videos: Sequence[EvalVideo], shape: tuple[int, int, int]):
    clips = [fit_clip(v.frames, *shape) for v in videos]
    return [c for c in clips if c is not None], sum(c is None for c in clips)


def reference_stats(tools: Tools, extractor, skips) -> GaussianStats:
    """The reference set's feature statistics for ``extractor``: from memory, the cache, or computed."""
    from tqdm import tqdm

    from videogen.evaluation.features import cache_path

    settings = {"shape": list(tools.shape), "limit": tools.reference_limit}
    path = cache_path(tools.cache_dir or ".", tools.reference, extractor, settings)
    if path in tools._memo:
        return tools._memo[path]
    stats = None
    if tools.cache_dir and path.is_file():
        try:
            stats = GaussianStats.load(path)
            log.info("reference statistics from the cache: %s", path)
        except Exception as e:  # a damaged cache file is computed again, not trusted
            log.warning("ignoring the unreadable cache file %s (%s); computing again", path, str(e)[:100])
    if stats is None:
        refs = iter_shard_videos(tools.reference, skips, tools.reference_limit, min_frames=tools.shape[0],
                                 max_frames=tools.shape[0])
        feats = [extractor([fit_clip(v.frames, *tools.shape)])
                 for v in tqdm(refs, unit="clip", desc=f"reference {extractor.identity['extractor']}",
                               disable=not tools.progress or None)]
        if len(feats) < 2:
            raise ValueError(f"--reference {tools.reference}: fewer than 2 clips of at least {tools.shape[0]} frames")
        stats = GaussianStats.of(np.concatenate(feats))
        if tools.cache_dir:
            stats.save(path)
    tools._memo[path] = stats
    return stats


def _distance(videos, extractor, tools: Tools, skips) -> float | None:
    clips, short = _clips(videos, tools.shape)
    if short:
        log.warning("%d videos have fewer than %d frames: left out of the Frechet distance", short, tools.shape[0])
    if len(clips) < 2:
        log.warning("a Frechet distance needs at least 2 videos of %d frames; got %d", tools.shape[0], len(clips))
        return None
    return frechet_distance(GaussianStats.of(extractor(clips)), reference_stats(tools, extractor, skips))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate(videos: Sequence[EvalVideo], groups: Sequence[str], tools: Tools, skips) -> tuple[dict, dict]:
    """``(metrics, details)``: the flat metrics (``num_videos`` included) and per-video values."""
    from tqdm import tqdm

    from videogen.evaluation.judge import judge_videos, prompt_attributes

    metrics: dict[str, Any] = {"num_videos": len(videos)}
    per_video: list[dict[str, Any]] = [{"name": v.name, "prompt": v.prompt} for v in videos]
    if "fvd" in groups:
        metrics["fvd"] = _distance(videos, tools.i3d, tools, skips)
    if "vae_fd" in groups:
        metrics["vae_fd"] = _distance(videos, tools.vae, tools, skips)
    frame_features = tools.image_encoder or tools.clip or tools.vae
    for v, row in tqdm(list(zip(videos, per_video)), unit="video", desc="per-video metrics",
                       disable=not tools.progress or None):
        if "temporal_flicker" in groups:
            row["temporal_flicker"] = dims.temporal_flicker(v.frames)
        if "motion_smoothness" in groups:
            row["motion_smoothness"] = dims.motion_smoothness(v.frames)
        if "dynamic_degree" in groups:
            m = dims.motion(v.frames)
            row["dynamic"], row["motion_magnitude"] = (None, None) if m is None else m
        if "consistency" in groups or "clip_score" in groups:
            clip = fit_clip(v.frames, len(v.frames), *_frame_size(v.frames, tools))
        if "consistency" in groups:
            subject, background = frame_features.frame_features(clip)
            row["subject_consistency"] = dims.consistency(subject)
            row["background_consistency"] = dims.consistency(background)
        if "clip_score" in groups and v.prompt:
            row["clip_score"] = tools.clip.alignment(clip, v.prompt)
    for name in ("temporal_flicker", "motion_smoothness", "motion_magnitude", "subject_consistency",
                 "background_consistency", "clip_score"):
        if any(name in row for row in per_video):
            metrics[name] = _mean(row.get(name) for row in per_video)
    if "dynamic_degree" in groups:
        metrics["dynamic_degree"] = _mean(None if r["dynamic"] is None else float(r["dynamic"]) for r in per_video)
    if "judge" in groups:
        judged = [i for i, v in enumerate(videos) if v.prompt or v.attributes]
        targets = [videos[i].attributes or prompt_attributes(videos[i].prompt) for i in judged]
        result = judge_videos([videos[i].frames for i in judged], targets)
        for i, verdict in zip(judged, result.pop("verdicts")):
            per_video[i]["judge"] = verdict
        metrics.update(result)
    not_applicable = sorted(k for k, v in metrics.items() if v is None)  # e.g. judge_speed: no prompt names a speed
    return {k: v for k, v in metrics.items() if v is not None}, {"videos": per_video, "not_applicable": not_applicable}


def _frame_size(frames: np.ndarray, tools: Tools) -> tuple[int, int]:
    """Frames keep their size for CLIP (it resizes); for the VAE they are cropped to its multiple."""
    h, w = frames.shape[1:3]
    if tools.image_encoder is None and tools.clip is None and tools.vae is not None:
        sc = tools.vae.stats["spatial_compression"]
        return max(sc, h - h % sc), max(sc, w - w % sc)
    return h, w
