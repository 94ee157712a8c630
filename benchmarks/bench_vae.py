"""Encode/decode throughput and peak memory of our VAE against a matched reference video VAE.

    python benchmarks/bench_vae.py [--threads 1] [--repeats 2] [--out benchmarks/out/bench_vae.json]

Models (both randomly initialised; speed and memory do not depend on the weights):

* ours: ``vae_tiny()`` -- 4x4x4 compression, 8 latent channels, 2x2x2 patchify, widths 16/32;
* reference: diffusers' ``AutoencoderKLWan`` (the Wan 2.1 causal video VAE) in a small config of
  about the same parameter count and the same compression: ``base_dim=12, z_dim=8,
  dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True]`` (4x4x4).

Cases: clips of 17, 33 and 65 frames at 64x64 and 128x128, in the modes

* ``one-pass``: ours only (whole clip at once). Wan has no such mode: its encoder always runs
  frame 0 and then 4 frames at a time, its decoder one latent frame at a time, through a cache;
* ``chunked``: ours with ``chunk_frames=16`` (encode 16 frames, decode 4 latent frames per call);
  Wan as it always runs;
* ``chunked+tiled`` (128x128 only): plus 64x64 tiles overlapping by 32 px (ours:
  ``tile=(64, 64), tile_overlap=32``; Wan: ``enable_tiling(64, 64, 32, 32)``, the same tiles).

Each case runs in a fresh subprocess (``--threads`` torch threads; glibc told to map every block
over 64 KiB on its own and unmap it when freed, so RSS follows live tensors): the input is made, then encode
runs ``--repeats`` times (the best time counts) and the peak RSS is read (VmHWM from
/proc/self/status); then freed memory is handed back (``malloc_trim``), the high-water mark reset
(``clear_refs`` 5) and decode is measured the same way on a latent of the encoder's shape. Peak
memory is reported both as the process's peak RSS and as the peak above the RSS just before the
call (the memory the call itself needed, without the interpreter, torch and the model).

Acceptance: encoding a 4x longer clip (65 frames against 17) with chunking needs at most 1.3x the
peak memory above baseline of the short one, at each resolution.

Prints a table and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from timing import best_of

FRAMES = (17, 33, 65)
SIZES = (64, 128)
CHUNK_FRAMES = 16  # pixel frames per encode call; CHUNK_FRAMES / tc latent frames per decode call
TILE, TILE_OVERLAP = 64, 32
ACCEPTANCE = 1.3  # peak memory of the 4x longer chunked encode / the short one, at most
# glibc: every block over 64 KiB is its own mapping, unmapped when freed (no dynamic threshold, no
# retained heap), so RSS follows the tensors that are alive and VmHWM is their peak, not the allocator's.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per case (default 1)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each call; the best time counts (default 2)")
    p.add_argument("--out", default="benchmarks/out/bench_vae.json", help="where the JSON goes")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case (JSON) and print its result
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# one case, in its own process


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Hand freed heap back to the OS and reset VmHWM to the current RSS (Linux >= 4.0)."""
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Ours:
    def __init__(self, mode: str):
        from videogen.models.vae import vae_tiny

        self.net, self.mode = vae_tiny().eval(), mode
        self.chunk = CHUNK_FRAMES if mode != "one-pass" else None
        self.tile = (TILE, TILE) if mode == "chunked+tiled" else None

    def encode(self, x):
        return self.net.encode(x, chunk_frames=self.chunk, tile=self.tile, tile_overlap=TILE_OVERLAP).mode()

    def decode(self, z):
        chunk = None if self.chunk is None else self.chunk // self.net.temporal_compression
        return self.net.decode(z, chunk_frames=chunk, tile=self.tile, tile_overlap=TILE_OVERLAP)


