"""Spatial tiling with overlap blending, so memory stays flat as frames get larger.

A network that maps (B, C, T, H, W) to (B, C', T', H * scale, W * scale) is run tile by tile; tiles
overlap by ``overlap`` input pixels and are blended in the overlaps with linear ramps (weights
normalised to sum to 1), which hides the seams left by each tile's zero-padded borders. The outer
quarter of each overlap gets no weight: those outputs saw the tile border's zero padding most.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size``; the last one ends at ``size``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, tile - overlap))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def blend_ramp(length: int, overlap: int, ramp_in: bool, ramp_out: bool) -> torch.Tensor:
    """1-D tile weights: 1 inside; at an edge shared with a neighbour, 0 over the outer quarter of the
    overlap (the outputs that saw the tile's zero padding most), then a linear ramp to 1 over its
    middle half. Two neighbours' weights overlap, so their normalised sum is never 0."""
    margin = overlap // 4
    steps = torch.arange(length, dtype=torch.float32)
    ramp = ((steps - margin + 1) / (overlap - 2 * margin + 1)).clamp(0.0, 1.0)  # 0 .. 1 from the edge in
    w = torch.ones(length)
    if ramp_in and overlap > 0:
        w = torch.minimum(w, ramp)
    if ramp_out and overlap > 0:
        w = torch.minimum(w, ramp.flip(0))
    return w


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: tuple[int, int],
    overlap: int,
    scale: Fraction,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping (tile_h, tile_w) tiles of ``x`` (B, C, T, H, W) and blend the outputs.

    ``fn`` must map an (h, w) tile to an (h * scale, w * scale) one; ``tile`` and ``overlap`` are in
    ``x``'s pixels and must map to whole output pixels (the caller checks divisibility).
    """
    height, width = x.shape[-2:]
    starts_h = tile_starts(height, tile[0], overlap)
    starts_w = tile_starts(width, tile[1], overlap)
    if len(starts_h) == 1 and len(starts_w) == 1:
        return fn(x)
    ramp = int(overlap * scale)
    out: torch.Tensor | None = None
    weight_sum: torch.Tensor | None = None
    for y0 in starts_h:
        for x0 in starts_w:
            y1, x1 = min(y0 + tile[0], height), min(x0 + tile[1], width)
            part = fn(x[..., y0:y1, x0:x1])  # (B, C', T', (y1 - y0) scale, (x1 - x0) scale)
            oy0, ox0 = int(y0 * scale), int(x0 * scale)
            oh, ow = part.shape[-2:]
            if out is None:
                out_shape = (*part.shape[:-2], int(height * scale), int(width * scale))
                out = part.new_zeros(out_shape)
                weight_sum = part.new_zeros(out_shape[-2:])
            wy = blend_ramp(oh, ramp, ramp_in=y0 > 0, ramp_out=y1 < height)
            wx = blend_ramp(ow, ramp, ramp_in=x0 > 0, ramp_out=x1 < width)
            w = (wy[:, None] * wx[None, :]).to(part)  # (oh, ow)
            out[..., oy0 : oy0 + oh, ox0 : ox0 + ow] += part * w
            weight_sum[oy0 : oy0 + oh, ox0 : ox0 + ow] += w
    return out / weight_sum
