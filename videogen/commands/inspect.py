"""``videogen inspect DIR``: the health of a shard set, found by decoding every sample.

The engine, and what it reports: :mod:`videogen.data.inspection`. ``--buckets CONFIG.yaml`` adds how
the good samples fall into a bucket table (the config's data section read as ``videogen fit`` reads
it: :func:`load_bucket_config`).

``--json`` prints one JSON object instead of the summary. Exit code 0 when it ran (bad samples
included), 2 when the folder or the bucket config cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "decode every sample of a shard set and report its shapes, captions and bad samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="folder of *.tar shards (a glob, brace pattern or single shard also works)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.add_argument("--buckets", metavar="CONFIG.yaml",
                        help="a training config (its data section, read as videogen fit reads it: "
                             "interpolation, --data.* overrides) or a YAML with a top-level `buckets:` list "
                             "({num_frames, height, width, batch_size}) and a `batch_size`")
    parser.add_argument("--frames", type=int, default=0,
                        help="decode this many evenly spaced frames per clip (default 0: every frame)")
    parser.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"],
                        help="video decoder, as data.init_args.clips.decoder (default auto: decord, PyAV fallback)")
    parser.add_argument("--workers", type=int, default=1, help="processes, one shard each at a time (default 1)")
    parser.add_argument("--max-member-mb", type=float, default=512.0,
                        help="members larger than this are not read (as data.init_args.clips.max_member_mb; default 512)")
    parser.add_argument("--max-sample-mb", type=float, default=1024.0,
                        help="samples larger than this are not read (as data.init_args.clips.max_sample_mb; default 1024)")
    parser.add_argument("--compressed", action="store_true",
                        help="also read gzip/bzip2/xz-compressed tars (as data.init_args.clips.compressed_shards; default: refused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.epilog = ("--data.KEY=VALUE overrides a setting of the --buckets config's data section, as for "
                     "videogen fit (e.g. --data.clips.frame_stride=2).")


TAKES_OVERRIDES = True


def load_bucket_config(path: str, shards: str = "", overrides: list[str] = ()) -> tuple[Any, int, float | None]:
    """``(Bucketer, frame_stride, target_fps)`` of a config's data section, read as training reads it
    (:func:`videogen.commands.stream.load_data_config`: interpolation, ``--data.*`` overrides), or of a
    bare bucket table; raises ValueError naming the file and key."""
    from videogen.commands.stream import load_data_config

    try:
        dm = load_data_config(path, shards or "-", overrides, option="--buckets", need_buckets=True)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    return dm.bucketer, dm.clips.frame_stride, dm.clips.target_fps


def run(args: argparse.Namespace) -> int:
    from videogen.data.shards import expand_urls, is_remote

    def fail(message: str) -> int:
        print(f"videogen inspect: error: {message}", file=sys.stderr)
        return 2

    from videogen.data.inspection import bucket_report, build_report, format_inspection
    from videogen.data.manifest import ManifestError
    from videogen.data.tar_reader import MIB, TarLimits

    if args.frames < 0 or args.workers < 1:
        return fail("--frames must be >= 0 and --workers >= 1")
    try:
        limits = TarLimits(member_bytes=int(args.max_member_mb * MIB), sample_bytes=int(args.max_sample_mb * MIB),
                           compressed=args.compressed)
    except ValueError as e:
        return fail(f"--max-member-mb / --max-sample-mb: {e}")
    if not is_remote(args.dir) and not any(c in args.dir for c in "*?[{") and not Path(args.dir).exists():
        return fail(f"{args.dir}: no such folder; give the folder that holds the *.tar shards")
    try:
        urls = expand_urls(args.dir)
    except FileNotFoundError as e:
        return fail(f"{e}")
    overrides = list(getattr(args, "overrides", []))
    bad = [o for o in overrides if not o.startswith("--data.")]
    if bad or (overrides and not args.buckets):
        return fail(f"only --data.* overrides of the --buckets config are accepted, got {(bad or overrides)[0]!r}")
    bucketing = None
    if args.buckets:
        try:
            bucketing = load_bucket_config(args.buckets, args.dir, overrides)
        except ValueError as e:
            return fail(str(e))
    path = Path(args.dir)
    folder = path if path.is_dir() else (path.parent if not is_remote(args.dir) and path.is_file() else None)
    try:
        report = build_report(urls, folder, str(args.dir), args.decoder, args.frames, limits, args.workers,
                              progress=not args.no_progress)
    except ManifestError as e:
        return fail(str(e))
    if bucketing is not None:
        report["bucketing"] = {"config": args.buckets, **bucket_report(report["shapes"], *bucketing)}
    print(json.dumps(report, ensure_ascii=False) if args.json else format_inspection(report))
    return 0
