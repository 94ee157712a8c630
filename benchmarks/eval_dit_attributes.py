"""Does a trained DiT follow its prompts? Colour and direction of generated videos, judged from pixels.

Prompts are the long captions of a held-out synthetic set (another seed than training); each
generated video is judged with the synthetic generator's own attribute definitions
(`data_recipes.synthetic.judge_clip`) and compared with the attributes the caption describes.

    .venv/bin/python benchmarks/eval_dit_attributes.py --dit runs/dit/quickstart/export \
        --num-prompts 60 --seed 1 --out benchmarks/out/eval_dit.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
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
    parser.add_argument("--out", default="benchmarks/out/eval_dit.json")
    args = parser.parse_args()

    from data_recipes.synthetic import judge_clip
    from videogen.sampling import NULL_CAPTION, generate, load_trained_dit, sampling_kwargs

    torch.set_grad_enabled(False)
    trained = load_trained_dit(args.dit)
    stats, vae, text_encoder = trained.stats, trained.vae_export.module, trained.text_encoder
    null = text_encoder([NULL_CAPTION])
    samples = held_out_samples(args.num_prompts, args.seed)
    frames, height, width = args.shape
    results, began = [], time.perf_counter()
    for i in range(0, len(samples), args.batch):
        chunk = samples[i: i + args.batch]
        prompts = [s["txt"] if args.caption == "txt" else s["json"]["captions"][args.caption] for s in chunk]
        text, mask = text_encoder(prompts)
        videos = generate(trained.dit, vae, stats, text, mask, *null, num_frames=frames, height=height, width=width,
                          steps=args.steps, cfg=args.cfg, seed=1000 + i, **sampling_kwargs(stats))
        for s, prompt, video in zip(chunk, prompts, videos):
            judged = judge_clip(to_pixels(video))
            want = s["json"]["attributes"]
            results.append({"key": s["__key__"], "prompt": prompt, "want_colour": want["colour"],
                            "want_direction": want["direction"], "got_colour": judged.get("colour"),
                            "got_direction": judged.get("direction")})
    n = len(results)
    colour = sum(r["got_colour"] == r["want_colour"] for r in results) / n
    direction = sum(r["got_direction"] == r["want_direction"] for r in results) / n
    summary = {"num_prompts": n, "colour_accuracy": colour, "direction_accuracy": direction,
               "colour_confusions": Counter(f"{r['want_colour']}->{r['got_colour']}" for r in results
                                            if r["got_colour"] != r["want_colour"]),
               "direction_confusions": Counter(f"{r['want_direction']}->{r['got_direction']}" for r in results
                                               if r["got_direction"] != r["want_direction"]),
               "shape": args.shape, "steps": args.steps, "cfg": args.cfg, "caption": args.caption,
               "seconds": round(time.perf_counter() - began, 1), "dit": str(args.dit), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"{n} held-out prompts (seed {args.seed}, {args.caption} captions), {args.steps} steps, cfg {args.cfg}:")
    print(f"  colour    {colour:.1%}   confusions {dict(summary['colour_confusions'])}")
    print(f"  direction {direction:.1%}   confusions {dict(summary['direction_confusions'])}")
    print(f"  ({summary['seconds']} s) -> {args.out}")


if __name__ == "__main__":
    main()
