"""Does `videogen curate` find what it should? Precision and recall per kind of clip on a labelled
synthetic set (data_recipes/curate/testset.py: static, duplicate (exact and re-encoded), two-scene,
black, jittery and letterboxed clips among normal ones), curated with the default options.

    .venv/bin/python benchmarks/eval_curate.py [--clips 80] [--seed 1] [--workers 2]

Prints a table and writes benchmarks/out/eval_curate.json. Acceptance: >= 95% precision and
recall for static, duplicate, two-scene and black clips.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from data_recipes.curate import CurateOptions, curate
from data_recipes.curate.testset import evaluate, write_curation_set

ACCEPT = ("static", "duplicate", "two_scene", "black")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=80)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/out/eval_curate.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "curated"
        t0 = time.perf_counter()
        labels = write_curation_set(src, args.clips, args.seed)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = curate(str(src), dst, CurateOptions(), workers=args.workers, progress=False, histograms=False)
        seconds = time.perf_counter() - t0
        shutil.rmtree(dst, ignore_errors=True)
    result = evaluate(rep, labels)
    print(f"{args.clips} clips (seed {args.seed}) made in {made:.1f}s, curated in {seconds:.1f}s "
          f"with {args.workers} workers: {rep['output']['samples']} kept of {rep['pieces']} pieces")
    print(f"{'kind':<10} {'clips':>5} {'found':>5} {'precision':>9} {'recall':>7}  missed / wrong")
    for kind, r in result.items():
        print(f"{kind:<10} {r['clips']:>5} {r['found']:>5} {r['precision']:>9.3f} {r['recall']:>7.3f}  "
              f"{r['missed'] or '-'} / {r['wrong'] or '-'}")
    ok = all(result[k]["precision"] >= 0.95 and result[k]["recall"] >= 0.95 for k in ACCEPT)
    print("acceptance (>= 95% precision and recall for " + ", ".join(ACCEPT) + "):", "PASS" if ok else "FAIL")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"clips": args.clips, "seed": args.seed, "workers": args.workers,
                               "curate_seconds": round(seconds, 3), "kinds": result, "accepted": ok,
                               "steps": rep["steps"], "machine": "2-core CPU, shared"}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
