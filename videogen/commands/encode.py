"""``videogen encode --vae VAE --data SHARDS --out DIR``: the latent cache.

Parses the options and runs :func:`videogen.pipelines.encode.encode` (a predict job of the same shape
as ``videogen recaption``; how clips are shaped, what is stored and recorded is described there).
"""

from __future__ import annotations

import argparse

HELP = "encode shards with a trained VAE into a latent cache (resumable, one shard per input shard)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, help="the VAE export folder (or a VAE checkpoint), or a diffusers "
                        "video-VAE folder (Wan, CogVideoX, LTX-Video, HunyuanVideo) or a `videogen vae-stats` file")
    parser.add_argument("--data", required=True, nargs="+", help="input shards: folder, glob, brace pattern or URLs")
    parser.add_argument("--out", required=True, help="output folder for the latent shards")
    parser.add_argument("--max-area", type=int, default=256 * 256, help="pixels per frame at most (default 65536)")
    parser.add_argument("--max-frames", type=int, default=33, help="frames per clip at most (default 33)")
    parser.add_argument("--size-multiple", type=int, default=None,
                        help="sides are multiples of this (default: 2 x the VAE's spatial compression)")
    parser.add_argument("--frame-stride", type=int, default=1, help="take every n-th frame (default 1)")
    parser.add_argument("--buckets-from", default=None, metavar="CONFIG",
                        help="encode at the bucket table (and frame_stride / target_fps / span_clip) of this "
                             "training config's data section, e.g. configs/dit/quickstart.yaml")
    parser.add_argument("--chunk-frames", type=int, default=None,
                        help="encode long clips in chunks of this many frames (default: planned from --memory-budget)")
    parser.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                        help="GB the VAE's activations may use; chunks and tiles are planned from it (default: "
                             "half the free CUDA memory, or a tenth of the RAM on CPU)")
    parser.add_argument("--text-encoder", default=None, metavar="DIR_OR_DEFAULT",
                        help="also store caption embeddings made by this local text-encoder folder ('default': "
                             "the quickstart's all-MiniLM-L6-v2), so the DiT trains without the encoder")
    parser.add_argument("--text-max-length", type=int, default=64,
                        help="tokens per caption with --text-encoder (the DiT's text_max_length; default 64)")
    parser.add_argument("--text-layer", type=int, default=-1,
                        help="the text encoder's hidden state stored with --text-encoder (the DiT's text_layer: -1 "
                             "the last, -2 the penultimate; default -1)")
    parser.add_argument("--num-workers", type=int, default=1, help="dataloader workers per process (default 1)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--precision", default="32-true")
    parser.epilog = ("--data.KEY=VALUE overrides a setting of the --buckets-from config's data section, as for "
                     "videogen fit (e.g. --data.clips.span_clip=true).")


TAKES_OVERRIDES = ("--data.", "buckets_from")  # checked by videogen.cli.run_extra


def run(args: argparse.Namespace) -> int:
    overrides = list(getattr(args, "overrides", []))
    from videogen.pipelines.encode import buckets_from, encode

    try:
        buckets = buckets_from(args.buckets_from, overrides, args.data) if args.buckets_from else None
        out = encode(args.vae, args.data, args.out, max_area=args.max_area, max_frames=args.max_frames,
                     size_multiple=args.size_multiple, frame_stride=args.frame_stride, buckets=buckets,
                     chunk_frames=args.chunk_frames, memory_budget=args.memory_budget,
                     text_encoder=args.text_encoder, text_max_length=args.text_max_length,
                     text_layer=args.text_layer,
                     num_workers=args.num_workers, accelerator=args.accelerator, devices=args.devices,
                     num_nodes=args.num_nodes, precision=args.precision)
    except (FileNotFoundError, ValueError, TypeError, OSError) as e:
        print(f"videogen encode: {e}")
        return 2
    from videogen.data.manifest import DatasetManifest

    m = DatasetManifest.load(out)
    print(f"{out}: {m.num_samples} latent clips in {len(m.shards)} shards"
          + (f"; skipped: {sum(s.get('count', 1) for s in m.skipped)}" if m.skipped else ""))
    return 0
