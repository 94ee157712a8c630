"""How far a VAE output pixel sees, and the memory one chunk or tile of inference needs.

Both are read off the architecture (pure functions of the modules, no running): the spatial
receptive radius sets the tile overlap at which tiled inference equals untiled inference (every
blended output pixel at least one radius from its tile's cut edge never sees the zero padding
there), and the activation estimate lets callers pick chunk and tile sizes from a memory budget
(:func:`plan_tiles`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from videogen.models.vae.blocks import Downsample, ResBlock, Upsample
from videogen.models.vae.causal_conv import CausalConv3d

ACTIVATION_FACTOR = 8  # live tensors of the widest layer at once (x, norm, silu, conv with its padded copy, ...)
CONV_WORKSPACE = 27    # a 3x3x3 conv's unfolded input (CPU im2col): kernel volume x input channels per position


def _reach(conv: CausalConv3d | None) -> int:
    return 0 if conv is None else conv.conv.kernel_size[1] // 2


def decoder_radius(vae: nn.Module) -> int:
    """Output pixels beyond its own latent footprint that one decoded pixel depends on (one side)."""
    d = vae.decoder
    s = vae.spatial_compression  # output pixels per pixel of the current level
    r = _reach(d.conv_in) * s + (_reach(d.mid.conv1) + _reach(d.mid.conv2)) * s
    for block in d.blocks:
        if isinstance(block, ResBlock):
            r += (_reach(block.conv1) + _reach(block.conv2)) * s
        elif isinstance(block, Upsample):
            r += _reach(block.time_conv) * s
            s //= 2
            r += s + _reach(block.conv) * s  # nearest upsampling rounds by one new pixel
    return r + _reach(d.conv_out) * s + (s - 1)  # s is the patch size here: unpatchify spreads a pixel


def encoder_radius(vae: nn.Module) -> int:
    """Input pixels beyond its own footprint that one latent pixel depends on (one side)."""
    e = vae.encoder
    s = e.patchify.patch  # input pixels per pixel of the current level
    r = (s - 1) + _reach(e.conv_in) * s
    for block in e.blocks:
        if isinstance(block, ResBlock):
            r += (_reach(block.conv1) + _reach(block.conv2)) * s
        elif isinstance(block, Downsample):
            r += _reach(block.conv) * s
            s *= 2
    return r + (_reach(e.mid.conv1) + _reach(e.mid.conv2) + _reach(e.conv_out)) * s


def decode_margin(vae: nn.Module) -> int:
    """Output pixels at a tile's cut edge that must get no blend weight for exact tiled decoding."""
    return decoder_radius(vae)


def encode_margin(vae: nn.Module) -> int:
    """Latent pixels at a tile's cut edge that must get no blend weight for exact tiled encoding."""
    return math.ceil(encoder_radius(vae) / vae.spatial_compression)


def default_tile_overlap(vae: nn.Module) -> int:
    """The smallest overlap (pixels, a multiple of sc) at which tiled encode and decode are exact:
    each side of the overlap keeps one margin of zero weight and at least one pixel is blended."""
    sc = vae.spatial_compression
    dec = math.ceil((2 * decode_margin(vae) + 1) / sc) * sc
    enc = (2 * encode_margin(vae) + 1) * sc
    return max(dec, enc)


def activation_bytes(vae: nn.Module, frames: int, height: int, width: int, bytes_per_element: int = 4) -> int:
    """Estimated peak activation memory of encoding or decoding ``frames`` x ``height`` x ``width``
    pixels in one piece: at the widest level (channels x frames x pixels at that level's resolution,
    the upsampled input of the next conv included), ``ACTIVATION_FACTOR`` live tensors plus one
    conv's unfolded input (``CONV_WORKSPACE`` x channels). Measured on CPU: 9 frames of 1280x720
    through the quickstart VAE peaked at 3.95 GB RSS in one piece; this estimate says 5.2 GB."""
    e = vae.encoder
    p, pt = e.patchify.patch, e.patchify.patch_t
    widths = [m.conv2.conv.out_channels for m in e.blocks if isinstance(m, ResBlock)]
    levels = [block for block in e.blocks if isinstance(block, Downsample)]
    f, h, w = max(1, -(-frames // pt)), height / p, width / p
    ch = [e.conv_in.conv.out_channels, *widths]
    peak = max(ch) * f * h * w  # full resolution, the widest of its neighbours
    for block in levels:
        if block.conv.conv.stride[0] == 2:
            f = max(1, f // 2)
        h, w = h / 2, w / 2
        peak = max(peak, max(ch) * f * h * w)
    return int((ACTIVATION_FACTOR + CONV_WORKSPACE) * peak * bytes_per_element)


@dataclass(frozen=True)
class TilePlan:
    """Chunk and tile sizes for one clip: ``chunk_frames`` pixel frames per temporal chunk (a multiple
    of tc; None = one pass), ``tile`` (h, w) pixels (None = whole frames), ``tile_overlap`` pixels."""

    chunk_frames: int | None
    tile: tuple[int, int] | None
    tile_overlap: int

    def latent_chunk_frames(self, tc: int) -> int | None:
        """The decoder's chunk: latent frames per temporal chunk."""
        return None if self.chunk_frames is None else self.chunk_frames // tc


def plan_tiles(vae: nn.Module, frames: int, height: int, width: int, budget_bytes: int,
               bytes_per_element: int = 4, min_chunk_frames: int | None = None) -> TilePlan:
    """The largest chunks, then the largest tiles, whose estimated activations fit ``budget_bytes``.

    Time is chunked first (exact and free), down to ``min_chunk_frames`` (default 4 x tc), then tiles
    shrink (each halving the longer side) down to two overlaps; below that the smallest plan is used.
    """
    tc = vae.temporal_compression
    fits = lambda f, th, tw: activation_bytes(vae, f, th, tw, bytes_per_element) <= budget_bytes  # noqa: E731
    return fitted_plan(frames, height, width, tc, vae.spatial_compression, default_tile_overlap(vae), fits,
                       min_chunk_frames or 4 * tc)


def fitted_plan(frames: int, height: int, width: int, tc: int, sc: int, overlap: int,
                fits: Callable[[int, int, int], bool], chunk_floor: int | None) -> TilePlan:
    """The search of every VAE's plan (ours, :func:`plan_tiles`; a diffusers one's, ``DiffusersVAE.plan``):
    the largest temporal chunk (a multiple of ``tc``, down to ``chunk_floor``; None: time is never chunked),
    then the largest tiles (multiples of ``sc``, each halving the longer side, down to two ``overlap`` widths)
    for which ``fits(frames, tile_height, tile_width)``; the smallest plan when none does."""
    chunk = frames
    if chunk_floor is not None:
        chunk = max(tc, (frames - 1) // tc * tc)
        while chunk > chunk_floor and not fits(chunk, height, width):
            chunk = max(chunk_floor, (chunk // 2) // tc * tc)
    chunk_frames = None if chunk >= frames - 1 else chunk
    th, tw = height, width
    smallest = 2 * overlap + sc
    while not fits(chunk, th, tw) and max(th, tw) > smallest:
        if th >= tw:
            th = max(smallest, math.ceil(th / 2 / sc) * sc)
        else:
            tw = max(smallest, math.ceil(tw / 2 / sc) * sc)
    tile = None if (th >= height and tw >= width) else (min(th, height), min(tw, width))
    return TilePlan(chunk_frames, tile, overlap)
