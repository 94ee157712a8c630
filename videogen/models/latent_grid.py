"""``LatentGrid``: how a stage sees a pixel clip, the one home of the latent-grid arithmetic.

A causal video VAE turns ``T x H x W`` pixels into ``1 + (T - 1) // tc`` latent frames of
``H // sc x W // sc``; a DiT then cuts the latent into ``patch`` patches, one token each. Every stage
module exposes its grid as ``latent_grid`` (the DiT: its VAE's compression x its patch; the VAE: its own
compression; the captioner: its VAE's when it reads latents, else None), and whatever needs the grid
(the setup check, throughput/MFU, sampling, evaluation) asks for it instead of redoing the arithmetic.
Pure: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LatentGrid:
    """The latent grid of a stage.

    Args:
        temporal_compression: pixel frames per latent frame (after the first, which is alone: causal).
        spatial_compression: pixels per latent pixel along height and width.
        patch: latent (frames, height, width) per token; (1, 1, 1) where nothing cuts patches (the VAE).
        frame_multiple: the step between clip lengths the VAE takes (``1 + k * frame_multiple``); None:
            the temporal compression (CogVideoX's decoder needs more: an odd latent count).
        source: what the grid is of, for messages (``"the VAE at runs/vae/export x DiT patch_size=(1, 2, 2)"``).
    """

    temporal_compression: int
    spatial_compression: int
    patch: tuple[int, int, int] = (1, 1, 1)
    frame_multiple: int | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "temporal_compression", int(self.temporal_compression))
        object.__setattr__(self, "spatial_compression", int(self.spatial_compression))
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        object.__setattr__(self, "frame_multiple", int(self.frame_multiple or self.temporal_compression))

    @classmethod
    def from_stats(cls, stats: dict[str, Any], patch: tuple[int, int, int] = (1, 1, 1), source: str = "") -> LatentGrid:
        """The grid of a VAE export's ``stats.json`` (``temporal_compression``, ``spatial_compression``,
        optional ``frame_multiple``) with a DiT's ``patch``."""
        return cls(stats["temporal_compression"], stats["spatial_compression"], tuple(patch),
                   stats.get("frame_multiple"), source)

    @classmethod
    def of_vae(cls, vae: Any, source: str = "") -> LatentGrid:
        """The grid of a VAE module (``temporal_compression``, ``spatial_compression``, ``frame_multiple``)."""
        return cls(vae.temporal_compression, vae.spatial_compression, (1, 1, 1),
                   getattr(vae, "frame_multiple", None), source)

    # ---- the arithmetic ---------------------------------------------------------------------------

    @property
    def token_shape(self) -> tuple[int, int, int]:
        """Pixel (frames, height, width) per token: compression x patch (``Bucketer.token_shape``)."""
        pt, ph, pw = self.patch
        return self.temporal_compression * pt, self.spatial_compression * ph, self.spatial_compression * pw

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of ``frames`` pixel frames."""
        return 1 + (frames - 1) // self.temporal_compression

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) of the latent of a ``frames x height x width`` pixel clip."""
        sc = self.spatial_compression
        return self.latent_frames(frames), height // sc, width // sc

    def frames_for(self, latent_frames: int) -> int:
        """Pixel frames of a clip of ``latent_frames`` latent frames."""
        return 1 + (latent_frames - 1) * self.temporal_compression

    def usable_frames(self, frames: int) -> int:
        """The longest clip of at most ``frames`` frames the VAE takes whole (``1 + k * frame_multiple``)."""
        return 1 + (frames - 1) // self.frame_multiple * self.frame_multiple

    def latent_tokens(self, t: int, h: int, w: int) -> int:
        """Tokens of a ``t x h x w`` latent (whole patches)."""
        pt, ph, pw = self.patch
        return t // pt * (h // ph) * (w // pw)

    def tokens(self, frames: int, height: int, width: int) -> int:
        """Tokens of a ``frames x height x width`` pixel clip."""
        return self.latent_tokens(*self.latent_shape(frames, height, width))

    def problem(self, frames: int, height: int, width: int) -> str | None:
        """Why a ``frames x height x width`` pixel clip cannot pass through the stage (one line), or None."""
        fm, pt, (_, ph, pw) = self.frame_multiple, self.patch[0], self.patch
        if (frames - 1) % fm:
            lo = frames - (frames - 1) % fm
            return f"num_frames={frames} is not 1 + k*{fm} (use {lo} or {lo + fm})"
        latent_t = self.latent_frames(frames)
        if latent_t % pt:
            return f"num_frames={frames} gives {latent_t} latent frames, not a multiple of the patch's {pt}"
        for name, size, p in (("height", height, ph), ("width", width, pw)):
            m, lo = self.spatial_compression * p, size - size % (self.spatial_compression * p)
            if size % m:
                return f"{name}={size} is not a multiple of {m} (use {max(m, lo)} or {lo + m})"
        return None
