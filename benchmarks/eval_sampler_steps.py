"""What a user gives up for speed: the synthetic judge's accuracy and the seconds per video of a DiT
with the Euler and Heun samplers at several step counts (one `videogen evaluate` per row).

    .venv/bin/python benchmarks/eval_sampler_steps.py --ckpt runs/dit/quickstart/export \
        --prompts data/synthetic-heldout/train --num-prompts 60 --out benchmarks/out/sampler_steps

Prompts are the held-out set's long captions (moving clips only), prompt i sampled with seed i; the
rows differ only in sampler and steps. Each row's report is in OUT/<sampler>-<steps>/; the table is
printed and written to OUT/table.md and OUT/table.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="DiT export folder or checkpoint")
    parser.add_argument("--prompts", required=True, help="a synthetic shard set (or a prompt file)")
    parser.add_argument("--num-prompts", type=int, default=60)
    parser.add_argument("--samplers", nargs="+", default=["euler", "heun"])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 30])
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--shape", type=int, nargs=3, default=(9, 64, 96))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/out/sampler_steps")
    args = parser.parse_args()

    from videogen.evaluation.runner import Options, run_evaluation

    rows = []
    for sampler in args.samplers:
        for steps in args.steps:
            metrics = run_evaluation(Options(out=str(Path(args.out) / f"{sampler}-{steps}"), ckpt=args.ckpt, prompts=args.prompts,
                                  num_prompts=args.num_prompts, caption="long", moving_only=True, metrics=["judge"],
                                  shape=tuple(args.shape), steps=steps, cfg=args.cfg, sampler=sampler,
                                  device=args.device, save_videos=False))
            rows.append({"sampler": sampler, "steps": steps, **{k: v for k, v in metrics.items()
                                                                if k.startswith(("judge_", "sample_", "num_"))}})
    names = ["judge_colour", "judge_shape", "judge_direction", "judge_speed", "judge_size", "judge_all"]
    lines = ["| sampler | steps | " + " | ".join(n[6:] for n in names) + " | s / video |",
             "| --- | --- |" + " --- |" * (len(names) + 1)]
    for r in rows:
        cells = [f"{r[n]:.1%}" if n in r else "-" for n in names]
        lines.append(f"| {r['sampler']} | {r['steps']} | " + " | ".join(cells) + f" | {r['sample_seconds_per_video']:.2f} |")
    table = "\n".join(lines)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(table + "\n")
    (Path(args.out) / "table.json").write_text(json.dumps(rows, indent=2))
    print(table)


if __name__ == "__main__":
    main()
