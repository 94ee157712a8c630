"""Near-duplicate detection across the whole set with perceptual hashes.

Each clip gets two signatures from ``FRAMES`` frames at fixed relative positions (10%, 37%, 63% and
90% of the clip):

* ``phash``: the DCT pHash of each frame (gray -> 32x32 -> 2D DCT -> the 8x8 lowest frequencies ->
  one bit each, set when above their median): 4 x 64 = 256 bits as 64 hex digits. Re-encoding and
  rescaling move few bits (0-34 measured on re-encodes at 3/4 size and crf 32), different content
  about half, but two different simple scenes with the same layout can be as close as 32 bits;
* ``colour_layout``: the mean colour of each quarter of each frame (4 frames x 2x2 x RGB = 48
  bytes, as hex): the pHash is blind to colour. Copies differ by under 1 level on average,
  different scenes with the same layout by 15 or more.

Two clips are duplicates when their pHashes differ in at most ``max_distance`` bits *and* their
colour layouts by at most ``max_colour`` levels on average. The decision is global
(:func:`clusters`): every pair is compared, exhaustively in blocks (numpy popcount over 256-bit
rows), linked clips form a group, and each group keeps its best clip (``rank`` in decide.py).
"""

from __future__ import annotations

import numpy as np

from data_recipes.curate.frames import luma

FRAMES = (0.1, 0.37, 0.63, 0.9)
_N = 32


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m  # orthonormal DCT-II: coefficients = m @ signal


_DCT = _dct_matrix(_N)


def frame_hash(gray: np.ndarray) -> np.ndarray:
    """(h, w) float gray -> (64,) bool pHash bits."""
    import cv2

    small = cv2.resize(gray.astype(np.float32), (_N, _N), interpolation=cv2.INTER_AREA).astype(np.float64)
    low = (_DCT @ small @ _DCT.T)[:8, :8].ravel()  # (64,) lowest frequencies, DC first
    return low > np.median(low[1:])


def signatures(frames: np.ndarray) -> dict[str, str]:
    """(T, h, w, 3) analysis frames -> ``{"phash": 64 hex digits, "colour_layout": 96 hex digits}``."""
    import cv2

    t = len(frames)
    picks = [min(t - 1, int(p * t)) for p in FRAMES]
    bits = np.concatenate([frame_hash(luma(frames[i])) for i in picks])
    colours = np.concatenate([cv2.resize(frames[i], (2, 2), interpolation=cv2.INTER_AREA).ravel() for i in picks])
    return {"phash": np.packbits(bits).tobytes().hex(), "colour_layout": colours.astype(np.uint8).tobytes().hex()}


def colour_distance(a: str, b: str) -> float:
    """Mean absolute difference (0-255) of two colour layouts."""
    return float(np.abs(np.frombuffer(bytes.fromhex(a), np.uint8).astype(np.int16)
                        - np.frombuffer(bytes.fromhex(b), np.uint8).astype(np.int16)).mean())


def _rows(hashes: list[str]) -> np.ndarray:
    return np.stack([np.frombuffer(bytes.fromhex(h), np.uint8) for h in hashes]) if hashes else np.zeros((0, 32), np.uint8)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint16)


def distances(a: list[str], b: list[str]) -> np.ndarray:
    """(len(a), len(b)) Hamming distances in bits."""
    ra, rb = _rows(a), _rows(b)
    return _POPCOUNT[ra[:, None, :] ^ rb[None, :, :]].sum(axis=-1)


def clusters(hashes: list[str], max_distance: int, colours: list[str] | None = None, max_colour: float = 255.0,
             block: int = 512) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` for every linked pair i < j: pHashes within ``max_distance`` bits and (when
    ``colours`` are given) colour layouts within ``max_colour``; all against all."""
    rows = _rows(hashes)
    pairs = []
    for s in range(0, len(rows), block):
        a = rows[s: s + block]
        for t in range(s, len(rows), block):
            b = rows[t: t + block]
            d = _POPCOUNT[a[:, None, :] ^ b[None, :, :]].sum(axis=-1)  # (A, B)
            for i, j in zip(*np.nonzero(d <= max_distance)):
                gi, gj = s + int(i), t + int(j)
                if gi < gj and (colours is None or colour_distance(colours[gi], colours[gj]) <= max_colour):
                    pairs.append((gi, gj, int(d[i, j])))
    return pairs


def groups(n: int, pairs: list[tuple[int, int, int]]) -> list[list[int]]:
    """Connected groups (union-find) of more than one clip, each sorted."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(find(i), []).append(i)
    return [g for g in out.values() if len(g) > 1]
