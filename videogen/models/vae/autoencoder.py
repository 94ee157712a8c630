"""The causal video autoencoder: encoder -> bottleneck -> decoder, with chunked and tiled inference.

Shapes: a video (B, C, T, H, W) in [-1, 1] with T = 1 + k * tc and H, W divisible by sc encodes to
latents (B, latent_channels, 1 + k, H / sc, W / sc); frame 0 is encoded on its own, so an image is a
1-frame video and gives one latent frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from fractions import Fraction

import torch
from torch import nn

from videogen.models.configurable import Configurable

from videogen.models.vae.bottleneck import DiagonalGaussian, DiagonalGaussianPosterior, QuantizedLatent
from videogen.models.vae.causal_conv import CausalCache
from videogen.models.vae.decoder import Decoder
from videogen.models.vae.encoder import Encoder
from videogen.models.vae.receptive import decode_margin, default_tile_overlap, encode_margin
from videogen.models.vae.tiling import tiled_apply

Posterior = DiagonalGaussianPosterior | QuantizedLatent


class VideoAutoencoder(Configurable, nn.Module):
    """Causal 3D-conv video VAE.

    Args:
        in_channels: video channels (3 for RGB).
        latent_channels: channels of the latent the DiT models.
        base_channels: width of the full-resolution level.
        channel_mult: width multiplier per resolution level, full resolution first; there are
            ``log2(spatial_compression / patch_size) + 1`` levels and a shorter tuple repeats its
            last value.
        num_res_blocks: ResBlocks per level in the encoder and in the decoder.
        temporal_compression: 1, 2 or 4: ``patch_size_t`` times 2 per temporal downsampling; time is
            halved in the first ``log2(temporal_compression / patch_size_t)`` downsamplings.
        spatial_compression: 4, 8 or 16: ``patch_size`` times 2 per downsampling.
        patch_size: pixels per side folded into channels before the first conv (1, 2 or 4): cheaper
            full-resolution work, the CPU presets' main saving.
        patch_size_t: frames folded into channels before the first conv (1, 2 or 4); frame 0 is
            still encoded on its own.
        bottleneck: a :class:`DiagonalGaussian` (default, None) or :class:`FSQ`.

    Latents are normalised outside the model, per channel, with the export's measured ``stats.json``
    (``videogen.encoding.normalize_latents``).
    """

    # scalar normalisation arguments the model never used, which earlier VAE exports recorded
    retired_init_args = ("scaling_factor", "shift_factor")

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 1,
        temporal_compression: int = 4,
        spatial_compression: int = 8,
        patch_size: int = 1,
        patch_size_t: int = 1,
        bottleneck: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if temporal_compression not in (1, 2, 4):
            raise ValueError(f"VideoAutoencoder: temporal_compression={temporal_compression}; use 1, 2 or 4")
        if spatial_compression not in (4, 8, 16):
            raise ValueError(f"VideoAutoencoder: spatial_compression={spatial_compression}; use 4, 8 or 16")
        if not channel_mult:
            raise ValueError("VideoAutoencoder: channel_mult is empty; give at least one multiplier, e.g. (1, 2, 4)")
        if patch_size not in (1, 2, 4) or spatial_compression % patch_size:
            raise ValueError(
                f"VideoAutoencoder: patch_size={patch_size} must be 1, 2 or 4 and divide "
                f"spatial_compression={spatial_compression}"
            )
        if patch_size_t not in (1, 2, 4) or temporal_compression % patch_size_t:
            raise ValueError(
                f"VideoAutoencoder: patch_size_t={patch_size_t} must be 1, 2 or 4 and divide "
                f"temporal_compression={temporal_compression}"
            )
        n_down = int(math.log2(spatial_compression // patch_size))
        n_time = int(math.log2(temporal_compression // patch_size_t))
        if n_time > n_down:
            raise ValueError(
                f"VideoAutoencoder: temporal_compression={temporal_compression} needs {n_time} temporal "
                f"downsamplings but spatial_compression={spatial_compression} / patch_size={patch_size} "
                f"gives only {n_down}: raise patch_size_t or lower patch_size"
            )
        mult = tuple(channel_mult) + (channel_mult[-1],) * (n_down + 1 - len(channel_mult))
        if len(mult) > n_down + 1:
            raise ValueError(
                f"VideoAutoencoder: channel_mult={channel_mult} has {len(channel_mult)} levels but "
                f"spatial_compression={spatial_compression} / patch_size={patch_size} gives {n_down + 1}: "
                f"drop the extra multipliers"
            )
        channels = tuple(base_channels * m for m in mult)
        temporal = tuple(i < n_time for i in range(n_down))  # halve time in the first log2(tc) levels

        self.bottleneck = bottleneck if bottleneck is not None else DiagonalGaussian()
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.temporal_compression = temporal_compression
        self.spatial_compression = spatial_compression
        enc_out = self.bottleneck.in_channels(latent_channels)
        self.encoder = Encoder(in_channels, enc_out, channels, temporal, num_res_blocks, patch_size, patch_size_t)
        self.decoder = Decoder(latent_channels, in_channels, channels, temporal, num_res_blocks, patch_size,
                               patch_size_t)

    # ---- shapes and checks -------------------------------------------------------------------

    def num_frames(self, num_latent_frames: int) -> int:
        return 1 + (num_latent_frames - 1) * self.temporal_compression

    @property
    def frame_multiple(self) -> int:
        """Clips are ``1 + k * frame_multiple`` frames long (here: the temporal compression)."""
        return self.temporal_compression

    def _check_video(self, x: torch.Tensor) -> None:
        tc, sc = self.temporal_compression, self.spatial_compression
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"VideoAutoencoder.encode: expected a video (B, {self.in_channels}, T, H, W), got shape "
                f"{tuple(x.shape)}; an image is a 1-frame video: add the time axis with x.unsqueeze(2)"
            )
        t, h, w = x.shape[2:]
        if (t - 1) % tc != 0:
            lower, upper = t - (t - 1) % tc, t - (t - 1) % tc + tc
            raise ValueError(
                f"VideoAutoencoder(temporal_compression={tc}) encodes 1 + k*{tc} frames "
                f"(1, {1 + tc}, {1 + 2 * tc}, {1 + 3 * tc}, ...), got T={t}: trim the clip to {lower} "
                f"frames or pad it to {upper} (set the data's num_frames to 1 + k*{tc})"
            )
        if h % sc or w % sc:
            raise ValueError(
                f"VideoAutoencoder(spatial_compression={sc}) needs H and W divisible by {sc}, got "
                f"H={h}, W={w}: crop or resize to e.g. {h - h % sc}x{w - w % sc}"
            )

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"VideoAutoencoder.decode: expected latents (B, {self.latent_channels}, t, h, w), got shape "
                f"{tuple(z.shape)}: pass what encode(...).sample() or .mode() returns"
            )

    def _check_tiling(self, tile: tuple[int, int] | None, overlap: int) -> None:
        if tile is None:
            return
        sc = self.spatial_compression
        if any(s % sc for s in (*tile, overlap)) or min(tile) <= overlap or overlap < 0:
            raise ValueError(
                f"VideoAutoencoder: tile={tile}, tile_overlap={overlap} (pixels) must be multiples of the "
                f"spatial compression {sc} with 0 <= tile_overlap < tile, e.g. tile_overlap=None (the exact "
                f"default, {default_tile_overlap(self)} px here) and tile=({2 * default_tile_overlap(self) + sc}, "
                f"{2 * default_tile_overlap(self) + sc})"
            )

    # ---- encode / decode ---------------------------------------------------------------------

    def _plan(self, what: str, t: int, chunk_frames: int | None, tile: tuple[int, int] | None,
              tile_overlap: int | None, head: int, multiple: int) -> tuple[int, list[int], dict | None]:
        """Check the chunk and tile settings of an encode or decode over ``t`` frames; returns the tile
        overlap, the chunk bounds along time (the first chunk ``head`` frames longer) and the causal
        caches, one per tile (None: one pass, no caches)."""
        overlap = default_tile_overlap(self) if tile_overlap is None else tile_overlap
        self._check_tiling(tile, overlap)
        if chunk_frames is not None and (chunk_frames <= 0 or chunk_frames % multiple):
            unit = f"a positive multiple of temporal_compression={multiple}" if multiple > 1 else "positive"
            raise ValueError(f"VideoAutoencoder.{what}: chunk_frames={chunk_frames} must be {unit}")
        if chunk_frames is None or t <= head + chunk_frames:
            return overlap, [0, t], None
        return overlap, [0, *range(head + chunk_frames, t, chunk_frames), t], {}

    @staticmethod
    def _with_caches(net: nn.Module, caches: dict | None):
        """``net(part, cache)`` with tile ``i``'s cache carried across chunks (none for one pass)."""
        return lambda part, i: net(part, None if caches is None else caches.setdefault(i, CausalCache()))

    def encode(
        self,
        x: torch.Tensor,
        chunk_frames: int | None = None,
        tile: tuple[int, int] | None = None,
        tile_overlap: int | None = None,
    ) -> Posterior:
        """Video (B, C, T, H, W) in [-1, 1] -> latent distribution over (B, latent_channels, t, h, w).

        Args:
            x: the video, T = 1 + k * temporal_compression, H and W divisible by spatial_compression.
            chunk_frames: encode frame 0 plus ``chunk_frames`` frames, then ``chunk_frames`` frames at a
                time, carrying the causal caches (same result as one pass; memory flat in T). A multiple
                of temporal_compression. None: one pass.
            tile: (tile_h, tile_w) in pixels: encode overlapping spatial tiles and blend them (memory
                flat in H x W). None: whole frames.
            tile_overlap: overlap of neighbouring tiles in pixels; None: :func:`default_tile_overlap`,
                at which tiled equals untiled (up to float rounding); smaller overlaps only blend seams.
        """
        self._check_video(x)
        overlap, bounds, caches = self._plan("encode", x.shape[2], chunk_frames, tile, tile_overlap, head=1,
                                             multiple=self.temporal_compression)
        scale, margin = Fraction(1, self.spatial_compression), encode_margin(self)
        run = self._with_caches(self.encoder, caches)
        parts = []
        for a, b in zip(bounds, bounds[1:]):  # time outside, tiles inside: one cache per tile
            parts.append(tiled_apply(run, x[:, :, a:b], tile, overlap, scale, margin))
        return self.bottleneck(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))

    def decode_chunks(
        self,
        z: torch.Tensor,
        chunk_frames: int | None = None,
        tile: tuple[int, int] | None = None,
        tile_overlap: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """:meth:`decode` one temporal chunk at a time: yields (B, C, frames of the chunk, H, W) in
        order (frame 0 and ``(chunk_frames - 1) tc`` frames first, then ``chunk_frames * tc``), so a
        caller can consume a long clip without holding all of it."""
        self._check_latent(z)
        overlap, bounds, caches = self._plan("decode", z.shape[2], chunk_frames, tile, tile_overlap, head=0,
                                             multiple=1)
        run = self._tiled_decoder(tile, overlap, caches)
        for a, b in zip(bounds, bounds[1:]):
            yield run(z[:, :, a:b])

    def _tiled_decoder(self, tile: tuple[int, int] | None, overlap: int,
                       caches: dict | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """``run(z)``: the decoder over the latent chunk ``z``, tiled (``tile`` in output pixels), tile ``i``'s
        causal cache carried in ``caches[i]`` (None: one pass)."""
        sc = self.spatial_compression
        latent_tile = None if tile is None else (tile[0] // sc, tile[1] // sc)
        net = self._with_caches(self.decoder, caches)
        return lambda z: tiled_apply(net, z, latent_tile, overlap // sc, Fraction(sc), decode_margin(self))

    @torch.no_grad()
    def tail_decoder(
        self,
        prefix: torch.Tensor,
        tile: tuple[int, int] | None = None,
        tile_overlap: int | None = None,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Decode the latents ``prefix`` (B, latent_channels, t, h, w) once, one latent frame at a time and
        without a graph, and return ``decode_tail(z)``: the video frames of the latents ``z`` that follow
        ``prefix``, i.e. the frames ``decode(cat([prefix, z], dim=2))`` gives after ``num_frames(t)`` (equal
        up to float rounding). Each call continues from a copy of the causal caches the prefix left, so it can
        be called again, e.g. at every step of an optimisation of ``z`` (with a graph through ``z`` only):
        the prefix is not decoded again."""
        self._check_latent(prefix)
        overlap, _, _ = self._plan("decode", prefix.shape[2], 1, tile, tile_overlap, head=0, multiple=1)
        caches: dict[int, CausalCache] = {}
        run = self._tiled_decoder(tile, overlap, caches)
        for a in range(prefix.shape[2]):
            run(prefix[:, :, a: a + 1])

        def decode_tail(z: torch.Tensor) -> torch.Tensor:
            self._check_latent(z)
            if z.shape[0] != prefix.shape[0] or z.shape[3:] != prefix.shape[3:]:
                raise ValueError(f"VideoAutoencoder.tail_decoder: latents {tuple(z.shape)} do not continue the "
                                 f"prefix {tuple(prefix.shape)} (batch and h, w must match)")
            return self._tiled_decoder(tile, overlap, {i: c.copy() for i, c in caches.items()})(z)

        return decode_tail

    def decode(
        self,
        z: torch.Tensor,
        chunk_frames: int | None = None,
        tile: tuple[int, int] | None = None,
        tile_overlap: int | None = None,
    ) -> torch.Tensor:
        """Latents (B, latent_channels, t, h, w) -> video (B, C, 1 + (t - 1) tc, h sc, w sc).

        Args:
            z: latents as returned by ``encode(x).sample()`` (not normalised for the DiT).
            chunk_frames: latent frames per chunk, carrying the causal caches (same result as one
                pass; memory flat in t). None: one pass.
            tile: (tile_h, tile_w) of the OUTPUT in pixels; multiples of spatial_compression.
            tile_overlap: overlap of neighbouring tiles in output pixels; None: the exact default
                (see :meth:`encode`).
        """
        out, filled = None, 0
        for chunk in self.decode_chunks(z, chunk_frames, tile, tile_overlap):  # memory flat in t
            if out is None:
                if chunk.shape[2] == self.num_frames(z.shape[2]):
                    return chunk
                out = chunk.new_empty((*chunk.shape[:2], self.num_frames(z.shape[2]), *chunk.shape[3:]))
            out[:, :, filled: filled + chunk.shape[2]] = chunk
            filled += chunk.shape[2]
        return out

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, Posterior]:
        """Reconstruct a video: (B, C, T, H, W) -> ((B, C, T, H, W), posterior) for the training step."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    # ---- for the losses ------------------------------------------------------------

    @property
    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's output conv weight, for the adaptive GAN weight."""
        return self.decoder.conv_out.conv.weight
