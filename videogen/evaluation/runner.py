"""``videogen evaluate`` end to end: read or generate the videos, run the metrics, write the report.

``--ckpt`` is a DiT export folder, a DiT checkpoint, or a run folder holding several checkpoints
(``*.ckpt``, searched recursively; one per global step): each is evaluated into
``REPORT_DIR/step-NNNNNNN/`` and the metrics are plotted over the steps (``REPORT_DIR/plots/``,
``REPORT_DIR/curve.json``); ``REPORT_DIR/metrics.json`` then holds the last step's metrics and ``step``.
Sampled videos add ``sample_seconds_per_video`` (wall clock of the batched sampling over the videos,
models already loaded).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videogen.evaluation import report
from videogen.evaluation.suite import Tools, evaluate, plan_metrics
from videogen.evaluation.videos import EvalVideo, caption_of, read_video_folder, shard_records, to_frames
from videogen.models.latent_grid import LatentGrid

log = logging.getLogger("videogen.evaluate")


@dataclass
class Options:
    out: str
    videos: str | None = None
    ckpt: str | None = None
    prompts: str | None = None
    num_prompts: int | None = None
    caption: str = "txt"
    moving_only: bool = False
    reference: str | None = None
    reference_limit: int | None = None
    vae: str | None = None
    i3d: str | None = None
    clip: str | None = None
    image_encoder: str | None = None
    metrics: list[str] | None = None
    shape: tuple[int, int, int] = (9, 64, 96)
    steps: int = 30
    cfg: float = 4.0
    sampler: str = "euler"
    seed: int = 0
    batch_size: int = 8
    fps: int = 8
    device: str = "cpu"
    cache_dir: str | None = None
    save_videos: bool = True
    progress: bool = True


def read_prompts(spec: str, caption: str, limit: int | None, moving_only: bool, skips) -> list[tuple[str, Any]]:
    """``(prompt, attributes or None)`` from a text file (one prompt a line) or a shard set's captions."""
    path = Path(spec)
    out: list[tuple[str, Any]] = []
    if path.is_dir() or path.suffix == ".tar" or any(c in spec for c in "*{"):
        for record in shard_records(spec, skips):
            if limit is not None and len(out) >= limit:
                break
            attributes = record.meta.get("attributes") if isinstance(record.meta.get("attributes"), dict) else None
            if moving_only and (record.num_frames <= 1 or (attributes or {}).get("direction") == "none"):
                continue
            text = caption_of(record, caption)
            if text:
                out.append((text, attributes))
            else:
                skips.add("missing_caption", record.url, record.key)
    elif path.is_file():
        lines = [p.strip() for p in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        out = [(p, None) for p in lines if p][:limit]
    else:
        raise FileNotFoundError(f"--prompts {spec}: no such file or shard set")
    if not out:
        raise ValueError(f"--prompts {spec}: no prompts in it")
    return out


def checkpoints(path: Path) -> list[Path]:
    """The targets of ``--ckpt``: itself (an export folder or a .ckpt), or a run folder's checkpoints."""
    if path.is_file() or (path / "config.yaml").is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--ckpt {path}: no such export folder, checkpoint or run folder")
    found = sorted(path.rglob("*.ckpt"))
    if not found:
        raise FileNotFoundError(f"--ckpt {path}: no export (config.yaml) and no *.ckpt under it")
    return found


def _tools(opts: Options, vae_export=None) -> Tools:
    from videogen.evaluation.features import CLIPFeatures, I3DFeatures, ImageEncoderFeatures, VAEFeatures

    if opts.vae:
        from videogen.encoding import load_vae

        vae_export = load_vae(opts.vae)
    cache = opts.cache_dir or str(Path.home() / ".cache" / "videogen" / "evaluate")
    tools = Tools(i3d=I3DFeatures(opts.i3d, opts.device) if opts.i3d else None,
                  vae=VAEFeatures(vae_export, opts.device) if vae_export is not None else None,
                  clip=CLIPFeatures(opts.clip, opts.device) if opts.clip else None,
                  image_encoder=ImageEncoderFeatures(opts.image_encoder, opts.device) if opts.image_encoder else None,
                  reference=opts.reference,
                  reference_limit=opts.reference_limit, cache_dir=cache,
                  shape=tuple(opts.shape), progress=opts.progress)
    if tools.vae is not None:
        problem = LatentGrid.from_stats(vae_export.stats).problem(*tools.shape)
        if problem:
            f, h, w = tools.shape
            raise ValueError(f"--shape {f} {h} {w}: {problem} for the VAE")
    return tools


def _evaluate_and_write(videos: list[EvalVideo], opts: Options, tools: Tools, out: Path, skips,
                        settings: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    groups, skipped = plan_metrics(opts.metrics, tools, any(v.prompt or v.attributes for v in videos))
    for g, why in skipped.items():
        log.info("metric %s not computed: %s", g, why)
    metrics, details = evaluate(videos, groups, tools, skips)
    metrics.update(extra or {})
    details.update(skipped_metrics=skipped, settings=settings)
    details["skipped_inputs"] = list(skips.records or [])
    report.write_report(out, metrics, details, videos, opts.save_videos)
    return metrics


def run_evaluation(opts: Options) -> dict[str, Any]:
    """Evaluate and write the report; returns the flat metrics (the last step's for a run folder)."""
    from videogen.data.stages import Skips

    out, skips = Path(opts.out), Skips(max_logged=20, keep=True)
    settings = {k: v for k, v in vars(opts).items() if k not in ("progress",)}
    if opts.videos:
        videos = read_video_folder(opts.videos, skips)
        return _evaluate_and_write(videos, opts, _tools(opts), out, skips, settings)
    from videogen.evaluation.generation import generate_videos, load_generator

    source = opts.prompts or opts.reference
    if not source:
        raise ValueError("--ckpt needs --prompts FILE_OR_SHARDS or --reference SHARDS (whose captions are the prompts)")
    prompts = read_prompts(source, opts.caption, opts.num_prompts, opts.moving_only, skips)
    targets = checkpoints(Path(opts.ckpt))
    curve, tools, seen = [], None, set()
    for target in targets:
        gen = load_generator(str(target), opts.device)
        if len(targets) > 1 and (gen.step is None or gen.step in seen):
            log.info("skipping %s: step %s already evaluated or unknown", target, gen.step)
            continue
        seen.add(gen.step)
        tools = tools or _tools(opts, gen.vae_export)
        f, h, w = opts.shape
        began = time.perf_counter()
        clips = generate_videos(gen, [p for p, _ in prompts], num_frames=f, height=h, width=w, steps=opts.steps,
                                cfg=opts.cfg, sampler=opts.sampler, seed=opts.seed, batch_size=opts.batch_size,
                                progress=opts.progress)
        seconds = (time.perf_counter() - began) / len(clips)
        videos = [EvalVideo(f"{i:03d}", to_frames(c), p, a, opts.fps, opts.seed + i)
                  for i, (c, (p, a)) in enumerate(zip(clips, prompts))]
        where = out if len(targets) == 1 else out / f"step-{gen.step:07d}"
        metrics = _evaluate_and_write(videos, opts, tools, where, skips, {**settings, "ckpt": str(target)},
                                      {"sample_seconds_per_video": seconds})
        curve.append({"step": gen.step, "ckpt": str(target), "metrics": metrics})
    if len(targets) == 1:
        return curve[0]["metrics"]
    curve.sort(key=lambda p: p["step"])
    report.write_json(out / "curve.json", curve)
    report.plot_curves(out / "plots", curve)
    last = {**curve[-1]["metrics"], "step": curve[-1]["step"]}
    report.write_json(out / "metrics.json", last)
    return last
