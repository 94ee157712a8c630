"""What the VideoEvaluation callback costs at the quickstart's size: seconds to sample P prompts with
the quickstart DiT's settings (9x64x96, 20 Euler steps, cfg 4: the module's val_* settings) and to
compute the default metrics on them (VBench-style dims, VAE consistency, VAE-FD, judge), and once per
run the reference statistics. Networks are randomly initialised at the quickstart configs' sizes
(speed does not depend on the weights).

    python benchmarks/bench_evaluate.py [--prompts 8] [--threads 2] [--out benchmarks/out/bench_evaluate.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/bench_evaluate.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from data_recipes.synthetic import write_synthetic
    from videogen.data.stages import Skips
    from videogen.evaluation.features import VAEFeatures
    from videogen.evaluation.runner import read_prompts
    from videogen.evaluation.suite import Tools, evaluate, plan_metrics, reference_stats
    from videogen.evaluation.videos import EvalVideo, to_frames
    from videogen.models.configurable import from_config
    from videogen.modules.dit import DiTModule
    from videogen.pretrained import save_export

    root = Path(__file__).parents[1]
    vae_cfg = yaml.safe_load((root / "configs/vae/quickstart.yaml").read_text())["model"]["init_args"]["vae"]
    dit_cfg = yaml.safe_load((root / "configs/dit/quickstart.yaml").read_text())["model"]["init_args"]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        vae = from_config(vae_cfg)
        c = vae_cfg["init_args"]
        stats = {"latent_channels": c["latent_channels"], "latent_mean": [0.0] * c["latent_channels"],
                 "latent_std": [1.0] * c["latent_channels"], "temporal_compression": c["temporal_compression"],
                 "spatial_compression": c["spatial_compression"]}
        vae_dir = save_export(Path(tmp) / "vae", vae, stats)
        module = DiTModule(from_config(dit_cfg["dit"]), vae=str(vae_dir), text_max_length=dit_cfg["text_max_length"],
                           ema_decay=None).eval()
        write_synthetic(Path(tmp) / "heldout", num_samples=60, seed=1, val_fraction=0.0)
        skips = Skips(max_logged=0)
        targets = read_prompts(str(Path(tmp) / "heldout" / "train"), "long", args.prompts, True, skips)
        f, h, w = dit_cfg["val_shape"]
        module.sample([targets[0][0]], f, h, w, steps=1)  # warm-up: text encoder load, first forward
        began = time.perf_counter()
        clips = module.sample([p for p, _ in targets], f, h, w, steps=dit_cfg["val_steps"], cfg=dit_cfg["val_cfg"],
                              seed=list(range(len(targets))))
        sample_s = time.perf_counter() - began
        tools = Tools(vae=VAEFeatures(module.vae_export), reference=str(Path(tmp) / "heldout" / "train"),
                      cache_dir=Path(tmp) / "cache", shape=(f, h, w), progress=False)
        began = time.perf_counter()
        reference_stats(tools, tools.vae, skips)
        reference_s = time.perf_counter() - began
        videos = [EvalVideo(str(i), to_frames(v), p, a) for i, (v, (p, a)) in enumerate(zip(clips, targets))]
        began = time.perf_counter()
        groups, _ = plan_metrics(None, tools, True)
        metrics, _ = evaluate(videos, groups, tools, skips)
        metrics_s = time.perf_counter() - began
    result = {"prompts": len(targets), "shape": [f, h, w], "steps": dit_cfg["val_steps"], "cfg": dit_cfg["val_cfg"],
              "threads": args.threads, "sample_seconds": round(sample_s, 2), "metrics_seconds": round(metrics_s, 2),
              "reference_seconds_once": round(reference_s, 2), "groups": groups,
              "seconds_per_evaluation": round(sample_s + metrics_s, 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
