"""Does a trained DiT follow its prompts? Colour and direction of generated videos, judged from pixels.

Prompts are the long captions of a held-out synthetic set (another seed than training); each
generated video is judged with the synthetic generator's own attribute definitions
(`videogen.evaluation.judge.judge_clip`) and compared with the attributes the caption describes. The
sampling and judging are `videogen.evaluation.scorecard.t2v_accuracy`, the scorecard's own
(`videogen scorecard`): prompt i is sampled with seed `--sample-seed + i` whatever the batch size.

    .venv/bin/python benchmarks/eval_dit_attributes.py --dit runs/dit/quickstart/export \
        --num-prompts 60 --seed 1 --out benchmarks/out/eval_dit.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def held_out_samples(num: int, seed: int) -> list[dict]:
    """The first ``num`` moving clips of the synthetic set made with ``seed`` (a still image has no direction)."""
    from data_recipes.synthetic import generate_sample

    samples, index = [], 0
    while len(samples) < num:
        s = generate_sample(index, seed)
        index += 1
        if s["json"]["attributes"]["direction"] != "none":
            samples.append(s)
    return samples


def to_pixels(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, what the synthetic set's judge reads."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dit", required=True, help="DiT export folder (or checkpoint)")
    parser.add_argument("--num-prompts", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1, help="synthetic seed of the held-out prompts (training used 0)")
    parser.add_argument("--caption", default="long", help="json caption to prompt with ('txt' for the short one)")
    parser.add_argument("--shape", type=int, nargs=3, default=(9, 64, 96), metavar=("FRAMES", "H", "W"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--sample-seed", type=int, default=0, help="prompt i is sampled with seed SAMPLE_SEED + i")
    parser.add_argument("--out", default="benchmarks/out/eval_dit.json")
    args = parser.parse_args()

    from videogen.evaluation.generation import load_generator
    from videogen.evaluation.scorecard import t2v_accuracy

    torch.set_grad_enabled(False)
    generator = load_generator(args.dit)
    samples = held_out_samples(args.num_prompts, args.seed)
    frames, height, width = args.shape
    prompts = [s["txt"] if args.caption == "txt" else s["json"]["captions"][args.caption] for s in samples]
    began = time.perf_counter()
    judged = t2v_accuracy(generator, prompts, [s["json"]["attributes"] for s in samples], num_frames=frames,
                          height=height, width=width, steps=args.steps, cfg=args.cfg, seed=args.sample_seed,
                          batch_size=args.batch)
    results = [{"key": s["__key__"], **r} for s, r in zip(samples, judged["results"])]
    n, colour, direction = judged["n"], judged["colour"], judged["direction"]
    summary = {"num_prompts": n, "colour_accuracy": colour, "direction_accuracy": direction,
               "colour_confusions": judged["confusions"]["colour"],
               "direction_confusions": judged["confusions"]["direction"],
               "shape": args.shape, "steps": args.steps, "cfg": args.cfg, "caption": args.caption,
               "sample_seed": args.sample_seed, "seconds": round(time.perf_counter() - began, 1), "dit": str(args.dit),
               "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"{n} held-out prompts (seed {args.seed}, {args.caption} captions), {args.steps} steps, cfg {args.cfg}:")
    print(f"  colour    {colour:.1%}   confusions {dict(summary['colour_confusions'])}")
    print(f"  direction {direction:.1%}   confusions {dict(summary['direction_confusions'])}")
    print(f"  ({summary['seconds']} s) -> {args.out}")


if __name__ == "__main__":
    main()
