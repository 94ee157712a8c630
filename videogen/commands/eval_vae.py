"""``videogen eval-vae --vae VAE --data SHARDS``: how well a VAE reconstructs a shard set: mean PSNR
and SSIM, encode and decode seconds per clip, the colour agreement on synthetic clips, the clips that
could not be used. The engine, and how each figure is measured: :mod:`videogen.evaluation.reconstruction`.

``--vae`` is an export folder or a Lightning checkpoint written by ``videogen fit`` (read with
``weights_only=True`` by ``videogen.pretrained.load_stage``), or a pretrained diffusers video-VAE
folder (``videogen.pretrained_diffusers``; its spatial tiles are the model's own, blended, not exact).
Exit code 0 when it ran, 2 when the VAE, the data or the options cannot be used or no clip could be
evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "reconstruct every clip of a shard set with a VAE: PSNR, SSIM, seconds per clip, colour agreement"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, metavar="VAE_EXPORT_OR_CKPT",
                        help="a VAE export folder, a checkpoint written by `videogen fit` on the VAE stage, or a "
                             "diffusers video-VAE folder (Wan, CogVideoX, LTX-Video, HunyuanVideo)")
    parser.add_argument("--data", required=True, metavar="SHARDS",
                        help="folder of *.tar shards (a glob, brace pattern or single shard also works)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.add_argument("--max-clips", type=int, default=None, metavar="N", help="stop after N evaluated clips")
    parser.add_argument("--max-frames", type=int, default=None, metavar="F",
                        help="use at most F frames of each clip (then trimmed to 1 + k*tc)")
    parser.add_argument("--chunk-frames", type=int, default=None, metavar="N",
                        help="encode N frames at a time (a multiple of the VAE's temporal compression tc) "
                             "and decode N / tc latent frames at a time; default: planned from --memory-budget")
    parser.add_argument("--tile", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="encode and decode in overlapping tiles of H x W pixels (multiples of sc); "
                             "default: planned from --memory-budget")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="PX",
                        help="overlap of neighbouring tiles in pixels (a multiple of sc; default: the VAE's "
                             "receptive field, at which tiled equals untiled)")
    parser.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                        help="GB the VAE's activations may use when chunks and tiles are planned (default: half "
                             "the free CUDA memory, or a tenth of the RAM on CPU)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"],
                        help="video decoder, as data.init_args.clips.decoder (default auto: decord, PyAV fallback)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    import torch

    from videogen.data.manifest import DatasetManifest
    from videogen.data.shards import expand_urls, is_remote
    from videogen.evaluation.reconstruction import (EvalError, check_options, evaluate_vae, format_vae_report,
                                                    vae_and_stats)

    def fail(message: str) -> int:
        print(f"videogen eval-vae: error: {message}", file=sys.stderr)
        return 2

    tile = tuple(args.tile) if args.tile else None
    if not is_remote(args.data) and not any(c in args.data for c in "*?[{") and not Path(args.data).exists():
        return fail(f"--data {args.data}: no such folder; give the folder that holds the *.tar shards")
    try:
        urls = expand_urls(args.data)
    except (FileNotFoundError, ValueError) as e:
        return fail(f"--data {args.data}: {e}")
    try:
        vae, _ = vae_and_stats(args.vae)
        check_options(vae, args.chunk_frames, tile, args.tile_overlap, args.max_frames, args.max_clips,
                      args.memory_budget)
    except EvalError as e:
        return fail(str(e))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder = Path(args.data)
    try:  # the manifest only sizes the progress bar
        manifest = DatasetManifest.find(folder) if folder.is_dir() else None
    except Exception:
        manifest = None
    report = {"vae": str(args.vae), "data": str(args.data), "device": str(device),
              "num_parameters": sum(p.numel() for p in vae.parameters()),
              "temporal_compression": vae.temporal_compression, "spatial_compression": vae.spatial_compression,
              "max_frames": args.max_frames, "chunk_frames": args.chunk_frames,
              "tile": list(tile) if tile else None, "tile_overlap": args.tile_overlap,
              "memory_budget_gb": args.memory_budget}
    report.update(evaluate_vae(vae, urls, device, args.decoder, args.max_clips, args.max_frames, args.chunk_frames,
                               tile, args.tile_overlap, progress=not args.no_progress,
                               total=manifest.num_samples if manifest else None, memory_budget=args.memory_budget))
    if report["num_clips"] == 0:
        reasons = sorted({s["reason"] for s in report["skipped"]})
        return fail(f"--data {args.data}: no clip could be evaluated ({len(urls)} shards, {report['num_skipped']} "
                    f"skipped: {', '.join(reasons) or 'no samples found'}); run `videogen inspect {args.data}`")
    print(json.dumps(report, ensure_ascii=False) if args.json else format_vae_report(report))
    return 0
