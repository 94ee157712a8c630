"""``videogen evaluate``: the numbers and pictures of generated videos (FVD, the VAE-feature distance,
VBench-style dimensions, CLIP alignment, the synthetic judge) into a report folder.

    videogen evaluate (--videos DIR | --ckpt DIT_EXPORT_CKPT_OR_RUN [--prompts FILE_OR_SHARDS]) \
        [--reference SHARDS] [--vae VAE] [--i3d FILE] [--clip DIR] [--image-encoder DIR] [--metrics a,b,...] --out REPORT_DIR [--json]

The work is in ``videogen/evaluation/`` (runner.py); every metric is described in docs/evaluate.md.
Exit code 0 when the report was written, 2 when an input or option cannot be used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

HELP = "evaluate generated videos (a folder of mp4s, or sampled from a DiT): FVD, VBench-style dims, CLIP, judge"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", metavar="DIR", help="a folder of generated .mp4 files (prompts: samples.jsonl or NAME.txt)")
    src.add_argument("--ckpt", metavar="DIT", help="a DiT export folder, a DiT checkpoint, or a run folder of checkpoints")
    parser.add_argument("--prompts", metavar="FILE_OR_SHARDS",
                        help="--ckpt: a text file (one prompt a line) or a shard set whose captions are the prompts "
                             "(default: --reference's captions)")
    parser.add_argument("--num-prompts", type=int, default=None, metavar="N", help="use the first N prompts")
    parser.add_argument("--caption", default="txt", help="prompts from shards: 'txt' or a json caption name (long, recaption)")
    parser.add_argument("--moving-only", action="store_true", help="prompts from shards: skip still images")
    parser.add_argument("--reference", metavar="SHARDS", help="the real clips for FVD and the VAE-feature distance")
    parser.add_argument("--reference-limit", type=int, default=None, metavar="N", help="use the first N reference clips")
    parser.add_argument("--vae", metavar="VAE", help="stage-1 VAE export for vae_fd and consistency (--ckpt: the DiT's)")
    parser.add_argument("--i3d", metavar="FILE", help="I3D network for FVD: TorchScript or an InceptionI3d state dict")
    parser.add_argument("--clip", metavar="DIR", help="a local transformers CLIP folder (clip_score, consistency)")
    parser.add_argument("--image-encoder", metavar="DIR", help="a local transformers image model (DINO, DINOv2) for "
                        "subject/background consistency (default: CLIP's image tower, else the VAE)")
    parser.add_argument("--metrics", default=None, help="comma-separated groups: fvd,vae_fd,temporal_flicker,"
                        "motion_smoothness,dynamic_degree,consistency,clip_score,judge (default: all that can run)")
    parser.add_argument("--shape", type=int, nargs=3, default=(9, 64, 96), metavar=("FRAMES", "H", "W"),
                        help="sampling size and the size distribution metrics compare at (default 9 64 96)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--sampler", choices=["euler", "heun", "ddim"],
                        help="default: ddim for a DiT trained with the discrete DDPM (CogVideoX), else euler")
    parser.add_argument("--seed", type=int, default=0, help="prompt i is sampled with seed + i")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fps", type=int, default=8, help="fps of the written sampled mp4s")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", default=None, help="reference statistics cache (default ~/.cache/videogen/evaluate)")
    parser.add_argument("--no-videos", action="store_true", help="do not copy the videos into the report")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the summary")


def run(args: argparse.Namespace) -> int:
    from videogen.evaluation.runner import Options, run_evaluation as evaluate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opts = Options(out=args.out, videos=args.videos, ckpt=args.ckpt, prompts=args.prompts, num_prompts=args.num_prompts,
                   caption=args.caption, moving_only=args.moving_only, reference=args.reference,
                   reference_limit=args.reference_limit, vae=args.vae, i3d=args.i3d, clip=args.clip,
                   image_encoder=args.image_encoder,
                   metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
                   shape=tuple(args.shape), steps=args.steps, cfg=args.cfg, sampler=args.sampler, seed=args.seed,
                   batch_size=args.batch_size, fps=args.fps, device=args.device, cache_dir=args.cache_dir,
                   save_videos=not args.no_videos, progress=not args.no_progress)
    try:
        metrics = evaluate(opts)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"videogen evaluate: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics))
    else:
        width = max(len(k) for k in metrics)
        for k, v in metrics.items():
            print(f"  {k:<{width}}  {v:.4f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
        print(f"report: {args.out}")
    return 0
