"""``videogen recaption --ckpt CAPTIONER --data SHARDS --out DIR``: relabel a shard set with long captions.

Parses the options and runs :func:`videogen.pipelines.recaption.recaption` (a predict job of the same
shape as ``videogen encode``; what it keeps, skips and records is described there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "caption every clip of a shard set with a trained captioner (json.captions[NAME]; resumable, per rank)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="the captioner export folder (or a captioner checkpoint)")
    parser.add_argument("--data", required=True, nargs="+", help="input shards: folder, glob, brace pattern or paths")
    parser.add_argument("--out", required=True, help="output folder (one shard per input shard)")
    parser.add_argument("--name", default="recaption", help="the caption's name in json.captions (default recaption)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips captioned together (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="caption tokens at most (default 96)")
    parser.add_argument("--sampling", choices=["greedy", "beam", "top-p"], default="greedy")
    parser.add_argument("--num-beams", type=int, default=4, help="--sampling beam: beams (default 4)")
    parser.add_argument("--top-p", type=float, default=0.9, help="--sampling top-p: nucleus mass (default 0.9)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="--sampling top-p: seed (per shard)")
    parser.add_argument("--use-txt", action="store_true", help="give the captioner each sample's txt (trained with txt_prob > 0)")
    parser.add_argument("--no-cache", action="store_true", help="generate without the KV cache (slower; for checks)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--rank", type=int, default=None, help="this process's rank (default: from the environment)")
    parser.add_argument("--world-size", type=int, default=None, help="processes sharing the work (default: environment)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from videogen.pipelines.recaption import recaption

    try:
        summary = recaption(args.ckpt, args.data, args.out, name=args.name, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, sampling=args.sampling, num_beams=args.num_beams,
                            top_p=args.top_p, temperature=args.temperature, seed=args.seed, use_txt=args.use_txt,
                            use_cache=not args.no_cache, device=args.device, rank=args.rank,
                            world_size=args.world_size, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, TypeError, OSError) as e:
        print(f"videogen recaption: {e}")
        return 2
    rate = summary["captions"] / summary["seconds"] if summary["seconds"] else 0.0
    print(f"captioned {summary['captions']} clips in {summary['shards']} shards ({rate:.1f} captions/s)"
          + (f"; skipped (copied unchanged): {summary['skipped']}" if summary["skipped"] else ""))
    out = Path(args.out)
    if summary["manifest"]:
        from videogen.data.manifest import DatasetManifest

        m = DatasetManifest.load(out)
        lengths = m.created_by.get("caption_words", {})
        print(f"{out}: {m.num_samples} samples in {len(m.shards)} shards; caption words: {lengths}")
    else:
        print(f"{out}: other ranks' shards are not all done yet; the last to finish writes dataset.json")
    return 0
