"""``videogen stream``: run a config's data pipeline for an epoch, without a model.

Reads the ``data:`` section of a training config (the same YAML ``videogen fit`` takes), streams
the training loader through the real workers, decoders and buckets, and reports batches per bucket,
clips and frames per second, and every skipped sample by reason. Use it to check a data config
before spending accelerator time on it.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

HELP = "stream a config's training data for an epoch (no model): batches per bucket, clips/s, skips"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", required=True,
                        help="training config(s) with a data: section; several are merged in order")
    parser.add_argument("--epochs", type=int, default=1, help="epochs to stream (default 1)")
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches per epoch")
    parser.epilog = "Any --data.KEY=VALUE overrides a data setting, e.g. --data.loader.num_workers=0."


TAKES_OVERRIDES = ("--data.", "config")  # checked by videogen.cli.run_extra


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.epochs < 1:
        raise SystemExit("videogen stream: --epochs must be >= 1")
    from videogen.data.config_section import build_datamodule

    dm = build_datamodule(args.config, args.overrides)
    loader = dm.train_dataloader()
    for epoch in range(args.epochs):
        per_bucket: Counter = Counter()
        clips = frames = 0
        start = time.perf_counter()
        total = min(len(loader), args.max_batches or len(loader))
        for i, batch in enumerate(tqdm(loader, total=total, desc=f"epoch {epoch}", unit="batch")):
            videos = batch["video"] if isinstance(batch["video"], list) else list(batch["video"])
            per_bucket[batch.get("bucket", "packed")] += 1
            clips += len(videos)
            frames += sum(v.shape[1] for v in videos)
            if i + 1 >= total:
                break
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: {sum(per_bucket.values())} batches, {clips} clips, {frames} frames in {seconds:.1f} s "
              f"({clips / seconds:.1f} clips/s, {frames / seconds:.0f} frames/s, {dm.loader.num_workers} workers)")
        for bucket, n in sorted(per_bucket.items()):
            print(f"  bucket {bucket:<14} {n:>6} batches")
        skipped = loader.skipped
        print(f"  skipped: {sum(skipped.values())}" + (f" ({', '.join(f'{k}={v}' for k, v in sorted(skipped.items()))})"
                                                     if skipped else ""))
    return 0
