"""The one encode path: frozen stage-1 VAE -> latents, for the latent cache and for on-the-fly DiT
training alike, so the two cannot drift apart.

Latents are stored and passed raw (the posterior mean, ``(C, t, h, w)``); the DiT normalises them
per channel with the VAE export's ``stats.json`` (:func:`normalize_latents`). A latent cache
records the identity of the VAE that wrote it (:func:`vae_identity`); :func:`check_cache_identity`
refuses a cache written by another VAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from videogen.data.manifest import DatasetManifest
from videogen.models.vae import VideoAutoencoder
from videogen.pretrained import Export, load_stage


def load_vae(path: str | Path) -> Export:
    """A frozen VAE from an export folder or a VAE checkpoint (``--vae EXPORT_OR_CKPT``)."""
    export = load_stage(path, expect=VideoAutoencoder)
    export.module.requires_grad_(False).eval()
    return export


def vae_identity(export: Export) -> dict[str, Any]:
    """What makes latents comparable: the exact weights and the normalisation and compression."""
    s = export.stats
    return {"weights_sha256": export.manifest["weights_sha256"], "class_path": export.config["class_path"],
            "source": str(export.folder), "latent_channels": s["latent_channels"],
            "temporal_compression": s["temporal_compression"], "spatial_compression": s["spatial_compression"],
            "latent_mean": s["latent_mean"], "latent_std": s["latent_std"]}


@torch.no_grad()
def encode_latents(vae: VideoAutoencoder, video: torch.Tensor, chunk_frames: int | None = None,
                   tile: tuple[int, int] | None = None) -> torch.Tensor:
    """Videos ``(B, 3, T, H, W)`` in [-1, 1] -> raw latents ``(B, C, t, h, w)`` (posterior mean)."""
    return vae.encode(video, chunk_frames=chunk_frames, tile=tile).mode()


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


def check_cache_identity(cache: str | Path, export: Export) -> None:
    """Refuse a latent cache that another VAE wrote (or that records no VAE at all)."""
    manifest = DatasetManifest.find(cache)
    if manifest is None:
        raise FileNotFoundError(f"{cache}: no dataset.json; a latent cache is written by `videogen encode`")
    recorded = manifest.created_by.get("vae")
    if not recorded:
        raise ValueError(f"{cache}: its dataset.json names no VAE; it is not a latent cache from `videogen encode`")
    mine = vae_identity(export)
    if recorded.get("weights_sha256") != mine["weights_sha256"]:
        raise ValueError(
            f"{cache}: latents were written by the VAE at {recorded.get('source')} (weights sha256 "
            f"{str(recorded.get('weights_sha256'))[:12]}), but this run uses {mine['source']} "
            f"({mine['weights_sha256'][:12]}). Re-run `videogen encode --vae {mine['source']}` or point at the "
            "VAE that made the cache.")


def latent_cache_folders(shards: str | list[str] | None) -> list[Path]:
    """The local folders of these shards whose ``dataset.json`` says `videogen encode` wrote them."""
    if not shards:
        return []
    from videogen.data.shards import expand_urls

    local = {Path(u).parent for u in expand_urls(shards) if "://" not in u and not u.startswith("pipe:")}
    return [f for f in sorted(local) if (m := DatasetManifest.find(f)) is not None and m.created_by.get("vae")]
