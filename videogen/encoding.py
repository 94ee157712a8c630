"""The one encode path: frozen stage-1 VAE -> latents, for the latent cache and for on-the-fly DiT
training alike, so the two cannot drift apart.

Latents are stored and passed raw (the posterior mean, ``(C, t, h, w)``); the DiT normalises them
per channel with the VAE export's ``stats.json`` (:func:`normalize_latents`). The VAE is ours or a
pretrained diffusers one (``videogen.pretrained_diffusers``) behind the same interface. A latent cache
records the identity of the VAE that wrote it (:func:`vae_identity`), and so does every stage trained on
latents; :func:`check_same_vae` is the one check that a VAE is the one such a record names
(:func:`check_cache_identity` applies it to a latent cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from videogen.data.manifest import DatasetManifest
from videogen.memory import bytes_per_element, inference_autocast, memory_budget
from videogen.models.vae import VideoAutoencoder
from videogen.models.vae.diffusers_vae import DiffusersVideoVAE
from videogen.models.vae.receptive import TilePlan, default_tile_overlap, plan_tiles
from videogen.pretrained import Export, load_stage


def load_vae(path: str | Path) -> Export:
    """A frozen VAE for ``--vae``: an export folder or a VAE checkpoint of ours, a diffusers video-VAE
    folder (config.json + safetensors: Wan, CogVideoX, LTX-Video, HunyuanVideo), or a statistics file
    that ``videogen vae-stats`` measured for one (its measured statistics replace the config's)."""
    from videogen import pretrained_diffusers as hf

    if hf.is_diffusers_folder(path):
        export = hf.load_diffusers_vae(path)
    elif hf.is_measured_stats(path):
        export = hf.load_measured_stats(path)
    else:
        export = load_stage(path, expect=VideoAutoencoder)
    export.module.requires_grad_(False).eval()
    return export


def default_overlap(vae: torch.nn.Module) -> int:
    """The tile overlap (pixels) a VAE tiles with when none is given: for ours the exact one
    (:func:`~videogen.models.vae.receptive.default_tile_overlap`), for a diffusers VAE its blend width."""
    if isinstance(vae, DiffusersVideoVAE):
        return vae.default_tile_overlap
    return default_tile_overlap(vae)


def vae_identity(export: Export) -> dict[str, Any]:
    """What makes latents comparable: the exact weights and the normalisation and compression."""
    s = export.stats
    return {"weights_sha256": export.manifest["weights_sha256"], "class_path": export.config["class_path"],
            "source": str(export.folder), "latent_channels": s["latent_channels"],
            "temporal_compression": s["temporal_compression"], "spatial_compression": s["spatial_compression"],
            "latent_mean": s["latent_mean"], "latent_std": s["latent_std"]}


def plan_for(vae: VideoAutoencoder, shape: tuple[int, ...], device: torch.device | str,
             memory_budget_gb: float | None = None) -> TilePlan:
    """Chunks and tiles for a video batch of ``shape`` (B, C, T, H, W) pixels on ``device`` within its
    memory budget (:func:`videogen.memory.memory_budget`)."""
    b, _, t, h, w = shape
    budget = memory_budget(device, memory_budget_gb) // max(1, b)
    if isinstance(vae, DiffusersVideoVAE):
        return vae.plan(t, h, w, budget, bytes_per_element(device))
    return plan_tiles(vae, t, h, w, budget, bytes_per_element(device))


@torch.no_grad()
def encode_latents(vae: VideoAutoencoder, video: torch.Tensor, chunk_frames: int | None = None,
                   tile: tuple[int, int] | None = None, memory_budget_gb: float | None = None) -> torch.Tensor:
    """Videos ``(B, 3, T, H, W)`` in [-1, 1] -> raw fp32 latents ``(B, C, t, h, w)`` (posterior mean).

    Without ``chunk_frames`` and ``tile`` they are planned from the memory budget (exact: chunking is
    exact and the default tile overlap covers the receptive field); bf16 autocast on CUDA.
    """
    overlap = None
    if chunk_frames is None and tile is None:
        plan = plan_for(vae, tuple(video.shape), video.device, memory_budget_gb)
        chunk_frames, tile, overlap = plan.chunk_frames, plan.tile, plan.tile_overlap
    with inference_autocast(video.device):
        return vae.encode(video, chunk_frames=chunk_frames, tile=tile, tile_overlap=overlap).mode().float()


def decode_plan(vae: VideoAutoencoder, z: torch.Tensor, memory_budget_gb: float | None = None) -> TilePlan:
    """:func:`plan_for` the video that latents ``z`` (B, C, t, h, w) decode to."""
    b, _, t, h, w = z.shape
    sc = vae.spatial_compression
    return plan_for(vae, (b, 3, vae.num_frames(t), h * sc, w * sc), z.device, memory_budget_gb)


@torch.no_grad()
def decode_latents(vae: VideoAutoencoder, z: torch.Tensor, memory_budget_gb: float | None = None) -> torch.Tensor:
    """Raw latents ``(B, C, t, h, w)`` -> fp32 videos ``(B, 3, T, H, W)`` clamped to [-1, 1], chunked and
    tiled from the memory budget, bf16 autocast on CUDA."""
    plan = decode_plan(vae, z, memory_budget_gb)
    with inference_autocast(z.device):
        out, filled = None, 0
        for chunk in vae.decode_chunks(z, plan.latent_chunk_frames(vae.temporal_compression), plan.tile,
                                       plan.tile_overlap):
            if out is None:
                out = torch.empty((*chunk.shape[:2], vae.num_frames(z.shape[2]), *chunk.shape[3:]), device=z.device)
            out[:, :, filled: filled + chunk.shape[2]] = chunk.clamp(-1, 1)
            filled += chunk.shape[2]
    return out


def _moments(stats: dict[str, Any], z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (1, C, 1, 1, 1) tensors on z's device and dtype."""
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(stats["latent_mean"], dtype=z.dtype, device=z.device).view(shape)
    return mean, torch.tensor(stats["latent_std"], dtype=z.dtype, device=z.device).view(shape)


def normalize_latents(z: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
    """Raw latents ``(B, C, t, h, w)`` -> unit scale per channel, with the VAE's measured statistics."""
    mean, std = _moments(stats, z)
    return (z - mean) / std


def denormalize_latents(z: torch.Tensor, stats: dict[str, Any]) -> torch.Tensor:
    mean, std = _moments(stats, z)
    return z * std + mean


def check_same_vae(recorded: dict[str, Any] | None, export: Export, made: str, remedy: str) -> None:
    """Refuse the VAE ``export`` when its weights are not those of ``recorded`` (a :func:`vae_identity`):
    "this is not the VAE it was trained with". ``made`` says what the recorded VAE made ("the DiT at
    x was trained with"), ``remedy`` what to do; the error names both VAEs and their sha256 prefixes."""
    recorded = recorded or {}
    mine = export.manifest["weights_sha256"]
    if recorded.get("weights_sha256") != mine:
        raise ValueError(
            f"{made} the VAE at {recorded.get('source')} (weights sha256 {str(recorded.get('weights_sha256'))[:12]}), "
            f"but this run uses the VAE at {export.folder} ({mine[:12]}): {remedy}")


def check_cache_identity(cache: str | Path, export: Export) -> None:
    """Refuse a latent cache that another VAE wrote (or that records no VAE at all)."""
    manifest = DatasetManifest.find(cache)
    if manifest is None:
        raise FileNotFoundError(f"{cache}: no dataset.json; a latent cache is written by `videogen encode`")
    recorded = manifest.created_by.get("vae")
    if not recorded:
        raise ValueError(f"{cache}: its dataset.json names no VAE; it is not a latent cache from `videogen encode`")
    check_same_vae(recorded, export, f"{cache}: latents were written by",
                   f"re-run `videogen encode --vae {export.folder}` or point at the VAE that made the cache")


def latent_cache_folders(shards: str | list[str] | None) -> list[Path]:
    """The local folders of these shards whose ``dataset.json`` says `videogen encode` wrote them."""
    if not shards:
        return []
    from videogen.data.manifest import manifest_for
    from videogen.data.shards import expand_urls, local_path

    local = {Path(manifest_for(u)).parent for u in expand_urls(shards) if local_path(u) is not None}
    return [f for f in sorted(local) if (m := DatasetManifest.find(f)) is not None and m.created_by.get("vae")]


class LatentMoments:
    """Exact per-channel mean and variance of latents (B, C, t, h, w), accumulated in float64."""

    def __init__(self, channels: int) -> None:
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sq = torch.zeros(channels, dtype=torch.float64)
        self.count, self.clips = 0, 0

    def add(self, z: torch.Tensor) -> None:
        zc = z.detach().double().transpose(0, 1).flatten(1).cpu()  # c (b t h w)
        self.sum += zc.sum(1)
        self.sq += zc.pow(2).sum(1)
        self.count += zc.shape[1]
        self.clips += z.shape[0]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.sum / self.count
        return mean.float(), (self.sq / self.count - mean.pow(2)).clamp_min(0).float()
