"""Scale-out costs on this machine: (A) what the Throughput and HangWatchdog callbacks add to a
training step; (B) one process vs two DDP processes (gloo) on the CPU.

(A) runs in this process, one thread: the tiny VAE of the distributed tests on real shards, N steps
per case, cases interleaved and repeated; the time is from ``on_train_start`` to ``on_train_end``.
(B) runs ``videogen fit`` in fresh processes with the Throughput callback and a CSV logger and
reads ``throughput/clips_per_s`` (per device) back; the DDP total is twice the per-device rate.

    .venv/bin/python benchmarks/bench_scaleout.py [--steps 40] [--repeats 2] [--out benchmarks/out/bench_scaleout.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests" / "distributed"))
sys.path.insert(0, str(ROOT / "tests"))


def timed_fit(shards: Path, steps: int, callbacks: list) -> float:
    import torch
    from lightning.pytorch import Callback, Trainer

    from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
    from videogen.models.vae import VideoAutoencoder
    from videogen.modules.lr_schedule import WarmupCosine
    from videogen.modules.vae import VAEModule

    class Clock(Callback):
        def on_train_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.t0

    torch.manual_seed(0)
    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    dm = VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 32)], batch_size=2),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=4))
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, log_every_n_steps=10, default_root_dir=tmp,
                callbacks=[clock, *callbacks]).fit(VAEModule(vae, lr_scheduler=partial(WarmupCosine, warmup=1)),
                                                   datamodule=dm)
    return clock.seconds


def section_callbacks(shards: Path, steps: int, repeats: int) -> dict:
    from videogen.callbacks.throughput import Throughput
    from videogen.callbacks.watchdog import HangWatchdog

    cases = {"none": lambda: [], "throughput": lambda: [Throughput()],
             "throughput+watchdog": lambda: [Throughput(), HangWatchdog(timeout=600, dirpath=tempfile.mkdtemp())]}
    times: dict[str, list[float]] = {k: [] for k in cases}
    timed_fit(shards, 5, [])  # warm-up
    for _ in range(repeats):
        for name, make in cases.items():
            times[name].append(timed_fit(shards, steps, make()))
    base = statistics.median(times["none"])
    return {name: {"seconds": t, "median_step_ms": 1000 * statistics.median(t) / steps,
                   "vs_none": statistics.median(t) / base} for name, t in times.items()}


def section_ddp(shards: Path, steps: int, tmp: Path) -> dict:
    from launch import data_section, fit_config, run_fit, tiny_vae_model

    out = {}
    for name, devices in (("1 process", 1), ("DDP 2 processes", 2)):
        run = tmp / name.replace(" ", "_")
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run), "name": "csv"}}
        cfg = fit_config(tmp / f"{run.name}.yaml", tiny_vae_model(), data_section(shards, batch_size=2), run,
                         devices=devices, strategy="ddp" if devices > 1 else "auto", max_steps=steps, logger=logger,
                         log_every_n_steps=10, callbacks=[{"class_path": "videogen.callbacks.throughput.Throughput"}])
        t0 = time.perf_counter()
        run_fit(cfg, timeout=900)
        wall = time.perf_counter() - t0
        rows = [r for r in csv.DictReader(open(next(run.rglob("metrics.csv")))) if r.get("throughput/clips_per_s")]
        per_device = [float(r["throughput/clips_per_s"]) for r in rows[1:]]  # the first window includes warm-up
        out[name] = {"devices": devices, "clips_per_s_per_device": statistics.median(per_device),
                     "clips_per_s_total": devices * statistics.median(per_device), "process_wall_s": wall}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "bench_scaleout.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from launch import write_shards

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_shards(tmp / "shards", [12, 12, 8])
        result = {"steps": args.steps, "callbacks": section_callbacks(tmp / "shards", args.steps, args.repeats),
                  "ddp": section_ddp(tmp / "shards", args.steps, tmp)}
    print(f"\n(A) callbacks, tiny VAE 9x32x32 batch 2, {args.steps} steps, 1 thread")
    print(f"{'case':<22}{'ms/step':>10}{'vs none':>10}")
    for name, r in result["callbacks"].items():
        print(f"{name:<22}{r['median_step_ms']:>10.1f}{r['vs_none']:>10.3f}")
    print(f"\n(B) 1 process vs DDP (gloo), same model, {args.steps} steps")
    print(f"{'case':<18}{'clips/s/device':>16}{'clips/s total':>15}{'wall s':>9}")
    for name, r in result["ddp"].items():
        print(f"{name:<18}{r['clips_per_s_per_device']:>16.2f}{r['clips_per_s_total']:>15.2f}{r['process_wall_s']:>9.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
