"""Spatial tiling with overlap blending, so memory stays flat as frames get larger.

A network that maps (B, C, T, H, W) to (B, C', T', H * scale, W * scale) is run tile by tile; tiles
overlap by ``overlap`` input pixels and are blended in the overlaps with linear ramps (weights
normalised to sum to 1). At an edge shared with a neighbour the outer ``margin`` output pixels get
no weight: they saw the tile's zero padding. With the margin at least the network's receptive
radius (``videogen.models.vae.receptive``) every weighted pixel equals the untiled one, so the
blend is exact; a smaller margin (``None``: a quarter of the overlap) only hides the seams.
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


def blend_ramp(length: int, overlap: int, ramp_in: bool, ramp_out: bool, margin: int | None = None) -> torch.Tensor:
    """1-D tile weights: 1 inside; at an edge shared with a neighbour, 0 over the outer ``margin``
    pixels (default a quarter of the overlap, at most ``(overlap - 1) // 2`` so two neighbours'
    weights always overlap and their normalised sum is never 0), then a linear ramp to 1 over the
    rest of the overlap."""
    margin = overlap // 4 if margin is None else min(margin, max(0, (overlap - 1) // 2))
    steps = torch.arange(length, dtype=torch.float32)
    ramp = ((steps - margin + 1) / (overlap - 2 * margin + 1)).clamp(0.0, 1.0)  # 0 .. 1 from the edge in
    w = torch.ones(length)
    if ramp_in and overlap > 0:
        w = torch.minimum(w, ramp)
    if ramp_out and overlap > 0:
        w = torch.minimum(w, ramp.flip(0))
    return w


def tiled_apply(
    fn: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    tile: tuple[int, int] | None,
    overlap: int,
    scale: Fraction,
    margin: int | None = None,
) -> torch.Tensor:
    """Apply ``fn(part, index)`` to overlapping (tile_h, tile_w) tiles of ``x`` (B, C, T, H, W) and
    blend the outputs; ``index`` numbers the tiles in the same order on every call with the same
    shape (callers keep per-tile state, e.g. causal caches, under it). ``tile=None``: ``fn(x, 0)``.

    ``fn`` must map an (h, w) tile to an (h * scale, w * scale) one; ``tile`` and ``overlap`` are in
    ``x``'s pixels and must map to whole output pixels (the caller checks divisibility); ``margin``
    is in output pixels (see :func:`blend_ramp`).
    """
    if tile is None:
        return fn(x, 0)
    height, width = x.shape[-2:]
    starts_h = tile_starts(height, tile[0], overlap)
    starts_w = tile_starts(width, tile[1], overlap)
    if len(starts_h) == 1 and len(starts_w) == 1:
        return fn(x, 0)
    ramp = int(overlap * scale)
    out: torch.Tensor | None = None
    weight_sum: torch.Tensor | None = None
    index = 0
    for y0 in starts_h:
        for x0 in starts_w:
            y1, x1 = min(y0 + tile[0], height), min(x0 + tile[1], width)
            part = fn(x[..., y0:y1, x0:x1], index)  # (B, C', T', (y1 - y0) scale, (x1 - x0) scale)
            index += 1
            oy0, ox0 = int(y0 * scale), int(x0 * scale)
            oh, ow = part.shape[-2:]
            if out is None:
                out_shape = (*part.shape[:-2], int(height * scale), int(width * scale))
                out = part.new_zeros(out_shape)
                weight_sum = part.new_zeros(out_shape[-2:])
            wy = blend_ramp(oh, ramp, ramp_in=y0 > 0, ramp_out=y1 < height, margin=margin)
            wx = blend_ramp(ow, ramp, ramp_in=x0 > 0, ramp_out=x1 < width, margin=margin)
            w = (wy[:, None] * wx[None, :]).to(part)  # (oh, ow)
            out[..., oy0 : oy0 + oh, ox0 : ox0 + ow] += part * w
            weight_sum[oy0 : oy0 + oh, ox0 : ox0 + ow] += w
            del part
    return out.div_(weight_sum)
