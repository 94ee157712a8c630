"""Time of connect's end fit (``fit_end_latent``) with the prefix decoded once against decoding it at every step.

    python benchmarks/bench_connect_fit.py [--frames 17 33 65] [--size 128] [--steps 10] [--threads 1]
        [--out benchmarks/out/bench_connect_fit.json]

``connect`` fits the last latent of a sampled video through the decoder so the decoded last frame is the given
one (``videogen.pipelines.video.fit_end_latent``, 50 Adam steps by default). Two ways to run a step:

* ``tail`` (what ships): ``VideoAutoencoder.tail_decoder`` decodes the frames before the last latent once and
  every step decodes only the last latent frame from a copy of the causal caches they left;
* ``whole`` (session 13's code, kept here as the before row): every step decodes the whole clip, one latent
  frame at a time, and keeps the last chunk.

Both on ``vae_tiny()`` (random weights: the time does not depend on them) at ``--threads`` torch threads, one
clip of each length at ``--size`` x ``--size``; the two fitted latents must agree (the script says by how much).
Prints a table and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from timing import best_of
from videogen.encoding import decode_plan, denormalize_latents
from videogen.models.vae import vae_tiny
from videogen.pipelines.video import fit_end_latent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[17, 33, 65], help="clip lengths in frames")
    p.add_argument("--size", type=int, default=128, help="frame height and width in pixels (default 128)")
    p.add_argument("--steps", type=int, default=10, help="Adam steps of the fit (default 10; sampling uses 50)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each fit; the best time counts (default 1)")
    p.add_argument("--out", default="benchmarks/out/bench_connect_fit.json", help="where the JSON goes")
    return p.parse_args()


def fit_whole(vae, stats: dict, z: torch.Tensor, end_frame: torch.Tensor, steps: int, lr: float = 0.05) -> torch.Tensor:
    """The fit as session 13 ran it: every step decodes the whole clip (one latent frame per chunk)."""
    raw_prefix = denormalize_latents(z[:, :, :-1].float(), stats)
    plan = decode_plan(vae, z)
    last = z[:, :, -1:].detach().clone().float().requires_grad_(True)
    optimizer = torch.optim.Adam([last], lr=lr)
    vae.requires_grad_(False)
    with torch.enable_grad():
        for _ in range(steps):
            raw = torch.cat([raw_prefix, denormalize_latents(last, stats)], dim=2)
            for tail in vae.decode_chunks(raw, 1, plan.tile, plan.tile_overlap):
                pass
            loss = (tail[:, :, -1] - end_frame).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    vae.requires_grad_(True)
    return torch.cat([z[:, :, :-1], last.detach()], dim=2)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = vae_tiny().eval()
    tc, sc, c = vae.temporal_compression, vae.spatial_compression, vae.latent_channels
    stats = {"latent_mean": [0.0] * c, "latent_std": [1.0] * c}
    warm = torch.zeros(1, c, 2, args.size // sc, args.size // sc)
    fit_end_latent(vae, stats, warm, torch.zeros(1, 3, args.size, args.size), 1)  # first-call setup, not timed
    rows = []
    for frames in args.frames:
        if (frames - 1) % tc:
            raise SystemExit(f"--frames {frames}: must be 1 + k * {tc}")
        gen = torch.Generator().manual_seed(frames)
        z = torch.randn(1, c, 1 + (frames - 1) // tc, args.size // sc, args.size // sc, generator=gen)
        end = torch.rand(1, 3, args.size, args.size, generator=gen) * 2 - 1
        tail_s, fitted = best_of(lambda: fit_end_latent(vae, stats, z, end, args.steps), args.repeats)
        whole_s, reference = best_of(lambda: fit_whole(vae, stats, z, end, args.steps), args.repeats)
        rows.append({"frames": frames, "size": args.size, "latent_frames": z.shape[2], "steps": args.steps,
                     "tail_seconds": tail_s, "whole_seconds": whole_s, "speedup": whole_s / tail_s,
                     "max_abs_diff": (fitted - reference).abs().max().item()})
        print(f"  {frames}x{args.size}x{args.size}: tail {tail_s:.2f}s whole {whole_s:.2f}s", file=sys.stderr,
              flush=True)
    print(f"connect end fit, {args.steps} Adam steps, vae_tiny, {args.threads} thread(s)")
    print(f"{'clip':>12} {'latent t':>8} | {'tail s':>7} {'whole s':>8} {'speedup':>7} | {'max |diff|':>10}")
    for r in rows:
        print(f"{r['frames']:>4}x{r['size']}x{r['size']:<3} {r['latent_frames']:>8} | {r['tail_seconds']:>7.2f} "
              f"{r['whole_seconds']:>8.2f} {r['speedup']:>6.1f}x | {r['max_abs_diff']:>10.2e}")
    report = {"command": " ".join(["python", *sys.argv]), "threads": args.threads, "repeats": args.repeats,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "load_average": list(os.getloadavg())},
              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
