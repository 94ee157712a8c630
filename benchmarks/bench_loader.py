"""How close the data loader comes to raw decord on the same work.

    python benchmarks/bench_loader.py [--data DIR] [--workers 2] [--out benchmarks/out/bench_loader.json]

1. The epoch's plan: the training stream's own stages (``VideoStream.plans``, same seed, same
   workers) give, for every clip of one epoch, the exact frame indices and the size decord is asked
   to scale to. Nothing is decoded yet.
2. Raw decord: one process, one thread, ``decord.VideoReader(bytes, height, width).get_batch(indices)``
   for exactly those clips, frames and sizes, the media already in memory (no tar reading, no crop,
   no collate). Best of ``--repeats`` runs.
3. The loader: ``VideoDataModule(...).train_dataloader()`` with ``--workers`` processes over one
   epoch (read tar + parse + plan + decode + resize + crop + bucket + collate), rate measured after
   the first ``--warmup`` batches (worker start-up). Its batches are checked against the plan: the
   same clips in the same batches.
4. Peak memory of the main process plus its workers, sampled every 20 ms from /proc: summed RSS
   (counts shared pages once per process) and summed PSS (shares them out; the fairer total).

Prints a table and writes the figures as JSON. Without ``--data`` it writes (once) a synthetic set
of ``--num-samples`` clips (``data_recipes/synthetic.py``) under ``benchmarks/out/synthetic``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import threading
import time
from pathlib import Path

# the six buckets the synthetic set's aspects (landscape, portrait, square) and lengths (9-33 frames) fill
BUCKETS = [(17, 64, 96), (17, 96, 64), (17, 64, 64), (9, 64, 96), (9, 96, 64), (9, 64, 64)]
ACCEPTANCE = 0.8  # the loader must deliver at least this share of raw decord's clip rate


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder of training shards (default: a synthetic set made under benchmarks/out)")
    p.add_argument("--num-samples", type=int, default=128, help="clips in the synthetic set (default 128)")
    p.add_argument("--workers", type=int, default=2, help="loader worker processes (default 2)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per batch in every bucket (default 4)")
    p.add_argument("--warmup", type=int, default=2, help="loader batches not timed (default 2: one per worker)")
    p.add_argument("--repeats", type=int, default=2, help="raw decord runs; the best counts (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="epochs timed, each with its own plan (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true",
                   help="also profile one epoch in process (cProfile) into OUT with .prof.txt")
    p.add_argument("--out", default="benchmarks/out/bench_loader.json", help="where the JSON goes")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# memory


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:  # the process ended meanwhile
            continue
    return out


def _kib(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak summed RSS and PSS (MiB) of this process and its descendants while running."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak_rss, self.peak_pss, self.max_procs = interval, 0.0, 0.0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            pids = _descendants(os.getpid())
            rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids) / 1024
            pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) / 1024
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.max_procs = max(self.max_procs, len(pids))
            self._halt.wait(self.interval)

    def stop(self) -> "MemorySampler":
        self._halt.set()
        self.join()
        return self


def self_rss_mib() -> float:
    return _kib(f"/proc/{os.getpid()}/status", "VmRSS:") / 1024


# ---------------------------------------------------------------------------------------------
# the three measurements


def make_data(args) -> str:
    if args.data:
        return args.data
    from data_recipes.synthetic import write_synthetic

    out = Path("benchmarks/out/synthetic")
    write_synthetic(out, args.num_samples, seed=args.seed, val_fraction=0.0, shard_size=16, workers=1, progress=True)
    return str(out / "train")


def epoch_plan(loader, epoch: int) -> list[list]:
    """The loader's epoch as planned batches, in delivery order (batch i comes from worker i % workers)."""
    from videogen.data.stages import Skips

    stream = loader.dataset
    workers = max(1, loader.num_workers)
    stream.epoch, stream.num_workers, stream.rotation, stream.progress = epoch, workers, 0, {}
    per_worker = []
    for v in range(workers):
        plans = stream.plans(v, Skips())
        per_worker.append([next(plans) for _ in range(stream.worker_quota(v))])
    return [per_worker[i % workers][i // workers] for i in range(len(stream))]


def raw_decord(batches: list[list], scaled: bool) -> dict[str, float]:
    """Decode every planned clip's frames with decord alone (at the loader's scaled size, or native)."""
    import decord

    from videogen.data.stages import cover_size

    clips = frames = 0
    cpu0 = cpu_seconds()
    began = time.perf_counter()
    for b in batches:
        for item in b:
            r, t = item.record, item.target
            size = cover_size(r.width, r.height, t.height, t.width)
            kwargs = {"height": size[0], "width": size[1]} if scaled and size != (r.height, r.width) else {}
            vr = decord.VideoReader(io.BytesIO(r.media), ctx=decord.cpu(0), num_threads=1, **kwargs)
            out = vr.get_batch(item.indices).asnumpy()
            assert out.shape[0] == len(item.indices)
            clips, frames = clips + 1, frames + len(item.indices)
    seconds = time.perf_counter() - began
    cpu = cpu_seconds() - cpu0
    return {"clips": clips, "frames": frames, "seconds": round(seconds, 3), "cpu_s": round(cpu, 3),
            "cpu_ms_per_clip": round(1000 * cpu / clips, 2),
            "clips_per_s": round(clips / seconds, 1), "frames_per_s": round(frames / seconds, 1)}


_SHARED_PLAN: list = []


def _raw_share(i: int, n: int) -> None:
    raw_decord(_SHARED_PLAN[i::n], scaled=True)


def raw_decord_processes(batches: list[list], n: int) -> dict[str, float]:
    """Raw decord in ``n`` forked processes, each decoding every n-th batch: what n cores give here."""
    import multiprocessing

    global _SHARED_PLAN
    _SHARED_PLAN = batches
    ctx = multiprocessing.get_context("fork")
    cpu0 = cpu_seconds()
    began = time.perf_counter()
    procs = [ctx.Process(target=_raw_share, args=(i, n)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    seconds = time.perf_counter() - began
    cpu = cpu_seconds() - cpu0
    _SHARED_PLAN = []
    clips, frames = sum(len(b) for b in batches), sum(len(p.indices) for b in batches for p in b)
    return {"processes": n, "clips": clips, "frames": frames, "seconds": round(seconds, 3), "cpu_s": round(cpu, 3),
            "cpu_ms_per_clip": round(1000 * cpu / clips, 2),
            "clips_per_s": round(clips / seconds, 1), "frames_per_s": round(frames / seconds, 1)}


def cpu_seconds() -> float:
    """CPU time of this process and its finished (waited-for) children, e.g. ended loader workers."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_loader(loader, epochs: int, warmup: int, sample_memory: bool = False) -> dict:
    """``epochs`` epochs; steady rate = clips after each epoch's first ``warmup`` batches / the time they took.

    ``cpu_ms_per_clip`` counts every CPU second of the main process and its workers (start-up included)
    per clip delivered. Memory is sampled only when asked: the sampler costs CPU, so timed runs go without.
    """
    base_rss = self_rss_mib()
    sampler = MemorySampler()
    if sample_memory:
        sampler.start()
    cpu0 = cpu_seconds()
    began = time.perf_counter()
    keys, first_batch, timed_s, clips, frames, all_clips = [], [], 0.0, 0, 0, 0
    for _ in range(epochs):
        start = time.perf_counter()
        stamps = []
        for i, batch in enumerate(loader):
            video = batch["video"]  # (B, 3, T, H, W) uint8
            stamps.append(time.perf_counter())
            keys.append(list(batch["key"]))
            all_clips += video.shape[0]
            if i >= warmup:
                clips, frames = clips + video.shape[0], frames + video.shape[0] * video.shape[2]
        first_batch.append(stamps[0] - start)
        timed_s += stamps[-1] - (stamps[warmup - 1] if warmup else start)
    wall = time.perf_counter() - began
    cpu = cpu_seconds() - cpu0
    if sample_memory:
        sampler.stop()
    return {"epochs": epochs, "batches": len(keys), "warmup_batches_per_epoch": warmup,
            "first_batch_s": round(max(first_batch), 3), "wall_s": round(wall, 3),
            "wall_clips_per_s": round(all_clips / wall, 1),
            "clips": clips, "frames": frames, "seconds": round(timed_s, 3),
            "clips_per_s": round(clips / timed_s, 1), "frames_per_s": round(frames / timed_s, 1),
            "cpu_s": round(cpu, 3), "cpu_ms_per_clip": round(1000 * cpu / all_clips, 2),
            "main_rss_before_mib": round(base_rss, 1), "peak_rss_sum_mib": round(sampler.peak_rss, 1),
            "peak_pss_sum_mib": round(sampler.peak_pss, 1), "processes": sampler.max_procs, "keys": keys}


def profile_in_process(make_loader, out: Path) -> str:
    """cProfile of one epoch of the loader's work in this process (0 workers, 1 torch thread as in a worker);
    the top functions by own time."""
    import cProfile
    import pstats

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    loader = make_loader(0)
    prof = cProfile.Profile()
    prof.enable()
    for _ in loader:
        pass
    prof.disable()
    text = io.StringIO()
    torch.set_num_threads(threads)
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
    out.write_text(text.getvalue())
    return text.getvalue()


def main() -> int:
    args = parse_args()
    from videogen.data import Bucket, Bucketer, LoaderOptions, StreamOptions, VideoDataModule

    data = make_data(args)

    def make_loader(workers: int):
        return VideoDataModule(data, bucketer=Bucketer([Bucket(*b) for b in BUCKETS], batch_size=args.batch_size),
                               clips=StreamOptions(decoder="decord"),
                               loader=LoaderOptions(num_workers=workers, seed=args.seed)).train_dataloader()

    loader = make_loader(args.workers)
    plans = [epoch_plan(loader, e) for e in range(args.epochs)]
    plan = [b for p in plans for b in p]
    load_before = os.getloadavg()

    raw = max((raw_decord(plan, scaled=True) for _ in range(args.repeats)), key=lambda r: r["clips_per_s"])
    native = raw_decord(plan, scaled=False)
    raw_par = raw_decord_processes(plan, args.workers)
    got = run_loader(loader, args.epochs, args.warmup)
    memory = run_loader(make_loader(args.workers), 1, args.warmup, sample_memory=True)  # untimed
    got.update({k: memory[k] for k in ("main_rss_before_mib", "peak_rss_sum_mib", "peak_pss_sum_mib", "processes")})
    # the same work in this process, one torch thread as in a worker: the loader's per-process overhead
    # (its own plan: one worker plans differently from two)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one = make_loader(0)
    one_plan = [b for e in range(args.epochs) for b in epoch_plan(one, e)]
    inproc = run_loader(one, args.epochs, 0)
    inproc_raw = raw_decord(one_plan, scaled=True)
    torch.set_num_threads(threads)
    load_after = os.getloadavg()

    planned_keys = [[p.record.key for p in b] for b in plan]
    same = got.pop("keys") == planned_keys and inproc.pop("keys") == [[p.record.key for p in b] for b in one_plan]
    ratio = got["clips_per_s"] / raw["clips_per_s"]
    result = {
        "command": "python benchmarks/bench_loader.py " + " ".join(
            f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items() if v is not None and v is not False),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_1m_before": round(load_before[0], 2), "loadavg_1m_after": round(load_after[0], 2)},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "data": data, "buckets": [list(b) for b in BUCKETS], "batch_size": args.batch_size, "seed": args.seed,
        "epochs": args.epochs,
        "per_epoch": {"batches": len(plans[0]), "clips": sum(len(b) for b in plans[0]),
                      "frames": sum(len(p.indices) for b in plans[0] for p in b)},
        "raw_decord_scaled": raw, "raw_decord_native": native, "raw_decord_processes": raw_par,
        "loader": {**got, "workers": args.workers},
        "loader_in_process": {**inproc, "workers": 0, "torch_threads": 1,
                              "raw_decord_same_clips": inproc_raw,
                              "ratio_vs_raw": round(inproc["clips_per_s"] / inproc_raw["clips_per_s"], 3)},
        "same_clips_as_plan": same,
        "ratio_loader_vs_raw": round(ratio, 3), "acceptance": ACCEPTANCE, "passes": ratio >= ACCEPTANCE,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.profile:
        result["profile"] = str(out.with_suffix(".prof.txt"))
        print(profile_in_process(make_loader, out.with_suffix(".prof.txt")))
    out.write_text(json.dumps(result, indent=2) + "\n")

    rows = [("raw decord, 1 process, loader's sizes", raw), ("raw decord, 1 process, native size", native),
            (f"raw decord, {args.workers} processes, loader's sizes", raw_par),
            (f"loader, {args.workers} workers (steady)", got),
            ("loader, 0 workers, 1 torch thread", inproc), ("raw decord on that loader's clips", inproc_raw)]
    e = result["per_epoch"]
    print(f"{args.epochs} epochs of {e['clips']} clips, {e['frames']} frames, {e['batches']} batches; "
          f"loader batches = plan: {same}")
    print(f"{'':<44}{'clips/s':>10}{'frames/s':>10}{'seconds':>9}{'CPU ms/clip':>13}")
    for name, r in rows:
        print(f"{name:<44}{r['clips_per_s']:>10.1f}{r['frames_per_s']:>10.1f}{r['seconds']:>9.2f}"
              f"{r['cpu_ms_per_clip']:>13.2f}")
    print(f"ratio loader / raw decord: {ratio:.2f} (floor {ACCEPTANCE}: {'pass' if ratio >= ACCEPTANCE else 'FAIL'}); "
          f"with worker start-up included: {got['wall_clips_per_s'] / raw['clips_per_s']:.2f}")
    print(f"loader peak memory: RSS sum {got['peak_rss_sum_mib']:.0f} MiB, PSS sum {got['peak_pss_sum_mib']:.0f} MiB "
          f"over {got['processes']} processes (main process before: {got['main_rss_before_mib']:.0f} MiB); "
          f"first batch after {got['first_batch_s']:.2f}s")
    print(f"load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
