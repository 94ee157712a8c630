"""A pretrained diffusers video VAE behind the interface of :class:`VideoAutoencoder`.

:class:`DiffusersVideoVAE` wraps an ``AutoencoderKLWan``, ``AutoencoderKLCogVideoX``,
``AutoencoderKLLTXVideo`` or ``AutoencoderKLHunyuanVideo`` instance (built and loaded by
``videogen.pretrained_diffusers``; this module reads no file) and gives it what the callers of our
own VAE use: ``encode(x, chunk_frames, tile, tile_overlap)`` returning a posterior with ``mode()`` /
``sample()``, ``decode_chunks``, ``decode``, ``tail_decoder``, ``num_frames``,
``temporal_compression``, ``spatial_compression``, ``latent_channels`` and :meth:`plan` (the chunk
and tile plan for a memory budget).

Shapes: a video (B, 3, T, H, W) in [-1, 1] with T = 1 + k * tc (CogVideoX: 1 + k * 2 tc, see
``frame_multiple``) and H, W divisible by sc encodes to latents (B, latent_channels, 1 + (T - 1) // tc,
H / sc, W / sc).

Memory: spatial tiles use the model's own tiling (``enable_tiling``'s attributes, set per call:
seams are blended, so tiled is close to, not equal to, untiled). Time: Wan and CogVideoX already
run their causal encoder and decoder a few frames at a time with carried caches (exact, memory flat
in T), so ``chunk_frames`` changes nothing there; LTX-Video and HunyuanVideo run the whole clip at
once unless ``chunk_frames`` turns on their frame-wise tiling (overlapping chunks blended over one
latent frame: approximate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from videogen.models.vae.receptive import ACTIVATION_FACTOR, CONV_WORKSPACE, TilePlan, fitted_plan


@dataclass(frozen=True)
class Family:
    """What differs between the supported diffusers VAE classes."""

    name: str
    frames_in_flight: int | None  # pixel frames one step of the model's own time loop holds; None: the whole clip
    framewise: bool               # has frame-wise (temporal) tiling that chunk_frames drives
    odd_latent_frames: bool       # decodes 1 + (t - 1) tc frames only for an odd latent frame count t


FAMILIES = {
    "AutoencoderKLWan": Family("wan", frames_in_flight=6, framewise=False, odd_latent_frames=False),
    "AutoencoderKLCogVideoX": Family("cogvideox", frames_in_flight=10, framewise=False, odd_latent_frames=True),
    "AutoencoderKLLTXVideo": Family("ltx", frames_in_flight=None, framewise=True, odd_latent_frames=False),
    "AutoencoderKLHunyuanVideo": Family("hunyuan", frames_in_flight=None, framewise=True, odd_latent_frames=False),
}


def _compression(model: nn.Module) -> tuple[int, int, int, list[int]]:
    """(latent channels, temporal, spatial compression, channels per level) read off the model's config."""
    c, name = model.config, type(model).__name__
    if name == "AutoencoderKLWan":
        mult = list(c.dim_mult)
        return int(c.z_dim), int(c.scale_factor_temporal), int(c.scale_factor_spatial), [c.base_dim * m for m in mult]
    if name == "AutoencoderKLCogVideoX":
        ch = list(c.block_out_channels)
        return int(c.latent_channels), int(c.temporal_compression_ratio), 2 ** (len(ch) - 1), ch
    if name == "AutoencoderKLLTXVideo":
        return (int(c.latent_channels), int(model.temporal_compression_ratio), int(model.spatial_compression_ratio),
                list(c.block_out_channels))
    return (int(c.latent_channels), int(c.temporal_compression_ratio), int(c.spatial_compression_ratio),
            list(c.block_out_channels))


