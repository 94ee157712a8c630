"""How well a VAE reconstructs a shard set (``videogen eval-vae --vae VAE --data SHARDS`` prints it).

Every clip of the set is read once, in shard order, through the loader's own stages
(``read_tar -> group_samples -> parse``) and decoded at its own resolution and length, trimmed to
what the VAE accepts: the first ``1 + k*tc`` frames (the largest such count <= min(num_frames,
--max-frames)) and a centred crop of H and W to multiples of sc. The clip is encoded, its
posterior's mode decoded and compared with the input chunk by chunk (the reconstruction is never
held whole in float). Chunks and tiles are planned from the memory budget (``--memory-budget``,
default half the free CUDA memory or a tenth of the RAM; see ``videogen.memory``) unless
``--chunk-frames`` / ``--tile`` are given; the tile overlap defaults to the one at which tiling is
exact (``videogen.models.vae.receptive``); bf16 autocast on CUDA. Reported:

* mean PSNR and SSIM over clips (``psnr`` / ``ssim`` below, the VAE stage's validation metrics too;
  the reconstruction is clamped to [-1, 1] as in validation);
* encode and decode seconds per clip (wall clock, CUDA synchronised);
* for synthetic clips (json ``attributes.colour``): the colour agreement, the fraction of clips
  whose reconstruction the synthetic set's pixel judge (``videogen.evaluation.judge.judge_clip``)
  calls by the json's colour, and the same for the trimmed originals as a reference;
* clips that could not be used (undecodable, smaller than one latent pixel), with shard and key.

The VAE is what ``--vae`` takes (:func:`vae_and_stats`, ``videogen.encoding.load_vae``); a problem with
the inputs is an :class:`EvalError` naming the option.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from videogen.models.latent_grid import LatentGrid


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of videos in [-1, 1]: (B,)."""
    import torch

    mse = ((x - y) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over frames of videos (B, C, T, H, W) in [-1, 1]: (B,)."""
    from einops import rearrange
    from torchmetrics.functional.image import structural_similarity_index_measure

    b = x.shape[0]
    frames = lambda v: rearrange((v.clamp(-1, 1) + 1) / 2, "b c t h w -> (b t) c h w")  # noqa: E731
    per_frame = structural_similarity_index_measure(frames(x), frames(y), data_range=1.0, reduction="none")
    return per_frame.view(b, -1).mean(1)


class EvalError(ValueError):
    """A problem with the command's inputs; the message names the path or option and what to do."""


# ---------------------------------------------------------------------------------------------
# the VAE


def vae_and_stats(path: str | Path):
    """``(VAE in eval mode, stats dict)`` from what ``--vae`` takes (``videogen.encoding.load_vae``): an
    export folder, a VAE checkpoint (read with ``weights_only=True``), a diffusers VAE folder or a
    ``videogen vae-stats`` file."""
    from videogen.encoding import load_vae

    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path}: no such VAE export folder or checkpoint; give the folder written by "
                        "`videogen export` (or `videogen fit`), a VAE checkpoint (.ckpt) or a diffusers VAE folder")
    try:
        export = load_vae(path)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise EvalError(f"--vae {e}") from e
    return export.module.eval(), export.stats


