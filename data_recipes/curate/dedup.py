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
(:func:`linked_pairs`): clips with the same signature are linked at once; among the distinct
signatures, candidate pairs come from all pairs (up to ``EXACT_MAX`` distinct signatures: exact,
in blocks) or from the LSH index of ``lsh.py`` (more: recall >= 99.8% at ``max_distance``, see
there), and every candidate is checked by the same rule. Linked clips form a group, and each group
keeps its best clip (``rank`` in decide.py). The work splits into ``parts`` (row blocks or hash
tables ``% parts``), one SLURM array task each; the union of the parts' pairs is the whole answer.
"""

from __future__ import annotations

import numpy as np

from data_recipes.curate import lsh
from data_recipes.curate.frames import luma

FRAMES = (0.1, 0.37, 0.63, 0.9)
_N = 32
EXACT_MAX = 4096  # up to this many distinct signatures, every pair is compared (~0.8 s at 4096)
BLOCK = 1024


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


def colour_rows(layouts: list[str]) -> np.ndarray:
    """Colour layouts (hex) -> (n, 48) uint8."""
    return np.stack([np.frombuffer(bytes.fromhex(c), np.uint8) for c in layouts]) if layouts else \
        np.zeros((0, 48), np.uint8)


def hash_rows(hashes: list[str]) -> np.ndarray:
    """pHashes (hex) -> (n, 32) uint8 packed bits."""
    return np.stack([np.frombuffer(bytes.fromhex(h), np.uint8) for h in hashes]) if hashes else \
        np.zeros((0, 32), np.uint8)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint16)


def distance(a: str, b: str) -> int:
    """Hamming distance in bits of two pHashes."""
    return int(_POPCOUNT[hash_rows([a])[0] ^ hash_rows([b])[0]].sum())


def _verify(rows: np.ndarray, colours: np.ndarray | None, i: np.ndarray, j: np.ndarray, max_distance: int,
            max_colour: float) -> np.ndarray:
    """(P, 3) int64 ``(i, j, distance)`` of the candidate pairs that link."""
    d = _POPCOUNT[rows[i] ^ rows[j]].sum(axis=1).astype(np.int64)  # (P,)
    ok = d <= max_distance
    if colours is not None:
        ok &= np.abs(colours[i].astype(np.int16) - colours[j].astype(np.int16)).mean(axis=1) <= max_colour
    return np.stack([i[ok], j[ok], d[ok]], axis=1)


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 32) x (B, 32) packed rows -> (A, B) Hamming distances."""
    x = a.view(np.uint64)[:, None, :] ^ b.view(np.uint64)[None, :, :]  # (A, B, 4)
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)
    return _POPCOUNT[x.view(np.uint8)].sum(axis=-1, dtype=np.int64)


def _exact(rows, colours, max_distance, max_colour, part, parts):
    """Every pair, in row blocks; block pair (s, t) belongs to part ``(s + t) % parts``."""
    out, blocks = [], range(0, len(rows), BLOCK)
    rows = np.ascontiguousarray(rows)
    for si, s in enumerate(blocks):
        for ti, t in enumerate(blocks):
            if t < s or (si + ti) % parts != part:
                continue
            d = _hamming(rows[s: s + BLOCK], rows[t: t + BLOCK])  # (A, B)
            i, j = np.nonzero(d <= max_distance)
            i, j = i + s, j + t
            keep = i < j
            out.append(_verify(rows, colours, i[keep], j[keep], max_distance, max_colour))
    return out


def _indexed(rows, colours, max_distance, max_colour, part, parts):
    out = []
    for positions in lsh.tables(lsh.plan(len(rows), max_distance), part, parts):
        cand = lsh.same_key_pairs(lsh.table_keys(rows, positions))  # (P, 2)
        out.append(_verify(rows, colours, cand[:, 0], cand[:, 1], max_distance, max_colour))
    return out


def linked_pairs(hashes: list[str], max_distance: int, colours: list[str] | None = None, max_colour: float = 255.0,
                 part: int = 0, parts: int = 1, exact_max: int = EXACT_MAX) -> np.ndarray:
    """(P, 3) int64 ``(i, j, distance)``, i < j, sorted: the linked pairs (pHashes within
    ``max_distance`` bits and, when ``colours`` are given, colour layouts within ``max_colour``)
    that part ``part`` of ``parts`` finds; the parts together find every one of them."""
    crow = colour_rows(colours) if colours is not None else None
    return linked_rows(hash_rows(hashes), crow, max_distance, max_colour, part, parts, exact_max)


def linked_rows(rows: np.ndarray, crow: np.ndarray | None, max_distance: int, max_colour: float = 255.0,
                part: int = 0, parts: int = 1, exact_max: int = EXACT_MAX) -> np.ndarray:
    """:func:`linked_pairs` of (n, 32) packed pHash rows and (n, 48) colour rows (or None)."""
    sig = rows if crow is None else np.concatenate([rows, crow], axis=1)  # (n, 32 or 80)
    _, first, inverse = np.unique(sig, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    out = []
    if part == 0:  # the same signature: linked to its first clip at distance 0
        rep = first[inverse]
        same = np.flatnonzero(rep != np.arange(len(sig)))
        out.append(np.stack([rep[same], same, np.zeros_like(same)], axis=1).astype(np.int64))
    order = np.sort(first)  # the distinct signatures, in clip order
    u_rows = np.ascontiguousarray(rows[order])
    u_col = crow[order] if crow is not None else None
    search = _exact if len(order) <= exact_max else _indexed
    for found in search(u_rows, u_col, max_distance, max_colour, part, parts):
        if len(found):
            out.append(np.stack([order[found[:, 0]], order[found[:, 1]], found[:, 2]], axis=1))
    if not out:
        return np.zeros((0, 3), np.int64)
    pairs = np.concatenate(out)
    n = max(1, len(sig))
    _, keep = np.unique(pairs[:, 0] * n + pairs[:, 1], return_index=True)  # (tables find a pair many times)
    return pairs[keep]


def groups(n: int, pairs) -> list[list[int]]:
    """Connected groups (union-find) of more than one clip, each sorted."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    out: dict[int, list[int]] = {}
    for i in range(n):
        out.setdefault(find(i), []).append(i)
    return [g for g in out.values() if len(g) > 1]
