"""``videogen curate``: score, split, deduplicate and filter a shard set into training-grade shards
(see ``data_recipes/curate`` and ``docs/curation.md``). One flag per field of ``CurateOptions``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import MISSING, fields

HELP = "curate shards: scene split, quality, motion, dedup, model scores, filter (parallel, resumable)"

_SPECIAL = {"steps", "scorers", "filter", "keep_all", "crop_letterbox", "clip_model"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from data_recipes.curate.options import STEPS, CurateOptions

    parser.add_argument("--data", required=True, help="input shards: a folder, glob, brace pattern or single shard")
    parser.add_argument("--out", required=True, help="output folder: shards, dataset.json, curation.json, histograms/")
    parser.add_argument("--steps", default="scene-split,quality,motion,dedup",
                        help=f"comma-separated steps, run in this order whatever the order given: {', '.join(STEPS)}")
    parser.add_argument("--filter", default=None, metavar="EXPR",
                        help="keep only samples whose scores satisfy EXPR, e.g. 'motion > 0.001 and duration >= 2'")
    parser.add_argument("--keep-all", action="store_true",
                        help="write every sample with its scores and flags, drop none (select later with data.filter)")
    parser.add_argument("--no-crop-letterbox", action="store_true", help="flag letterboxed clips but do not crop them")
    parser.add_argument("--clip-model", default=None, metavar="DIR",
                        help="local Hugging Face CLIP folder: adds clip_score (caption-video similarity)")
    parser.add_argument("--scorer", action="append", default=[], metavar="CLASS[=PATH]",
                        help="another scorer by class path (package.module.Class or package.module.Class=PATH); "
                             "repeat for several")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes, one shard each at a time (the output is the same whatever this is)")
    parser.add_argument("--shard-index", type=int, default=None,
                        help="score only input shards i with i %% N == this (one SLURM array task: $SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--num-shard-groups", type=int, default=None, metavar="N",
                        help="how many groups --shard-index counts in ($SLURM_ARRAY_TASK_COUNT)")
    parser.add_argument("--dedup-part", type=int, default=None, metavar="I",
                        help="once every shard is scored: search only part I of the near-duplicate pairs and save it "
                             "(one SLURM array task: $SLURM_ARRAY_TASK_ID); a final run without it reads the parts")
    parser.add_argument("--num-dedup-parts", type=int, default=None, metavar="N",
                        help="how many parts --dedup-part counts in ($SLURM_ARRAY_TASK_COUNT)")
    parser.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")
    parser.add_argument("--calibrate", action="store_true",
                        help="add a calibration section to curation.json (per score: the threshold, quantiles, how "
                             "many fail) and PNG strips of the pieces nearest each threshold on both sides "
                             "(OUT/calibration/FLAG/); also on a rerun that only judges again")
    parser.add_argument("--no-histograms", action="store_true", help="do not draw the score histograms")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars and no summary")
    thresholds = parser.add_argument_group("thresholds and analysis (defaults in docs/curation.md)")
    for f in fields(CurateOptions):
        if f.name in _SPECIAL:
            continue
        kind = {"int": int, "float": float}[f.type if isinstance(f.type, str) else f.type.__name__]
        default = f.default if f.default is not MISSING else None
        thresholds.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default,
                                help=f"{f.metadata.get('help', '')} (default {default})")


def options_from_args(args: argparse.Namespace):
    from data_recipes.curate.options import CurateOptions

    kwargs = {f.name: getattr(args, f.name) for f in fields(CurateOptions) if f.name not in _SPECIAL}
    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    return CurateOptions(steps=steps, scorers=tuple(args.scorer), filter=args.filter, keep_all=args.keep_all,
                         crop_letterbox=not args.no_crop_letterbox, clip_model=args.clip_model, **kwargs)


def run(args: argparse.Namespace) -> int:
    from data_recipes.curate import CurateError, curate
    from videogen.data.score_filter import FilterError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        opts = options_from_args(args)
        curate(args.data, args.out, opts, workers=args.workers, shard_index=args.shard_index,
               num_shard_groups=args.num_shard_groups, dedup_part=args.dedup_part,
               num_dedup_parts=args.num_dedup_parts, decoder=args.decoder, progress=not args.no_progress,
               histograms=not args.no_histograms, calibrate=args.calibrate)
    except (CurateError, FilterError, ValueError, FileNotFoundError) as e:
        print(f"videogen curate: error: {e}", file=sys.stderr)
        return 2
    return 0