def check_options(vae, chunk_frames: int | None, tile: tuple[int, int] | None, tile_overlap: int | None,
                  max_frames: int | None, max_clips: int | None, memory_budget: float | None = None) -> None:
    """Raise :class:`EvalError` naming the option when the VAE cannot run with it."""
    from videogen.encoding import default_overlap as default_tile_overlap

    tc, sc = vae.temporal_compression, vae.spatial_compression
    tile_overlap = default_tile_overlap(vae) if tile_overlap is None else tile_overlap
    if memory_budget is not None and memory_budget <= 0:
        raise EvalError(f"--memory-budget {memory_budget}: must be a positive number of GB, e.g. 4")
    if chunk_frames is not None and (chunk_frames <= 0 or chunk_frames % tc):
        raise EvalError(f"--chunk-frames {chunk_frames}: must be a positive multiple of the VAE's temporal "
                        f"compression {tc}, e.g. {4 * tc}")
    if tile is not None and (any(s % sc or s <= 0 for s in tile) or tile_overlap % sc or tile_overlap < 0
                             or tile_overlap >= min(tile)):
        raise EvalError(f"--tile {tile[0]} {tile[1]} --tile-overlap {tile_overlap}: tiles and overlap must be "
                        f"multiples of the VAE's spatial compression {sc} with 0 <= overlap < tile, "
                        f"e.g. --tile {2 * tile_overlap + sc} {2 * tile_overlap + sc} (the default overlap is "
                        f"{default_tile_overlap(vae)})")
    if max_frames is not None and max_frames < 1:
        raise EvalError(f"--max-frames {max_frames}: must be at least 1")
    if max_clips is not None and max_clips < 1:
        raise EvalError(f"--max-clips {max_clips}: must be at least 1")


# ---------------------------------------------------------------------------------------------
# one clip


def trimmed_shape(num_frames: int, height: int, width: int, grid: LatentGrid,
                  max_frames: int | None = None) -> tuple[int, int, int, int, int] | None:
    """``(frames, height, width, top, left)`` the VAE of ``grid`` accepts, or None when not even one frame
    of one latent pixel fits: frames = the largest ``1 + k*frame_multiple <= min(num_frames, max_frames)``,
    H and W cut down to multiples of the spatial compression, the crop centred."""
    n = min(num_frames, max_frames) if max_frames is not None else num_frames
    sc = grid.spatial_compression
    h, w = height - height % sc, width - width % sc
    if n < 1 or h < sc or w < sc:
        return None
    return grid.usable_frames(n), h, w, (height - h) // 2, (width - w) // 2


@dataclass
class ClipResult:
    shard: str
    key: str
    frames: int
    height: int
    width: int
    psnr: float
    ssim: float
    encode_seconds: float
    decode_seconds: float
    chunk_frames: int | None = None     # the plan the clip ran with (planned or given)
    tile: list[int] | None = None
    colour: str | None = None           # the json's attributes.colour (synthetic clips only)
    colour_original: str | None = None  # what judge_clip says about the trimmed input
    colour_reconstruction: str | None = None  # ... and about the reconstruction


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Reconstruction:
    psnr: float
    ssim: float
    encode_seconds: float
    decode_seconds: float
    chunk_frames: int | None
    tile: tuple[int, int] | None
    frames: Any = None  # (T, H, W, 3) uint8 of the reconstruction, when asked for


