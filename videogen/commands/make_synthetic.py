"""``videogen make-synthetic``: the synthetic set of moving coloured shapes as WebDataset shards
(see ``data_recipes/synthetic.py`` and ``docs/synthetic.md``)."""

from __future__ import annotations

import argparse
import sys

HELP = "write the synthetic set (one coloured shape moving over a background) as train/val shards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder; shards go to OUT/train and OUT/val")
    parser.add_argument("--num-samples", type=int, required=True, help="samples in train + val together")
    parser.add_argument("--seed", type=int, required=True, help="the same seed gives the same samples")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of samples in val (default 0.1)")
    parser.add_argument("--image-fraction", type=float, default=0.0,
                        help="share of samples that are still images (one-frame PNGs; default 0)")
    parser.add_argument("--shard-size", type=int, default=32, help="samples per shard (default 32)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, one shard each at a time (the shards are the same whatever this is)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from data_recipes.synthetic import write_synthetic

    try:
        summary = write_synthetic(args.out, args.num_samples, args.seed, val_fraction=args.val_fraction,
                                  image_fraction=args.image_fraction, shard_size=args.shard_size,
                                  workers=args.workers, progress=not args.no_progress)
    except ValueError as e:
        print(f"videogen make-synthetic: error: {e}", file=sys.stderr)
        return 2
    for split, s in summary.items():
        state = "up to date, kept" if s["skipped"] and s["samples"] else "empty, not written" if s["skipped"] else \
            f"{s['seconds']:.1f}s"
        print(f"{split}: {s['samples']} samples in {s['shards']} shards ({state}) -> {s['dir']}")
    return 0
