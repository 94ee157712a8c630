"""Curation throughput: clips per second of each step, and of a whole `videogen curate` run with 1
and 2 worker processes, on the labelled synthetic set (data_recipes/curate/testset.py: 64-160 px
clips of 9-45 frames, isoluminant and low-contrast ones among them); plus the global duplicate
search over all pairs (hash pairs per second; benchmarks/bench_dedup.py measures the index).

    flock /tmp/videogen-cpu.lock .venv/bin/python benchmarks/bench_curate.py [--clips 48] [--repeat 2]

Prints a table and writes benchmarks/out/bench_curate.json. Each step is timed alone over every
clip (the analysis frames decoded once beforehand), best of --repeat passes, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from timing import best  # noqa: E402


def main() -> int:
    import cv2

    from data_recipes.curate import CurateOptions, curate, dedup, motion, quality, scene
    from data_recipes.curate.frames import decode_clip
    from data_recipes.curate.score import split_scenes
    from data_recipes.curate.testset import write_curation_set
    from videogen.data import stages
    from videogen.data.decode import make_decoder
    from videogen.data.shards import expand_urls

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", default="benchmarks/out/bench_curate.json")
    args = p.parse_args()
    cv2.setNumThreads(1)
    opts = CurateOptions()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        write_curation_set(src, args.clips, seed=0)
        skips = stages.Skips()
        decoder = make_decoder()
        records = list(stages.parse(stages.group_samples(stages.read_tar(expand_urls(str(src)), skips, 2**31)),
                                    skips, decoder, require_caption=False))
        n = len(records)
        frames_total = sum(r.num_frames for r in records)

        def decode_all():
            return [decode_clip(r, decoder, opts.analysis_side, opts.max_frames) for r in records]

        clips = decode_all()
        steps = {
            "decode (analysis frames)": decode_all,
            "scene: cut detection": lambda: [scene.detect_cuts(scene.cut_scores(c.frames), opts.cut_threshold,
                                                               opts.cut_ratio) for c in clips],
            "scene: split + re-encode": lambda: [split_scenes(c, decoder, opts) for c in clips],
            "quality": lambda: [quality.quality_scores(c.frames, len(c.media), c.width, c.height, c.duration)
                                for c in clips],
            "motion (Farneback + phase corr.)": lambda: [motion.motion_scores(c.frames, c.indices, c.fps,
                                                                              opts.motion_pairs) for c in clips],
            "dedup signatures": lambda: [dedup.signatures(c.frames) for c in clips],
        }
        for name, fn in steps.items():
            s = best(fn, args.repeat)
            rows.append({"step": name, "clips": n, "seconds": round(s, 4), "clips_per_s": round(n / s, 1),
                         "frames_per_s": round(frames_total / s, 1)})
        for workers in (1, 2):
            def whole(workers=workers):
                out = Path(tmp) / f"out{workers}-{time.perf_counter_ns()}"
                curate(str(src), out, opts, workers=workers, progress=False, histograms=False)
            s = best(whole, args.repeat)
            rows.append({"step": f"whole run, {workers} worker{'s' if workers > 1 else ''}", "clips": n,
                         "seconds": round(s, 4), "clips_per_s": round(n / s, 1),
                         "frames_per_s": round(frames_total / s, 1)})
    rng = np.random.default_rng(0)
    m = 4000
    hashes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(m)]
    s = best(lambda: dedup.linked_pairs(hashes, opts.dedup_max_distance), 1)  # 4000 <= EXACT_MAX: all pairs
    pairs = m * (m - 1) // 2
    print(f"{'step':<34} {'clips':>5} {'seconds':>8} {'clips/s':>8} {'frames/s':>9}")
    for r in rows:
        print(f"{r['step']:<34} {r['clips']:>5} {r['seconds']:>8.3f} {r['clips_per_s']:>8.1f} {r['frames_per_s']:>9.1f}")
    print(f"dedup search: {m} hashes, {pairs} pairs in {s:.2f}s = {pairs / s / 1e6:.1f} M pairs/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"2-core CPU, shared ({platform.processor() or platform.machine()})",
                               "clips": n, "frames": frames_total, "steps": rows,
                               "dedup_search": {"hashes": m, "pairs": pairs, "seconds": round(s, 3),
                                                "pairs_per_s": round(pairs / s)}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