class Wan:
    CONFIG = dict(base_dim=12, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
                  latents_mean=[0.0] * 8, latents_std=[1.0] * 8, scale_factor_temporal=4, scale_factor_spatial=4)

    def __init__(self, mode: str):
        import logging

        logging.getLogger("diffusers").setLevel(logging.ERROR)
        from diffusers import AutoencoderKLWan

        if mode == "one-pass":
            raise ValueError("AutoencoderKLWan always runs chunked (frame 0, then 4 frames per call)")
        self.net = AutoencoderKLWan(**self.CONFIG).eval()
        if mode == "chunked+tiled":
            self.net.enable_tiling(TILE, TILE, TILE - TILE_OVERLAP, TILE - TILE_OVERLAP)

    def encode(self, x):
        return self.net.encode(x).latent_dist.mode()

    def decode(self, z):
        return self.net.decode(z).sample


def run_case(case: dict, repeats: int) -> dict:
    import torch

    torch.set_num_threads(case["threads"])
    model = (Ours if case["model"] == "ours" else Wan)(case["mode"])
    params = sum(p.numel() for p in model.net.parameters())
    t, s = case["frames"], case["size"]
    x = torch.rand(1, 3, t, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (1, 3, T, H, W)
    out: dict = {**case, "params": params}
    with torch.inference_mode():
        model.encode(x[:, :, :1, :8, :8] if case["model"] == "ours" else x[:, :, :1, :16, :16])  # first-call setup
        _reset_peak()
        z = _measure("encode", lambda: model.encode(x), repeats, t, out)
        out["latent_shape"] = list(z.shape)
        z = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
        out["peak_reset"] = _reset_peak()
        y = _measure("decode", lambda: model.decode(z), repeats, t, out)
        assert tuple(y.shape) == tuple(x.shape), (y.shape, x.shape)
    return out


def _measure(what: str, fn, repeats: int, frames: int, out: dict):
    """Time ``fn`` (best of ``repeats``) and read the peak RSS after it into ``out`` as ``{what}_seconds``,
    ``{what}_fps``, ``{what}_peak_mib`` and ``{what}_peak_above_base_mib``; returns what ``fn`` returned."""
    base = _status_kib("VmRSS")
    seconds, result = best_of(fn, repeats)
    peak = _status_kib("VmHWM")
    out.update({f"{what}_seconds": seconds, f"{what}_fps": frames / seconds, f"{what}_peak_mib": peak / 1024,
                f"{what}_peak_above_base_mib": (peak - base) / 1024})
    return result


# ---------------------------------------------------------------------------------------------
# the driver


def cases(threads: int) -> list[dict]:
    out = []
    for model in ("ours", "wan"):
        for size in SIZES:
            for frames in FRAMES:
                modes = ["one-pass", "chunked"] if model == "ours" else ["chunked"]
                if size > TILE:
                    modes.append("chunked+tiled")
                out += [{"model": model, "mode": m, "frames": frames, "size": size, "threads": threads}
                        for m in modes]
    return out


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info["load_average_at_start"] = list(os.getloadavg())
    import torch

    info["torch"] = torch.__version__
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    return info


def ratios(results: list[dict]) -> list[dict]:
    """Ours / Wan for throughput and peak above base; ours one-pass and chunked both against Wan chunked."""
    wan = {(r["mode"], r["frames"], r["size"]): r for r in results if r["model"] == "wan"}
    rows = []
    for r in results:
        if r["model"] != "ours":
            continue
        ref = wan.get(("chunked" if r["mode"] == "one-pass" else r["mode"], r["frames"], r["size"]))
        if ref is None:
            continue
        rows.append({"mode": r["mode"], "frames": r["frames"], "size": r["size"], "reference_mode": ref["mode"],
                     "encode_speed_ratio": r["encode_fps"] / ref["encode_fps"],
                     "decode_speed_ratio": r["decode_fps"] / ref["decode_fps"],
                     "encode_memory_ratio": r["encode_peak_above_base_mib"] / max(ref["encode_peak_above_base_mib"], 1e-9),
                     "decode_memory_ratio": r["decode_peak_above_base_mib"] / max(ref["decode_peak_above_base_mib"], 1e-9)})
    return rows


def acceptance(results: list[dict]) -> list[dict]:
    by = {(r["model"], r["mode"], r["frames"], r["size"]): r for r in results}
    rows = []
    for size in SIZES:
        short, long = by[("ours", "chunked", FRAMES[0], size)], by[("ours", "chunked", FRAMES[-1], size)]
        ratio = long["encode_peak_above_base_mib"] / short["encode_peak_above_base_mib"]
        rows.append({"size": size, "short_frames": FRAMES[0], "long_frames": FRAMES[-1],
                     "short_peak_above_base_mib": short["encode_peak_above_base_mib"],
                     "long_peak_above_base_mib": long["encode_peak_above_base_mib"],
                     "ratio": ratio, "ratio_process_peak": long["encode_peak_mib"] / short["encode_peak_mib"],
                     "one_pass_ratio": by[("ours", "one-pass", FRAMES[-1], size)]["encode_peak_above_base_mib"]
                     / by[("ours", "one-pass", FRAMES[0], size)]["encode_peak_above_base_mib"],
                     "limit": ACCEPTANCE, "passed": ratio <= ACCEPTANCE})
    return rows


def table(results: list[dict], ratio_rows: list[dict], accept: list[dict]) -> str:
    lines = [f"{'model':<5} {'mode':<14} {'clip':>11} | {'enc f/s':>8} {'dec f/s':>8} | "
             f"{'enc MiB':>8} {'dec MiB':>8} (peak above base) | {'enc RSS':>8} {'dec RSS':>8}"]
    for r in results:
        lines.append(f"{r['model']:<5} {r['mode']:<14} {r['frames']:>3}x{r['size']}x{r['size']:<3} | "
                     f"{r['encode_fps']:>8.1f} {r['decode_fps']:>8.1f} | {r['encode_peak_above_base_mib']:>8.1f} "
                     f"{r['decode_peak_above_base_mib']:>8.1f}                  | {r['encode_peak_mib']:>8.0f} "
                     f"{r['decode_peak_mib']:>8.0f}")
    lines += ["", "ours / Wan (speed: >1 = ours faster; memory: <1 = ours smaller)",
              f"{'mode':<14} {'clip':>11} | {'enc speed':>9} {'dec speed':>9} | {'enc mem':>8} {'dec mem':>8}"]
    for q in ratio_rows:
        lines.append(f"{q['mode']:<14} {q['frames']:>3}x{q['size']}x{q['size']:<3} | {q['encode_speed_ratio']:>9.2f} "
                     f"{q['decode_speed_ratio']:>9.2f} | {q['encode_memory_ratio']:>8.2f} {q['decode_memory_ratio']:>8.2f}")
    lines += ["", f"acceptance: chunked encode of {FRAMES[-1]} vs {FRAMES[0]} frames, peak above base <= {ACCEPTANCE}x"]
    for a in accept:
        lines.append(f"  {a['size']}x{a['size']}: {a['long_peak_above_base_mib']:.1f} / {a['short_peak_above_base_mib']:.1f} "
                     f"MiB = {a['ratio']:.2f}x ({'pass' if a['passed'] else 'FAIL'}; process peak "
                     f"{a['ratio_process_peak']:.2f}x; one pass {a['one_pass_ratio']:.2f}x)")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case), args.repeats)))
        return 0
    info = machine()
    began = time.perf_counter()
    results = []
    for case in cases(args.threads):
        proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, env={**os.environ, **MALLOC_ENV})
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"case {case} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  {r['model']} {r['mode']} {r['frames']}x{r['size']}: enc {r['encode_seconds']:.3f}s "
              f"dec {r['decode_seconds']:.3f}s", file=sys.stderr, flush=True)
    ratio_rows, accept = ratios(results), acceptance(results)
    info["load_average_at_end"] = list(os.getloadavg())
    report = {"command": " ".join(["python", *sys.argv]), "machine": info, "threads": args.threads,
              "repeats": args.repeats, "chunk_frames": CHUNK_FRAMES, "tile": TILE, "tile_overlap": TILE_OVERLAP,
              "wan_config": Wan.CONFIG, "seconds": time.perf_counter() - began, "results": results,
              "ratios": ratio_rows, "acceptance": accept}
    print(table(results, ratio_rows, accept))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(a["passed"] for a in accept) else 1


if __name__ == "__main__":
    sys.exit(main())
