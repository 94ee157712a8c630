"""What the reliability mechanisms cost: atomic checkpoint writes and the NaN/Inf step guard.

    python benchmarks/bench_reliability.py [--sizes-mb 10 100] [--repeats 3] [--out benchmarks/out/bench_reliability.json]

* checkpoint save: a checkpoint of N MB of float32 tensors written by Lightning's ``TorchCheckpointIO``
  (serialise to memory, write over the final name) and by ``AtomicCheckpointIO`` (temp file, fsync,
  rename, folder fsync), into a folder on the repository's disk (``benchmarks/out/``, not /tmp, which
  may be RAM); the best of ``--repeats``;
* guard: ``nonfinite_gradients`` (one fused inf-norm per device) over the gradients of the quickstart
  DiT and VAE, against one forward+backward of the same network on a quickstart-sized batch.

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
from timing import best


def checkpoint_rows(sizes_mb: list[float], repeats: int, folder: Path) -> list[dict]:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from videogen.checkpoint_io import AtomicCheckpointIO

    rows = []
    for mb in sizes_mb:
        n = int(mb * 2**20 / 4)
        ckpt = {"state_dict": {f"w{i}": torch.randn(n // 8) for i in range(8)}, "global_step": 1}
        for name, io in (("TorchCheckpointIO (Lightning)", TorchCheckpointIO()), ("AtomicCheckpointIO", AtomicCheckpointIO())):
            path = folder / "last.ckpt"
            seconds = best(lambda: io.save_checkpoint(ckpt, path), repeats)
            rows.append({"case": f"save {mb:g} MB", "writer": name, "seconds": round(seconds, 4),
                         "MB_per_s": round(mb / seconds, 1)})
    return rows


def guard_rows(repeats: int) -> list[dict]:
    from videogen.models.dit import DiT
    from videogen.models.vae import VideoAutoencoder
    from videogen.callbacks.guards import nonfinite_gradients

    torch.manual_seed(0)
    dit = DiT(in_channels=8, patch_size=(1, 2, 2), hidden_size=192, depth=4, num_heads=4, text_dim=384)
    vae = VideoAutoencoder(latent_channels=8, base_channels=16, channel_mult=(1, 2), temporal_compression=2,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    rows = []

    def dit_step():
        dit.zero_grad(set_to_none=True)
        x = torch.randn(8, 8, 5, 16, 24)
        out = dit(x, torch.rand(8), torch.randn(8, 48, 384), torch.ones(8, 48, dtype=torch.bool))
        out.float().pow(2).mean().backward()

    def vae_step():
        vae.zero_grad(set_to_none=True)
        x = torch.rand(4, 3, 9, 64, 96) * 2 - 1
        rec, post = vae(x)
        ((rec - x).abs().mean() + post.kl().mean() * 1e-6).backward()

    for name, net, step in (("DiT quickstart (192x4)", dit, dit_step), ("VAE quickstart", vae, vae_step)):
        step_s = best(step, repeats)
        params = list(net.parameters())
        check_s = best(lambda: nonfinite_gradients(params), max(repeats, 20))
        rows.append({"case": f"guard {name}", "params": sum(p.numel() for p in params),
                     "step_seconds": round(step_s, 4), "check_ms": round(check_s * 1e3, 3),
                     "overhead_pct": round(100 * check_s / step_s, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/out/bench_reliability.json")
    args = parser.parse_args()
    out_dir = Path(args.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ckpt-", dir=out_dir))
    try:
        ckpt = checkpoint_rows(args.sizes_mb, args.repeats, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    guard = guard_rows(args.repeats)
    print(f"{'case':<34}{'writer':<32}{'seconds':>10}{'MB/s':>10}")
    for r in ckpt:
        print(f"{r['case']:<34}{r['writer']:<32}{r['seconds']:>10.4f}{r['MB_per_s']:>10.1f}")
    print(f"\n{'case':<34}{'params':>12}{'step s':>10}{'check ms':>10}{'overhead %':>12}")
    for r in guard:
        print(f"{r['case']:<34}{r['params']:>12}{r['step_seconds']:>10.4f}{r['check_ms']:>10.3f}{r['overhead_pct']:>12.3f}")
    result = {"machine": "2-core CPU, shared", "torch_threads": torch.get_num_threads(), "checkpoint": ckpt,
              "guard": guard}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
