"""``videogen make-shards``: a folder of videos/images + captions -> WebDataset shards (see
``data_recipes/make_shards/`` and ``docs/shards.md``)."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "shard a folder of real videos/images with captions (resumable, parallel)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", required=True, help="folder of media files, searched recursively")
    parser.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar and dataset.json")
    parser.add_argument("--captions", default=None,
                        help="captions file: .jsonl rows {file|path|video, caption|text} or .csv with that header; "
                             "paths relative to --src (without it: a name.txt sidecar beside each file)")
    parser.add_argument("--allow-missing-captions", action="store_true",
                        help="keep files without a caption (empty txt) instead of skipping them")
    parser.add_argument("--min-side", type=int, default=0, help="skip media whose shorter side is below this (px)")
    parser.add_argument("--min-frames", type=int, default=0, help="skip videos with fewer frames")
    parser.add_argument("--max-duration", type=float, default=None,
                        help="skip longer videos (seconds), or cut them into clips with --clip-seconds")
    parser.add_argument("--clip-seconds", type=float, default=None,
                        help="cut videos longer than --max-duration (or than this, without it) into clips of this "
                             "length, re-encoded as H.264 mp4")
    parser.add_argument("--shard-size-mb", type=float, default=256.0, help="target shard size (default 256)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="worker processes (the shards are the same whatever this is)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars and no final report")


def run(args: argparse.Namespace) -> int:
    from data_recipes.make_shards import MakeShardsError, make_shards

    try:
        make_shards(args.src, args.out, captions=args.captions, min_side=args.min_side, min_frames=args.min_frames,
                    max_duration=args.max_duration, clip_seconds=args.clip_seconds,
                    shard_size_mb=args.shard_size_mb, allow_missing_captions=args.allow_missing_captions,
                    workers=args.workers, progress=not args.no_progress)
    except MakeShardsError as e:
        print(f"videogen make-shards: {e}", file=sys.stderr)
        return 2
    return 0
