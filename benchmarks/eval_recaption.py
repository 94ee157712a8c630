"""Do recaptions name what is in the clip? Colour, shape and direction of held-out synthetic clips.

Runs ``videogen recaption`` over a held-out synthetic set (another seed than training) and checks
each new caption against the clip's ground-truth ``json.attributes``: an attribute counts as right
when the caption names the true value and no other value of it. Also checks the recaptioned set:
`videogen inspect` passes with the same sample count, and every original member is unchanged
(only ``json`` differs, by ``captions[NAME]``). Prints a table and writes JSON. The accuracy is
``videogen.evaluation.scorecard.attribute_accuracy``, the scorecard's own (``videogen scorecard``).

    .venv/bin/videogen make-synthetic --out data/synthetic-heldout --num-samples 60 --seed 1 --val-fraction 0
    .venv/bin/python benchmarks/eval_recaption.py --ckpt runs/captioner/quickstart/export
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import time
from pathlib import Path


def members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def compare(src: Path, out: Path, name: str) -> tuple[list[tuple[dict, str]], list[str]]:
    """(json, new caption) per sample, and every difference other than the new caption."""
    rows, problems = [], []
    for shard in sorted(src.glob("*.tar")):
        before, after = members(shard), members(out / shard.name)
        if [n for n, _ in before] != [n for n, _ in after]:
            problems.append(f"{shard.name}: member names or order differ")
            continue
        for (n, a), (_, b) in zip(before, after):
            if not n.endswith(".json"):
                if a != b:
                    problems.append(f"{shard.name}/{n}: bytes differ")
                continue
            old, new = json.loads(a), json.loads(b)
            caption = (new.get("captions") or {}).pop(name, None)
            if new != old:
                problems.append(f"{shard.name}/{n}: json differs beyond captions.{name}")
            if caption is None:
                problems.append(f"{shard.name}/{n}: no captions.{name}")
                continue
            rows.append((old, caption))
    return rows, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default="runs/captioner/quickstart/export", help="captioner export folder or checkpoint")
    parser.add_argument("--data", default="data/synthetic-heldout/train", help="held-out synthetic shards")
    parser.add_argument("--work", default="benchmarks/out/recaption_heldout", help="where the recaptioned shards go")
    parser.add_argument("--sampling", default="greedy", choices=["greedy", "beam", "top-p"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--name", default="recaption")
    parser.add_argument("--out", default="benchmarks/out/eval_recaption.json")
    args = parser.parse_args()

    from videogen.cli import main as videogen
    from videogen.pipelines.recaption import recaption
    from videogen.data.manifest import DatasetManifest
    from videogen.evaluation.scorecard import attribute_accuracy
    from videogen.evaluation.caption_metrics import attribute_hits, bleu4

    src, work = Path(args.data), Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    began = time.perf_counter()
    summary = recaption(args.ckpt, str(src), work, name=args.name, batch_size=args.batch_size, sampling=args.sampling,
                        progress=False)
    seconds = time.perf_counter() - began
    rows, problems = compare(src, work, args.name)
    hits = [attribute_hits(caption, meta.get("attributes") or {}) for meta, caption in rows]
    accuracy = attribute_accuracy([(meta.get("attributes") or {}, caption) for meta, caption in rows])  # the scorecard's
    refs = [(meta.get("captions") or {}).get("long", "") for meta, _ in rows]
    bleu = bleu4([c for _, c in rows], refs) if rows else 0.0
    inspect_rc = videogen(["inspect", str(work)])
    m_in, m_out = DatasetManifest.find(src), DatasetManifest.load(work)
    report = {"ckpt": args.ckpt, "data": str(src), "sampling": args.sampling, "samples": len(rows),
              "accuracy": accuracy, "bleu4_vs_long": round(bleu, 4), "captions_per_s": round(len(rows) / seconds, 2),
              "skipped": summary["skipped"], "inspect_ok": inspect_rc == 0,
              "same_sample_count": m_in is not None and m_in.num_samples == m_out.num_samples == len(rows),
              "members_unchanged": not problems, "problems": problems[:20],
              "caption_words": m_out.created_by.get("caption_words"),
              "wrong": [{"key_attributes": meta.get("attributes"), "caption": c}
                        for (meta, c), h in zip(rows, hits) if not all(h.values())][:10],
              "examples": [c for _, c in rows[:3]], "machine": "2-core CPU, shared"}
    print(f"\nrecaptions of {len(rows)} held-out clips ({args.sampling}, {report['captions_per_s']} captions/s)")
    print(f"{'attribute':<10} {'correct':>8} {'n':>4} {'accuracy':>9}")
    for attr, a in accuracy.items():
        print(f"{attr:<10} {a['correct']:>8} {a['n']:>4} {a['accuracy']:>9.1%}")
    print(f"BLEU-4 vs the long captions: {bleu:.3f}; inspect ok: {report['inspect_ok']}; same sample count: "
          f"{report['same_sample_count']}; every original member unchanged: {report['members_unchanged']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
