"""Near-duplicate search at corpus scale: the LSH index (data_recipes/curate/lsh.py) against all pairs.

Synthetic signatures (random 256-bit pHashes and 48-byte colour layouts) in self-contained blocks
of 50 k clips, each block with ``--dup-share`` of its clips planted as near-duplicates of another
clip of the same block: 0 to ``--max-flip`` pHash bits flipped (uniform: harsher than real
re-encodes, measured at 0-34 bits) and the colour layout moved by <= 2 levels. For each size the
index search runs in its own process (time, peak resident memory = ru_maxrss); recall is counted
on the first block (the whole set under 50 k) against the exact all-pairs answer there (itself
timed, once per block size). Memory: the process's peak resident set (ru_maxrss; the imports, torch
among them, are ~600 MB of it) and the search's own peak of traced allocations (tracemalloc).

    flock -x /tmp/videogen-cpu.lock .venv/bin/python benchmarks/bench_dedup.py [--sizes 10000 100000 1000000]

Prints a table and writes benchmarks/out/bench_dedup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

BLOCK = 50_000
MAX_DISTANCE, MAX_COLOUR = 40, 6.0


def signatures(n: int, dup_share: float, max_flip: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32) pHash rows and (n, 48) colour rows; block b's rows come from seed [seed, b] alone."""
    rows, cols = np.empty((n, 32), np.uint8), np.empty((n, 48), np.uint8)
    for b, s in enumerate(range(0, n, BLOCK)):
        m = min(BLOCK, n - s)
        rng = np.random.default_rng([seed, b])
        r = rng.integers(0, 256, (m, 32), dtype=np.uint8)
        c = rng.integers(0, 256, (m, 48), dtype=np.uint8)
        dups = int(m * dup_share)
        copies = rng.choice(m, dups, replace=False)
        rest = np.setdiff1d(np.arange(m), copies)
        originals = rng.choice(rest, dups)
        flips = rng.integers(0, max_flip + 1, dups)
        bits = np.unpackbits(r[originals], axis=1)  # (dups, 256)
        for k in range(dups):
            bits[k, rng.choice(256, flips[k], replace=False)] ^= 1
        r[copies] = np.packbits(bits, axis=1)
        c[copies] = np.clip(c[originals].astype(np.int16) + rng.integers(-2, 3, (dups, 48)), 0, 255)
        rows[s: s + m], cols[s: s + m] = r, c
    return rows, cols


def single(n: int, dup_share: float, max_flip: int, exact: bool) -> dict:
    """One measurement in this process: the index search over n signatures (or all pairs when exact)."""
    from data_recipes.curate import dedup, lsh

    rows, cols = signatures(n, dup_share, max_flip)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the interpreter, numpy, torch (imported)
    tracemalloc.start()
    t0 = time.perf_counter()
    pairs = dedup.linked_rows(rows, cols, MAX_DISTANCE, MAX_COLOUR, exact_max=n if exact else 0)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    first = pairs[(pairs[:, 0] < BLOCK) & (pairs[:, 1] < BLOCK)]
    the_plan = lsh.plan(n, MAX_DISTANCE)
    return {"clips": n, "method": "all pairs" if exact else "lsh index", "seconds": round(seconds, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_search_mb": round(base_rss, 1), "search_peak_alloc_mb": round(traced, 1),
            "pairs": int(len(pairs)), "block0_pairs": first[:, :2].tolist(),
            "bits": None if exact else the_plan.bits, "tables": None if exact else the_plan.tables}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dup-share", type=float, default=0.05)
    p.add_argument("--max-flip", type=int, default=MAX_DISTANCE)
    p.add_argument("--out", default="benchmarks/out/bench_dedup.json")
    p.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.single is not None:
        print(json.dumps(single(args.single, args.dup_share, args.max_flip, args.exact)))
        return 0

    def run(n: int, exact: bool) -> dict:
        cmd = [sys.executable, __file__, "--single", str(n), "--dup-share", str(args.dup_share),
               "--max-flip", str(args.max_flip)] + (["--exact"] if exact else [])
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    truths = {m: run(m, exact=True) for m in sorted({min(BLOCK, n) for n in args.sizes})}
    rows = [dict(t, recall=1.0) for t in truths.values()]
    for n in args.sizes:
        r = run(n, exact=False)
        got = {tuple(x) for x in r["block0_pairs"]}
        want = {tuple(x) for x in truths[min(BLOCK, n)]["block0_pairs"]}
        r["recall"] = round(len(got & want) / len(want), 5) if want else 1.0
        r["extra"] = len(got - want)  # pairs the index links that all pairs does not (must be 0: same rule)
        rows.append(r)
    print(f"{'method':<10} {'clips':>9} {'bits':>4} {'tables':>6} {'seconds':>8} {'peak RSS MB':>11} "
          f"{'search MB':>9} {'pairs':>8} {'recall (first 50k)':>18}")
    for r in rows:
        print(f"{r['method']:<10} {r['clips']:>9} {r['bits'] or '-':>4} {r['tables'] or '-':>6} {r['seconds']:>8.2f} "
              f"{r['peak_rss_mb']:>11.1f} {r['search_peak_alloc_mb']:>9.1f} {r['pairs']:>8} {r['recall']:>18.5f}")
    for r in rows:
        r.pop("block0_pairs")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"2-core CPU, shared ({platform.processor() or platform.machine()})",
                               "max_distance": MAX_DISTANCE, "max_colour": MAX_COLOUR, "dup_share": args.dup_share,
                               "max_flip": args.max_flip, "load_before": os.getloadavg(), "rows": rows},
                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
