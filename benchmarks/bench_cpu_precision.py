"""Training-step time of the quickstart DiT on this CPU in fp32 and under bf16 autocast, with the CPU's
own instructions and limited to AVX2 (what a CPU without bf16 instructions runs): the figures behind the
quickstart DiT's ``precision: bf16-mixed`` and ``videogen.cli.cpu_precision`` (a bf16 run on a CPU
without AVX512-BF16 or AMX trains in fp32).

    python benchmarks/bench_cpu_precision.py [--threads 2] [--steps 5] [--out benchmarks/out/bench_cpu_precision.json]

A step is the quickstart's batch (8 clips of 8 x 5 x 16 x 24 latents: the VAE's 2x4x4 compression of
9 x 64 x 96, 480 tokens each; 48 text tokens of MiniLM's width) through ``configs/dit/quickstart.yaml``'s
DiT: forward (under ``torch.autocast("cpu", torch.bfloat16)`` for bf16, as Lightning's ``bf16-mixed``
does), MSE to the rectified-flow target in fp32, backward, AdamW step. One untimed warm-up step, then the
shortest of ``--steps`` counts (benchmarks/timing.py). Each instruction set runs in a child process:
``ATEN_CPU_CAPABILITY=avx2`` and ``ONEDNN_MAX_CPU_ISA=AVX2`` must be set before torch loads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "dit" / "quickstart.yaml"
BATCH, LATENT, TEXT_LEN = 8, (8, 5, 16, 24), 48
LIMITED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2, as the quickstart)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per case; the shortest counts (default 5)")
    p.add_argument("--out", default="benchmarks/out/bench_cpu_precision.json", help="where the JSON goes")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # measure in this process, JSON to stdout
    return p.parse_args()


def measure(threads: int, steps: int) -> dict:
    """Seconds per training step in fp32 and bf16 autocast, in this process's instruction set."""
    import torch
    import yaml

    from timing import best
    from videogen.diffusion import RectifiedFlow
    from videogen.models.dit import DiT

    torch.set_num_threads(threads)
    init = yaml.safe_load(QUICKSTART.read_text())["model"]["init_args"]["dit"]["init_args"]
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(BATCH, *LATENT, generator=g), torch.randn(BATCH, *LATENT, generator=g)
    t = torch.rand(BATCH, generator=g)
    text, mask = torch.randn(BATCH, TEXT_LEN, init["text_dim"], generator=g), torch.ones(BATCH, TEXT_LEN, dtype=torch.bool)
    flow, seconds = RectifiedFlow(), {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = DiT(**init).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                pred = model(flow.add_noise(z, noise, t), t, text, mask)
            loss = (pred.float() - flow.target(z, noise, t)).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up: AdamW allocates its state, oneDNN picks its kernels
        seconds[precision] = best(step, steps)
    return {"capability": torch.backends.cpu.get_cpu_capability(), "seconds": seconds,
            "avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx": torch.cpu._is_amx_tile_supported()}


def child(threads: int, steps: int, env: dict[str, str]) -> dict:
    argv = [sys.executable, __file__, "--child", "--threads", str(threads), "--steps", str(steps)]
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(measure(args.threads, args.steps)))
        return
    rows = [{"instructions": "this CPU's", **child(args.threads, args.steps, {})},
            {"instructions": "AVX2 only (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2)",
             **child(args.threads, args.steps, LIMITED)}]
    print(f"quickstart DiT training step, batch {BATCH} x {LATENT} latents, {args.threads} threads "
          f"(CPU has AVX512-BF16: {rows[0]['avx512_bf16']}, AMX: {rows[0]['amx']})")
    print("| instructions | ATen capability | fp32 s/step | bf16 autocast s/step | fp32 steps/min | bf16 steps/min | bf16 speed-up |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        s = r["seconds"]
        print(f"| {r['instructions']} | {r['capability']} | {s['fp32']:.3f} | {s['bf16']:.3f} | {60 / s['fp32']:.1f} | "
              f"{60 / s['bf16']:.1f} | {s['fp32'] / s['bf16']:.2f}x |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "steps": args.steps, "batch": BATCH, "latent": LATENT,
                               "machine": platform.processor() or platform.machine(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
