"""Does `videogen curate` find what it should? Precision and recall per kind of clip on labelled
synthetic sets (data_recipes/curate/testset.py: static, duplicate (exact and re-encoded at 3/4 size,
crf 32), two-scene (cut within 2 frames), black, jittery and letterboxed clips among normal moving
ones; and clips only colour tells apart, isoluminant or low-contrast, moving (to keep) or still (to
drop as static)), curated with the default options, over several seeds.

    .venv/bin/python benchmarks/eval_curate.py [--clips 80] [--seeds 1 2 3] [--workers 2]

Prints a table per seed and the totals, writes benchmarks/out/eval_curate.json. Acceptance: >= 95%
precision and recall (over all seeds) for static, duplicate, two-scene, black and both colour kinds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from data_recipes.curate import CurateOptions, curate
from data_recipes.curate.testset import KINDS, evaluate, write_curation_set

ACCEPT = ("static", "duplicate", "two_scene", "black", "colour_static", "colour_motion")


def table(result: dict) -> list[str]:
    lines = [f"  {'kind':<13} {'clips':>5} {'found':>5} {'right':>5} {'precision':>9} {'recall':>7}  missed / wrong"]
    for kind, r in result.items():
        lines.append(f"  {kind:<13} {r['clips']:>5} {r['found']:>5} {r['true_positives']:>5} {r['precision']:>9.3f} "
                     f"{r['recall']:>7.3f}  {r.get('missed') or '-'} / {r.get('wrong') or '-'}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=80)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/out/eval_curate.json")
    args = p.parse_args()
    runs, totals = [], {k: {"clips": 0, "found": 0, "true_positives": 0} for k in KINDS}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            labels = write_curation_set(Path(tmp) / "src", args.clips, seed)
            t0 = time.perf_counter()
            rep = curate(str(Path(tmp) / "src"), Path(tmp) / "curated", CurateOptions(), workers=args.workers,
                         progress=False, histograms=False)
            seconds = time.perf_counter() - t0
        result = evaluate(rep, labels)
        runs.append({"seed": seed, "curate_seconds": round(seconds, 3), "kept": rep["output"]["samples"],
                     "pieces": rep["pieces"], "kinds": result, "steps": rep["steps"]})
        print(f"seed {seed}: {args.clips} clips curated in {seconds:.1f}s with {args.workers} workers, "
              f"{rep['output']['samples']} kept of {rep['pieces']} pieces")
        print("\n".join(table(result)))
        for kind, r in result.items():
            for k in ("clips", "found", "true_positives"):
                totals[kind][k] += r[k]
    for t in totals.values():
        t["precision"] = round(t["true_positives"] / t["found"], 4) if t["found"] else 1.0
        t["recall"] = round(t["true_positives"] / t["clips"], 4) if t["clips"] else 1.0
    print(f"all {len(args.seeds)} seeds ({args.clips * len(args.seeds)} clips):")
    print("\n".join(table(totals)))
    ok = all(totals[k]["precision"] >= 0.95 and totals[k]["recall"] >= 0.95 for k in ACCEPT)
    print("acceptance (>= 95% precision and recall for " + ", ".join(ACCEPT) + "):", "PASS" if ok else "FAIL")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"clips_per_seed": args.clips, "seeds": args.seeds, "workers": args.workers,
                               "machine": "2-core CPU, shared", "totals": totals, "accepted": ok, "runs": runs},
                              indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
