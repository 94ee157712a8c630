"""Spacetime patches: latents (C, T, H, W) <-> tokens, one token per (pt, ph, pw) patch.

A patch is flattened channel-major, ``(c pt ph pw)``, so the patch embedding is a
``Linear`` over tokens (the same map as a stride = kernel ``Conv3d``) and works on
packed sequences of clips with different sizes (NaViT-style packing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

PatchSize = tuple[int, int, int]
Grid = tuple[int, int, int]


def patch_grid(latent_thw: tuple[int, int, int], patch_size: PatchSize) -> Grid:
    """Token grid (T/pt, H/ph, W/pw) of a latent, with a clear error when a size does not divide."""
    grid = []
    for axis, size, p in zip("THW", latent_thw, patch_size):
        if size % p != 0:
            raise ValueError(
                f"latent {axis}={size} (latent T, H, W = {tuple(latent_thw)}) is not divisible by the DiT "
                f"init arg patch_size={tuple(patch_size)}: crop or pad the latent (bucket sizes in the data "
                f"config) to a multiple of the patch size, or choose a patch size that divides it."
            )
        grid.append(size // p)
    return tuple(grid)  # type: ignore[return-value]


def patchify(x: Tensor, patch_size: PatchSize) -> Tensor:
    """(B, C, T, H, W) -> (B, N, C*pt*ph*pw) with N = (T/pt)(H/ph)(W/pw), tokens in t-major order."""
    patch_grid(tuple(x.shape[-3:]), patch_size)
    pt, ph, pw = patch_size
    return rearrange(x, "b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw)", pt=pt, ph=ph, pw=pw)


def unpatchify(tokens: Tensor, patch_size: PatchSize, grid: Grid) -> Tensor:
    """(B, N, C*pt*ph*pw) -> (B, C, T, H, W), the inverse of :func:`patchify` for a token grid (t, h, w)."""
    pt, ph, pw = patch_size
    t, h, w = grid
    return rearrange(tokens, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw)


def grid_positions(grid: Grid, device: torch.device | None = None) -> Tensor:
    """Integer (t, h, w) position of every token of a grid, in :func:`patchify` order: (N, 3) long."""
    t, h, w = grid
    axes = [torch.arange(n, device=device) for n in (t, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(t * h * w, 3)  # (t h w) 3


@dataclass
class PackedTokens:
    """Several clips as one token row: what :func:`pack` returns and :func:`unpack` reads."""

    tokens: Tensor  # (1, N, P) patch tokens of all clips, clip after clip
    positions: Tensor  # (1, N, 3) long (t, h, w) position of each token inside its own clip
    segment_ids: Tensor  # (1, N) long index of the clip each token belongs to
    grids: list[Grid]  # token grid of each clip, to unpack


def pack(latents: list[Tensor], patch_size: PatchSize) -> PackedTokens:
    """Patchify clips of different (T, H, W) (each (C, T, H, W)) and concatenate them into one row."""
    grids = [patch_grid(tuple(x.shape[-3:]), patch_size) for x in latents]
    tokens = torch.cat([patchify(x[None], patch_size)[0] for x in latents])  # (N, P)
    device = tokens.device
    positions = torch.cat([grid_positions(g, device) for g in grids])  # (N, 3)
    counts = torch.tensor([g[0] * g[1] * g[2] for g in grids], device=device)
    segment_ids = torch.repeat_interleave(torch.arange(len(grids), device=device), counts)  # (N,)
    return PackedTokens(tokens[None], positions[None], segment_ids[None], grids)


def unpack(tokens: Tensor, grids: list[Grid], patch_size: PatchSize) -> list[Tensor]:
    """(1, N, C*pt*ph*pw) packed row -> list of (C, T, H, W), the inverse of :func:`pack`."""
    sizes = [g[0] * g[1] * g[2] for g in grids]
    chunks = tokens[0].split(sizes)  # each (n_i, P)
    return [unpatchify(c[None], patch_size, g)[0] for c, g in zip(chunks, grids)]