def reconstruct(vae, video, chunk_frames: int | None = None, tile: tuple[int, int] | None = None,
                tile_overlap: int | None = None, memory_budget: float | None = None,
                keep_frames: bool = False) -> Reconstruction:
    """Encode and decode (1, C, T, H, W) in [-1, 1], comparing chunk by chunk as the decoder yields them.

    PSNR is over the whole clip (summed squared error / all pixels), SSIM the mean over frames, both on
    the reconstruction clamped to [-1, 1] (the validation metrics). Chunks and
    tiles come from the memory budget unless ``chunk_frames`` or ``tile`` is given.
    """
    import torch

    from videogen.encoding import plan_for
    from videogen.memory import inference_autocast

    tc = vae.temporal_compression
    if chunk_frames is None and tile is None:
        plan = plan_for(vae, tuple(video.shape), video.device, memory_budget)
        chunk_frames, tile, tile_overlap = plan.chunk_frames, plan.tile, plan.tile_overlap
    squared, ssim_sum, filled, kept = 0.0, 0.0, 0, []
    with torch.inference_mode(), inference_autocast(video.device):
        _sync(video.device)
        began = time.perf_counter()
        z = vae.encode(video, chunk_frames=chunk_frames, tile=tile, tile_overlap=tile_overlap).mode()
        _sync(video.device)
        encoded = time.perf_counter()
        latent_chunk = None if chunk_frames is None else chunk_frames // tc
        for chunk in vae.decode_chunks(z, latent_chunk, tile, tile_overlap):  # (1, C, frames, H, W)
            rec = chunk.float().clamp_(-1, 1)
            x = video[:, :, filled: filled + rec.shape[2]]
            squared += ((x - rec) / 2).pow(2).sum(dtype=torch.float64).item()
            for f in range(0, rec.shape[2], SSIM_FRAMES):  # the SSIM filter maps at a few frames' size
                part = slice(f, f + SSIM_FRAMES)
                ssim_sum += float(ssim(x[:, :, part], rec[:, :, part])[0]) * rec[:, :, part].shape[2]
            if keep_frames:
                kept.append(video_to_frames(rec))
            filled += rec.shape[2]
            del chunk, rec
        _sync(video.device)
        decoded = time.perf_counter()
    import numpy as np

    mse = max(squared / video.numel(), 1e-10)
    return Reconstruction(float(-10 * np.log10(mse)), ssim_sum / filled, encoded - began, decoded - encoded,
                          chunk_frames, tile, np.concatenate(kept) if keep_frames else None)


SSIM_FRAMES = 4


def frames_to_video(frames, device):
    """(T, H, W, 3) uint8 -> (1, 3, T, H, W) float in [-1, 1]."""
    import torch

    x = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2).contiguous()  # uint8, then one float copy
    return x.unsqueeze(0).float().div_(127.5).sub_(1.0)


