"""``videogen vae-stats --vae DIR --data SHARDS --out STATS.json``: measure a pretrained VAE's latent
statistics on your own data.

A diffusers video VAE comes with the normalisation its pipeline uses (``latents_mean`` /
``latents_std`` or ``scaling_factor`` in its config, ``videogen.pretrained_diffusers.config_stats``).
On footage unlike its training data the latents may sit elsewhere; this command encodes the clips
of a shard set (each trimmed as ``eval-vae`` trims it: the first ``1 + k * frame_multiple`` frames,
at most ``--max-frames``, sides cut to multiples of sc, centred), takes the posterior mean and writes
the exact per-channel mean and standard deviation over every latent element to ``--out``, with the
VAE folder and its content sha256. Give that file as ``--vae`` (to ``fit``, ``encode``, ``eval-vae``)
and its measured statistics are used instead of the config's; stats measured with other weights
are refused. The file is written beside the weights folder, never inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HELP = "measure a diffusers VAE's per-channel latent mean/std on a shard set (a file --vae accepts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, metavar="DIFFUSERS_VAE_DIR",
                        help="a diffusers video-VAE folder (config.json + safetensors)")
    parser.add_argument("--data", required=True, metavar="SHARDS", help="folder of *.tar shards (or a glob)")
    parser.add_argument("--out", required=True, metavar="STATS_JSON", help="the statistics file to write (.json)")
    parser.add_argument("--max-clips", type=int, default=None, metavar="N", help="stop after N clips")
    parser.add_argument("--max-frames", type=int, default=33, metavar="F", help="frames per clip at most (default 33)")
    parser.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                        help="GB the VAE's activations may use (tiles are planned from it)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--decoder", default="auto", choices=["auto", "decord", "pyav"], help="video decoder")


def measure(vae_dir: str | Path, data: str, out: str | Path, max_clips: int | None = None, max_frames: int = 33,
            memory_budget: float | None = None, device: str | None = None, decoder_name: str = "auto") -> dict:
    """Measure and write the statistics file; returns what was written."""
    import torch

    from videogen import pretrained_diffusers as hf
    from videogen.data.decode import DecodeError, decoder_for, make_decoder
    from videogen.data.shards import expand_urls
    from videogen.data.stages import Skips
    from videogen.encoding import encode_latents
    from videogen.evaluation.reconstruction import frames_to_video, iter_records, trimmed_shape
    from videogen.models.latent_grid import LatentGrid
    from videogen.encoding import LatentMoments

    vae_dir, out = Path(vae_dir).resolve(), Path(out).resolve()
    if not hf.is_diffusers_folder(vae_dir):
        raise ValueError(f"--vae {vae_dir}: not a diffusers VAE folder (config.json + safetensors); a videogen VAE "
                         "export already carries statistics measured on its training data in stats.json")
    if out.suffix != ".json":
        raise ValueError(f"--out {out}: give a .json file name (that is what --vae recognises)")
    if out.is_relative_to(vae_dir):
        raise ValueError(f"--out {out}: inside the VAE's weights folder; write it beside, e.g. "
                         f"{vae_dir.parent / (vae_dir.name + '.stats.json')}")
    if max_frames < 1 or (max_clips is not None and max_clips < 1):
        raise ValueError("--max-frames and --max-clips must be at least 1")
    export = hf.load_diffusers_vae(vae_dir)
    vae = export.module
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae.to(dev)
    decoder, skips = make_decoder(decoder_name), Skips(max_logged=0, keep=True)
    moments, grid = LatentMoments(vae.latent_channels), LatentGrid.of_vae(vae)
    for record in iter_records(expand_urls(data), decoder, skips):
        if max_clips is not None and moments.clips >= max_clips:
            break
        shape = trimmed_shape(record.num_frames, record.height, record.width, grid, max_frames)
        if shape is None:
            continue
        t, h, w, top, left = shape
        try:
            frames = decoder_for(record.ext, decoder).decode(record.media, list(range(t)))
        except DecodeError:
            continue
        if frames.ndim != 4 or frames.shape[0] != t or frames.shape[1] < top + h or frames.shape[2] < left + w:
            continue
        x = frames_to_video(frames[:, top: top + h, left: left + w], dev)
        moments.add(encode_latents(vae, x, memory_budget_gb=memory_budget))
    if moments.clips == 0:
        raise ValueError(f"--data {data}: no clip could be encoded; run `videogen inspect {data}`")
    mean, var = moments.result()
    record = {"format": hf.STATS_FORMAT, "vae": str(vae_dir), "weights_sha256": export.manifest["weights_sha256"],
              "class_name": vae.class_name, "latent_channels": vae.latent_channels,
              "temporal_compression": vae.temporal_compression, "spatial_compression": vae.spatial_compression,
              "latent_mean": mean.tolist(), "latent_std": var.clamp_min(1e-12).sqrt().tolist(),
              "measured_clips": moments.clips, "measured_elements": moments.count, "data": str(data),
              "max_frames": max_frames, "config_stats": {k: export.stats[k] for k in ("latent_mean", "latent_std")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out)
    return record


def run(args: argparse.Namespace) -> int:
    try:
        record = measure(args.vae, args.data, args.out, args.max_clips, args.max_frames, args.memory_budget,
                         args.device, args.decoder)
    except (FileNotFoundError, ValueError) as e:
        print(f"videogen vae-stats: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: per-channel latent mean/std of {record['class_name']} over {record['measured_clips']} clips "
          f"({record['measured_elements']} latent positions); give it as --vae to use them")
    return 0
