"""Near-duplicate candidates at corpus scale: locality-sensitive hashing over the pHash bits.

All pairs of n clips are n^2 / 2 comparisons (10 M hash pairs/s here: ~8 min at 100 k clips, ~14
hours at 1 M). Instead each of ``tables`` hash tables keys every clip by ``bits`` of its 256 pHash
bits, drawn at random (a fixed seed: every run and every array task draws the same tables); two
clips are candidates when they share a key in some table, and only candidates are compared. Two
hashes ``d`` bits apart agree on a table's bits with probability ``(1 - d/256)^bits``, so they are
found with probability ``1 - (1 - (1 - d/256)^bits)^tables``; :func:`plan` picks ``bits`` from
the number of clips (about log2(n) + 1, so a table's chance collisions stay ~n/4) and ``tables``
so that a pair exactly ``max_distance`` apart is missed with probability ``MISS`` (closer pairs
far less often: at 40 bits a re-encode typically sits at 0-34). Clips with the same signature are
collapsed first, so a thousand copies of one clip cost one row, not half a million pairs.

Tables are independent: :func:`tables` gives any subset of them (``part`` of ``parts``),
which is how a SLURM array splits the search; the union over the parts is the whole answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MISS = 0.002  # chance of missing a pair exactly max_distance bits apart (closer pairs: far less)
HASH_BITS = 256
SEED = 20261202


@dataclass(frozen=True)
class Plan:
    bits: int  # pHash bits per table key
    tables: int

    def selections(self) -> np.ndarray:
        """(tables, bits) the bit positions of every table (the same for every run with this plan)."""
        rng = np.random.default_rng([SEED, self.bits, self.tables])
        return np.stack([rng.choice(HASH_BITS, self.bits, replace=False) for _ in range(self.tables)])


def plan(n: int, max_distance: int) -> Plan:
    """Key length and table count for ``n`` distinct signatures and the link distance."""
    bits = int(min(30, max(12, math.ceil(math.log2(max(n, 2))) + 1)))
    agree = (1 - max_distance / HASH_BITS) ** bits  # one table finds a pair max_distance apart
    tables = math.ceil(math.log(MISS) / math.log1p(-agree)) if agree < 1 else 1
    return Plan(bits, max(1, tables))


def table_keys(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(n, 32) packed pHash rows, bit ``positions`` -> (n,) int64 keys."""
    key = np.zeros(len(rows), np.int64)
    for k, p in enumerate(positions):
        key |= ((rows[:, p >> 3] >> (7 - (p & 7))) & 1).astype(np.int64) << k
    return key


def same_key_pairs(keys: np.ndarray) -> np.ndarray:
    """(P, 2) int64 every pair i < j of rows with equal keys (work proportional to the pairs found)."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    out = []
    alive = np.flatnonzero(sk[1:] == sk[:-1])  # positions i with sk[i] == sk[i + 1]
    step = 1
    while len(alive):
        a, b = order[alive], order[alive + step]
        out.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
        step += 1
        alive = alive[alive + step < len(sk)]
        alive = alive[sk[alive] == sk[alive + step]]
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def tables(the_plan: Plan, part: int = 0, parts: int = 1):
    """The bit positions of the tables ``t % parts == part``."""
    for t, positions in enumerate(the_plan.selections()):
        if t % parts == part:
            yield positions