class DiffusersVideoVAE(nn.Module):
    """A diffusers video VAE (one of :data:`FAMILIES`) with the interface of ``VideoAutoencoder``.

    Args:
        model: the diffusers autoencoder, weights loaded.
    """

    in_channels = 3

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        name = type(model).__name__
        if name not in FAMILIES:
            raise TypeError(f"DiffusersVideoVAE: {name} is not a supported video VAE ({', '.join(FAMILIES)})")
        self.model = model
        self.family = FAMILIES[name]
        self.class_name = name
        self.latent_channels, self.temporal_compression, self.spatial_compression, self._channels = _compression(model)
        tc = self.temporal_compression
        self.frame_multiple = 2 * tc if self.family.odd_latent_frames else tc  # T = 1 + k * frame_multiple
        self.default_tile_overlap = max(64, 2 * self.spatial_compression)  # pixels, as diffusers' defaults

    # ---- shapes and checks -------------------------------------------------------------------

    def num_frames(self, num_latent_frames: int) -> int:
        return 1 + (num_latent_frames - 1) * self.temporal_compression

    def _check_video(self, x: torch.Tensor) -> None:
        fm, sc = self.frame_multiple, self.spatial_compression
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.class_name}.encode: expected a video (B, 3, T, H, W), got shape {tuple(x.shape)}; "
                             "an image is a 1-frame video: add the time axis with x.unsqueeze(2)")
        t, h, w = x.shape[2:]
        if (t - 1) % fm:
            lower = t - (t - 1) % fm
            raise ValueError(f"{self.class_name} encodes 1 + k*{fm} frames (1, {1 + fm}, {1 + 2 * fm}, ...), got T={t}: "
                             f"trim the clip to {lower} frames or pad it to {lower + fm} (set the data's num_frames "
                             f"to 1 + k*{fm})")
        if h % sc or w % sc:
            raise ValueError(f"{self.class_name} needs H and W divisible by {sc}, got H={h}, W={w}: crop or resize "
                             f"to e.g. {max(sc, h - h % sc)}x{max(sc, w - w % sc)}")

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"{self.class_name}.decode: expected latents (B, {self.latent_channels}, t, h, w), got "
                             f"shape {tuple(z.shape)}")
        if self.family.odd_latent_frames and z.shape[2] % 2 == 0:
            raise ValueError(f"{self.class_name}.decode: {z.shape[2]} latent frames; this VAE decodes an odd number "
                             f"(1 + k*2) only: clips of 1 + k*{self.frame_multiple} frames")

    def _check_tiling(self, tile: tuple[int, int] | None, overlap: int) -> None:
        sc = self.spatial_compression
        if tile is not None and (any(s % sc or s <= 0 for s in (*tile,)) or overlap % sc or overlap < 0
                                 or overlap >= min(tile)):
            raise ValueError(f"{self.class_name}: tile={tile}, tile_overlap={overlap} (pixels) must be multiples of "
                             f"the spatial compression {sc} with 0 <= tile_overlap < tile, e.g. tile_overlap="
                             f"{self.default_tile_overlap} and tile=({4 * self.default_tile_overlap}, "
                             f"{4 * self.default_tile_overlap})")

    # ---- the model's own tiling, set for each call ------------------------------------------

    def _configure(self, chunk_frames: int | None, tile: tuple[int, int] | None, overlap: int | None) -> None:
        """Set the model's tiling attributes: spatial tiles of ``tile`` pixels overlapping by ``overlap``,
        frame-wise chunks of ``chunk_frames`` pixel frames (LTX, Hunyuan); None: off."""
        m, tc = self.model, self.temporal_compression
        overlap = self.default_tile_overlap if overlap is None else overlap
        self._check_tiling(tile, overlap)
        m.use_slicing = False
        m.use_tiling = tile is not None
        if tile is not None:
            m.tile_sample_min_height, m.tile_sample_min_width = tile
            if self.family.name == "cogvideox":
                sc = self.spatial_compression
                m.tile_latent_min_height, m.tile_latent_min_width = tile[0] // sc, tile[1] // sc
                m.tile_overlap_factor_height, m.tile_overlap_factor_width = overlap / tile[0], overlap / tile[1]
            else:
                m.tile_sample_stride_height, m.tile_sample_stride_width = tile[0] - overlap, tile[1] - overlap
        if self.family.framewise:
            if chunk_frames is not None and (chunk_frames < 2 * tc or chunk_frames % tc):
                raise ValueError(f"{self.class_name}: chunk_frames={chunk_frames} must be a multiple of the temporal "
                                 f"compression {tc} and at least {2 * tc} (chunks overlap by {tc} frames)")
            m.use_framewise_encoding = m.use_framewise_decoding = chunk_frames is not None
            if chunk_frames is not None:
                m.tile_sample_min_num_frames, m.tile_sample_stride_num_frames = chunk_frames, chunk_frames - tc

    # ---- encode / decode ---------------------------------------------------------------------

    def encode(self, x: torch.Tensor, chunk_frames: int | None = None, tile: tuple[int, int] | None = None,
               tile_overlap: int | None = None):
        """Video (B, 3, T, H, W) in [-1, 1] -> the model's posterior (``mode()``, ``sample(generator)``) over
        latents (B, latent_channels, 1 + (T - 1) // tc, H / sc, W / sc)."""
        self._check_video(x)
        if chunk_frames is not None and (chunk_frames <= 0 or chunk_frames % self.temporal_compression):
            raise ValueError(f"{self.class_name}.encode: chunk_frames={chunk_frames} must be a positive multiple of "
                             f"temporal_compression={self.temporal_compression}")
        self._configure(chunk_frames, tile, tile_overlap)
        return self.model.encode(x).latent_dist

    def decode_chunks(self, z: torch.Tensor, chunk_frames: int | None = None, tile: tuple[int, int] | None = None,
                      tile_overlap: int | None = None) -> Iterator[torch.Tensor]:
        """Latents (B, C, t, h, w) -> video (B, 3, 1 + (t - 1) tc, h sc, w sc), yielded whole (the model's
        own time loop bounds its memory); ``chunk_frames`` latent frames per frame-wise chunk (LTX, Hunyuan)."""
        self._check_latent(z)
        if chunk_frames is not None and chunk_frames <= 0:
            raise ValueError(f"{self.class_name}.decode: chunk_frames={chunk_frames} must be positive")
        pixel_chunk = None if chunk_frames is None else max(2, chunk_frames) * self.temporal_compression
        self._configure(pixel_chunk, tile, tile_overlap)
        temb = None
        if getattr(self.model.config, "timestep_conditioning", False):  # LTX 0.9.1+: decode at timestep 0, as
            temb = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)  # LTXPipeline's default decode_timestep
        video = self.model.decode(z, temb).sample if temb is not None else self.model.decode(z).sample
        yield video  # (B, 3, T, H, W)

    def decode(self, z: torch.Tensor, chunk_frames: int | None = None, tile: tuple[int, int] | None = None,
               tile_overlap: int | None = None) -> torch.Tensor:
        """Latents (B, latent_channels, t, h, w) -> video (B, 3, 1 + (t - 1) tc, h sc, w sc)."""
        return torch.cat(list(self.decode_chunks(z, chunk_frames, tile, tile_overlap)), dim=2)

    def tail_decoder(self, prefix: torch.Tensor, tile: tuple[int, int] | None = None,
                     tile_overlap: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """``decode_tail(z)``: the video frames of the latents ``z`` that follow ``prefix``, as
        :meth:`VideoAutoencoder.tail_decoder` gives them; the model's time loop keeps its caches to itself,
        so every call decodes ``cat([prefix, z])`` again (frame-wise chunks, as ``decode(chunk_frames=1)``)."""
        self._check_latent(prefix)
        start = self.num_frames(prefix.shape[2])

        def decode_tail(z: torch.Tensor) -> torch.Tensor:
            return self.decode(torch.cat([prefix, z], dim=2), 1, tile, tile_overlap)[:, :, start:]

        return decode_tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct a video through the posterior mode: (B, 3, T, H, W) -> (B, 3, T, H, W)."""
        return self.decode(self.encode(x).mode())

    # ---- memory ------------------------------------------------------------------------------

    def activation_bytes(self, frames: int, height: int, width: int, bytes_per_element: int = 4) -> int:
        """Estimated peak activation memory of one pass over ``frames`` x ``height`` x ``width`` pixels: the
        widest level's channels x the frames the model's time loop holds x its pixels, times the same live
        tensor and conv-workspace factors as our VAE's estimate (``videogen.models.vae.receptive``)."""
        live = frames if self.family.frames_in_flight is None else min(frames, self.family.frames_in_flight)
        per_pixel = max(c / 4**level for level, c in enumerate(self._channels))  # channels at full resolution
        return int((ACTIVATION_FACTOR + CONV_WORKSPACE) * per_pixel * live * height * width * bytes_per_element)

    def plan(self, frames: int, height: int, width: int, budget_bytes: int, bytes_per_element: int = 4) -> TilePlan:
        """Chunks (LTX, Hunyuan) then tiles whose estimated activations fit ``budget_bytes``; the smallest
        plan when none does."""
        tc = self.temporal_compression
        fits = lambda f, th, tw: self.activation_bytes(f, th, tw, bytes_per_element) <= budget_bytes  # noqa: E731
        return fitted_plan(frames, height, width, tc, self.spatial_compression, self.default_tile_overlap, fits,
                           4 * tc if self.family.framewise else None)