def video_to_frames(video):
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8 numpy (the rounding used for logged videos)."""
    from videogen.data.stages import to_uint8

    return to_uint8(video[0].cpu()).permute(0, 2, 3, 1).numpy()  # (T, C, H, W) -> (T, H, W, C)


def evaluate_record(record, vae, decoder, device, max_frames=None, chunk_frames=None, tile=None,
                    tile_overlap: int | None = None, memory_budget: float | None = None) -> ClipResult | str:
    """Evaluate one clip; a string is the reason it could not be used."""
    from videogen.data.decode import DecodeError, decoder_for

    shape = trimmed_shape(record.num_frames, record.height, record.width, LatentGrid.of_vae(vae), max_frames)
    if shape is None:
        return (f"too_small: {record.width}x{record.height}, {record.num_frames} frames is under one latent "
                f"pixel ({vae.spatial_compression} px)")
    t, h, w, top, left = shape
    try:
        frames = decoder_for(record.ext, decoder).decode(record.media, list(range(t)))  # (T, H, W, 3) uint8
    except DecodeError as e:
        return f"decode_error: {e}"
    if frames.ndim != 4 or frames.shape[0] != t or frames.shape[1] < top + h or frames.shape[2] < left + w:
        return (f"meta_mismatch: json says {record.width}x{record.height}, {record.num_frames} frames; decoded "
                f"{tuple(frames.shape)}; fix the json (run `videogen inspect` on the set)")
    frames = frames[:, top: top + h, left: left + w]
    attributes = record.meta.get("attributes")
    judged = isinstance(attributes, dict) and isinstance(attributes.get("colour"), str)
    x = frames_to_video(frames, device)
    rec = reconstruct(vae, x, chunk_frames, tile, tile_overlap, memory_budget, keep_frames=judged)
    del x
    result = ClipResult(Path(record.url).name, record.key, t, h, w, rec.psnr, rec.ssim, rec.encode_seconds,
                        rec.decode_seconds, rec.chunk_frames, list(rec.tile) if rec.tile else None)
    if judged:
        from videogen.evaluation.judge import judge_clip

        result.colour = attributes["colour"]
        result.colour_original = judge_clip(frames)["colour"]
        result.colour_reconstruction = judge_clip(rec.frames)["colour"]
    return result


# ---------------------------------------------------------------------------------------------
# the set


def iter_records(urls: list[str], decoder, skips) -> Iterator[Any]:
    from videogen.data import stages

    yield from stages.parse(stages.group_samples(stages.read_tar(urls, skips, 512 * 2**20)), skips, decoder,
                            require_caption=False)


def summarise(results: list[ClipResult]) -> dict[str, Any]:
    """Means over clips and the colour agreement (None when no clip has synthetic attributes)."""
    n = len(results)
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    judged = [r for r in results if r.colour is not None]
    agree = lambda field: mean([float(getattr(r, field) == r.colour) for r in judged])  # noqa: E731
    return {
        "num_clips": n,
        "psnr": mean([r.psnr for r in results]),
        "ssim": mean([r.ssim for r in results]),
        "encode_seconds_per_clip": mean([r.encode_seconds for r in results]),
        "decode_seconds_per_clip": mean([r.decode_seconds for r in results]),
        "frames_per_clip": mean([r.frames for r in results]),
        "num_colour_clips": len(judged),
        "colour_agreement": agree("colour_reconstruction"),
        "colour_agreement_original": agree("colour_original"),
    }


def evaluate_vae(vae, urls: list[str], device, decoder_name: str = "auto", max_clips: int | None = None,
                 max_frames: int | None = None, chunk_frames: int | None = None,
                 tile: tuple[int, int] | None = None, tile_overlap: int | None = None, progress: bool = True,
                 total: int | None = None, memory_budget: float | None = None) -> dict[str, Any]:
    """Evaluate the clips of ``urls`` in order: the summary plus ``clips`` and ``skipped`` lists."""
    from tqdm import tqdm

    from videogen.data.decode import make_decoder
    from videogen.data.stages import Skips

    decoder, skips = make_decoder(decoder_name), Skips(max_logged=0, keep=True)
    vae = vae.to(device).eval()
    results: list[ClipResult] = []
    if max_clips is not None and total is not None:
        total = min(total, max_clips)
    with tqdm(total=total, unit="clip", desc="eval-vae", file=sys.stderr, disable=not progress or None) as bar:
        for record in iter_records(urls, decoder, skips):
            if max_clips is not None and len(results) >= max_clips:
                break
            outcome = evaluate_record(record, vae, decoder, device, max_frames, chunk_frames, tile, tile_overlap,
                                      memory_budget)
            if isinstance(outcome, str):
                reason, _, detail = outcome.partition(": ")
                skips.add(reason, record.url, record.key, detail)
            else:
                results.append(outcome)
                bar.set_postfix(psnr=f"{outcome.psnr:.2f}")
            bar.update(1)
    return {**summarise(results), "num_skipped": len(skips.records), "skipped": skips.records,
            "clips": [asdict(r) for r in results]}


def format_vae_report(rep: dict[str, Any]) -> str:
    lines = [f"{rep['data']}: {rep['num_clips']} clips reconstructed by {rep['vae']} "
             f"({rep['num_skipped']} skipped) on {rep['device']}",
             f"  PSNR   {rep['psnr']:.2f} dB",
             f"  SSIM   {rep['ssim']:.4f}",
             f"  encode {rep['encode_seconds_per_clip']:.3f} s/clip, decode {rep['decode_seconds_per_clip']:.3f} "
             f"s/clip ({rep['frames_per_clip']:.1f} frames per clip)"]
    if rep["colour_agreement"] is None:
        lines.append("  colour agreement: - (no clip has synthetic attributes.colour)")
    else:
        lines.append(f"  colour agreement: reconstruction {rep['colour_agreement']:.3f}, original "
                     f"{rep['colour_agreement_original']:.3f} (of {rep['num_colour_clips']} synthetic clips)")
    for s in rep["skipped"]:
        lines.append(f"  skipped {s['shard']} {s['key'] or '(whole shard)'}: {s['reason']} {s['detail']}".rstrip())
    return "\n".join(lines)
