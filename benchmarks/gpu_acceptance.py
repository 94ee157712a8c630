"""The GPU acceptance run of stage 3 at real scale: one command, under 6 minutes on one H100/H200.

    python benchmarks/gpu_acceptance.py [--out benchmarks/out/gpu_acceptance.json] [--only tests,mfu,vae,loader]
    python benchmarks/gpu_acceptance.py --dry-run     # every case at a tiny size on the CPU (a test runs this)

Cases, each timed and written to the JSON (a case that cannot run says why; the others still run):

1. ``tests``: ``pytest -m gpu tests/gpu tests/models/test_dit.py`` (the bucket path's self-attention gets
   the flash kernel; a pack equals its clips one by one in bf16, and varlen equals the per-clip kernel;
   FSDP on one GPU trains like the unwrapped DiT).
2. ``mfu``: one training step (bf16 autocast, AdamW) of DiT-B (768 wide, 12 blocks) and DiT-XL (1152,
   28 blocks; activation checkpointing per block) at 256p x 33 frames (latents 16 x 9 x 32 x 32 from the
   4x8x8 VAE, patch 1x2x2: 2,304 tokens per clip) as a bucket batch of 28 clips and as one 64k-token
   pack of the same 28 clips (64,512 tokens padded to 65,536), eager and with ``torch.compile`` per
   block. MFU = 3 x ``DiT.forward_flops`` per step / time / 989 TFLOP/s (H100/H200 bf16 dense); HFU
   also counts the recomputation (4x) where checkpointing is on. Goal: DiT-XL >= 45% MFU.
3. ``vae``: the base_256p VAE (random init; configs/vae/base_256p.yaml's architecture) encoding and
   decoding a 720p x 33-frame clip chunked (8 frames / 2 latent frames) and tiled (256 px tiles,
   32 px overlap) in bf16: seconds and peak memory.
4. ``loader``: ``VideoDataModule`` with 16 workers against raw decord on the same clips (one process
   and 16 processes), clips/s (benchmarks/bench_loader.py's method, on a synthetic set it writes).
5. ``finetune``: LoRA (rank 16) against full finetuning of a random ``WanTransformer3DModel`` of Wan 2.1
   1.3B's width and depth (30 blocks, 12 heads x 128; its FFN 4x wide, Wan's 8960) on 21 x 60 x 60
   latents, bf16 autocast, activation checkpointing: step seconds and peak memory of each, each in its own
   process (benchmarks/bench_finetune.py). Run last; ``--only finetune`` runs it alone.

What it needs, and nothing else: torch, einops, numpy, pyyaml, safetensors (cases 2 and 3); pytest
(case 1); decord, av, braceexpand (case 4); diffusers, peft, transformers (case 5). The GPU machine of this project has Python 3.12, torch
2.11, lightning, transformers, peft and einops but not decord, av, webdataset, wandb, omegaconf or
jsonargparse. To bring what is missing to an offline box, on a machine with internet:

    pip download --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 \\
        -d wheels/ decord av braceexpand pytest pytest-timeout diffusers
    # copy wheels/ and this repository over, then on the GPU box:
    pip install --no-index --find-links wheels/ decord av braceexpand pytest pytest-timeout diffusers
    PYTHONPATH=. python benchmarks/gpu_acceptance.py

Missing packages are named at the start and their cases are reported as not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16 FLOP/s
NEEDS = {"tests": ["torch", "einops", "numpy", "yaml", "safetensors", "pytest"],
         "mfu": ["torch", "einops", "numpy", "yaml", "safetensors"],
         "vae": ["torch", "einops", "numpy", "yaml", "safetensors"],
         "loader": ["torch", "numpy", "yaml", "decord", "av", "braceexpand"],
         "finetune": ["torch", "safetensors", "diffusers", "peft", "transformers"]}
MODELS = {"DiT-B": dict(hidden_size=768, depth=12, num_heads=12, checkpointing=False),
          "DiT-XL": dict(hidden_size=1152, depth=28, num_heads=16, checkpointing=True)}
TEXT_DIM, TEXT_LEN = 4096, 120  # T5-XXL-sized captions
GPU_TESTS = ["tests/gpu", "tests/models/test_dit.py"]  # every gpu-marked test; both need only torch and pytest


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="every case at a tiny size on the CPU (seconds)")
    p.add_argument("--only", default="tests,mfu,vae,loader,finetune", help="comma-separated cases (default: all)")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps per MFU case (default 3)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per MFU case (default 5)")
    p.add_argument("--budget-s", type=float, default=330.0, help="cases not started after this many seconds are skipped")
    p.add_argument("--out", default="benchmarks/out/gpu_acceptance.json")
    return p.parse_args(argv)


def missing(case: str) -> list[str]:
    return [m for m in NEEDS[case] if importlib.util.find_spec(m) is None]


class Device:
    """Where the cases run and how they are timed: CUDA (events, peak allocated) or, for --dry-run, the CPU."""

    def __init__(self, dry: bool):
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available() and not dry
        self.type = "cuda" if self.cuda else "cpu"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None


# ---- 1. the gpu-marked tests ---------------------------------------------------------------------

def case_tests(dev: Device, args) -> dict:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", *(str(ROOT / t) for t in GPU_TESTS), "-q",
               "-p", "no:cacheprovider", f"--junitxml={xml}"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        if args.dry_run:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU: every gpu test skips, the collection is still checked
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        cases = []
        if xml.exists():
            for tc in ET.parse(xml).getroot().iter("testcase"):
                outcome = ("failed" if tc.find("failure") is not None or tc.find("error") is not None
                           else "skipped" if tc.find("skipped") is not None else "passed")
                cases.append({"test": tc.get("name"), "outcome": outcome, "seconds": float(tc.get("time", 0))})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    return {"returncode": proc.returncode, **counts, "cases": cases,
            "ok": proc.returncode == 0 and counts["failed"] == 0 and (counts["passed"] > 0 or args.dry_run),
            "output_tail": (proc.stdout + proc.stderr)[-1500:] if proc.returncode else ""}


# ---- 2. training-step MFU ------------------------------------------------------------------------

def build_dit(dev: Device, name: str, dry: bool):
    from videogen.models.dit import DiT
    from videogen.modules.dit import checkpoint_blocks

    spec = dict(MODELS[name])
    checkpointing = spec.pop("checkpointing")
    if dry:
        spec = dict(hidden_size=64, depth=2, num_heads=2)
    torch = dev.torch
    torch.manual_seed(0)
    dit = DiT(in_channels=16, text_dim=TEXT_DIM if not dry else 32, frame_conditioning=True, **spec)
    if checkpointing:  # as DiTModule(activation_checkpointing=True) applies it
        checkpoint_blocks(dit)
    return dit.to(dev.type), checkpointing


def case_train_step(dev: Device, args, name: str, layout: str, compiled: bool) -> dict:
    torch = dev.torch
    dry = args.dry_run
    dit, checkpointing = build_dit(dev, name, dry)
    clips, shape, budget = (4, (16, 3, 4, 4), 64) if dry else (28, (16, 9, 32, 32), 65536)
    if compiled:  # per block, from outside the model, as videogen.modules.dit.compile_blocks (not imported:
        for block in dit.blocks:  # it brings Lightning and the data stack); the blocks are alike: one graph
            block.compile(backend="eager" if dry else "inductor")
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4, fused=dev.cuda)
    g = torch.Generator(dev.type).manual_seed(0)
    z = torch.randn(clips, *shape, generator=g, device=dev.type)
    text = torch.randn(clips, TEXT_LEN if not dry else 8, dit.text_dim, generator=g, device=dev.type)
    mask = torch.ones(text.shape[:2], dtype=torch.bool, device=dev.type)
    t = torch.rand(clips, generator=g, device=dev.type)
    noise = torch.randn_like(z)
    xt = (1 - t.view(-1, 1, 1, 1, 1)) * z + t.view(-1, 1, 1, 1, 1) * noise
    target = noise - z
    x_in = list(xt) if layout == "pack" else xt
    kw = {"pad_to": budget} if layout == "pack" else {}

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            pred = dit(x_in, t, text, mask, **kw)
        pred = torch.stack(pred) if isinstance(pred, list) else pred
        loss = (pred.float() - target).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    dev.reset_peak()
    began = time.perf_counter()
    for _ in range(args.warmup):
        step()
    dev.sync()
    warm_s = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    dev.sync()
    seconds = (time.perf_counter() - began) / args.steps
    tokens = [shape[1] * shape[2] // 2 * shape[3] // 2] * clips
    flops = 3 * dit.forward_flops(tokens, text.shape[1])
    peak = PEAK_BF16 if dev.cuda else None
    return {"model": name, "layout": layout, "compiled": compiled, "clips": clips, "tokens": sum(tokens),
            "padded_to": budget if layout == "pack" else None, "checkpointing": checkpointing,
            "params_m": round(sum(p.numel() for p in dit.parameters()) / 1e6, 1),
            "step_s": round(seconds, 4), "warmup_s": round(warm_s, 2), "model_flops_per_step": flops,
            "mfu": round(flops / seconds / peak, 4) if peak else None,
            "hfu": round(flops * (4 / 3 if checkpointing else 1) / seconds / peak, 4) if peak else None,
            "tokens_per_s": round(sum(tokens) / seconds), "peak_gib": dev.peak_gib(), "loss": round(float(loss), 5),
            "ok": bool(torch.isfinite(loss))}


# ---- 3. VAE at 720p ------------------------------------------------------------------------------

def case_vae(dev: Device, args) -> dict:
    import yaml

    from videogen.models.vae import VideoAutoencoder

    torch = dev.torch
    if args.dry_run:
        init = dict(latent_channels=4, base_channels=8, channel_mult=[1, 2], temporal_compression=4,
                    spatial_compression=4)
        size, chunk, tile, overlap = (9, 64, 96), 4, (32, 32), 8
    else:
        cfg = yaml.safe_load((ROOT / "configs" / "vae" / "base_256p.yaml").read_text())
        init = cfg["model"]["init_args"]["vae"]["init_args"]
        size, chunk, tile, overlap = (33, 720, 1280), 8, (256, 256), 32
    torch.manual_seed(0)
    vae = VideoAutoencoder(**init).to(dev.type).eval()
    video = torch.rand(1, 3, *size, device=dev.type) * 2 - 1
    sc, tc = vae.spatial_compression, vae.temporal_compression
    dev.reset_peak()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
        began = time.perf_counter()
        z = vae.encode(video, chunk_frames=chunk, tile=tile, tile_overlap=overlap).mode()
        dev.sync()
        encode_s = time.perf_counter() - began
        encode_peak = dev.peak_gib()
        began = time.perf_counter()
        out = vae.decode(z, chunk_frames=chunk // tc, tile=tile, tile_overlap=overlap)
        dev.sync()
        decode_s = time.perf_counter() - began
    return {"frames": size[0], "height": size[1], "width": size[2], "latent": list(z.shape),
            "chunk_frames": chunk, "tile": list(tile), "tile_overlap": overlap,
            "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2), "encode_peak_gib": encode_peak,
            "peak_gib": dev.peak_gib(), "ok": tuple(out.shape) == tuple(video.shape) and bool(torch.isfinite(out).all()),
            "spatial_compression": sc, "temporal_compression": tc}


# ---- 4. the loader -------------------------------------------------------------------------------

def case_loader(dev: Device, args) -> dict:
    import torch

    import bench_loader
    from data_recipes.synthetic import write_synthetic
    from videogen.data import Bucket, Bucketer, LoaderOptions, StreamOptions, VideoDataModule

    workers, samples = (2, 16) if args.dry_run else (16, 512)
    folder = Path(tempfile.mkdtemp(prefix="videogen-gpu-acceptance-"))
    write_synthetic(folder, samples, seed=0, val_fraction=0.0, shard_size=16, workers=workers)
    loader = VideoDataModule(str(folder / "train"),
                             bucketer=Bucketer([Bucket(*b) for b in bench_loader.BUCKETS], batch_size=4),
                             clips=StreamOptions(decoder="decord"),
                             loader=LoaderOptions(num_workers=workers, seed=0)).train_dataloader()
    plan = bench_loader.epoch_plan(loader, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    raw = bench_loader.raw_decord(plan, scaled=True)
    torch.set_num_threads(threads)
    raw_par = bench_loader.raw_decord_processes(plan, workers)
    got = bench_loader.run_loader(loader, 1, warmup=workers)
    same = got.pop("keys") == [[p.record.key for p in b] for b in plan]
    return {"workers": workers, "clips": raw["clips"], "loader_clips_per_s": got["clips_per_s"],
            "raw_decord_1_process_clips_per_s": raw["clips_per_s"],
            f"raw_decord_{workers}_processes_clips_per_s": raw_par["clips_per_s"],
            "loader_vs_raw_same_processes": round(got["clips_per_s"] / raw_par["clips_per_s"], 3),
            "first_batch_s": got["first_batch_s"], "same_clips_as_plan": same, "cpus": os.cpu_count(),
            "ok": same and got["clips_per_s"] > 0}


# ---- 5. LoRA vs full finetuning of a pretrained transformer ---------------------------------------

def case_finetune(dev: Device, args) -> dict:
    size = (["--device", "cpu", "--layers", "1", "--heads", "1", "--text-dim", "32", "--frames", "2", "--size", "8",
             "--steps", "1"] if args.dry_run else
            ["--device", "cuda", "--layers", "30", "--heads", "12", "--text-dim", "4096", "--frames", "21",
             "--size", "60", "--steps", "3", "--checkpointing"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_finetune.py"), *size], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        return {"ok": False, "error": (proc.stdout + proc.stderr)[-1500:]}
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    modes = {r["mode"].split()[0]: r for r in rows}  # "full", "lora"
    full, lora = modes["full"], modes["lora"]
    return {"ok": True, "tokens": full["tokens"], "params_m": round(full["total"] / 1e6, 1),
            "full_step_s": round(full["step_s"], 3), "lora_step_s": round(lora["step_s"], 3),
            "full_peak_gib": round(full["peak_bytes"] / 2**30, 2), "lora_peak_gib": round(lora["peak_bytes"] / 2**30, 2),
            "lora_trainable_m": round(lora["trainable"] / 1e6, 2)}


# ---- the run -------------------------------------------------------------------------------------

def planned(args) -> list[tuple[str, str, tuple]]:
    wanted = set(args.only.split(","))
    unknown = wanted - set(NEEDS)
    if unknown:
        raise SystemExit(f"--only: unknown case(s) {sorted(unknown)}; choose from {sorted(NEEDS)}")
    out = []
    if "tests" in wanted:
        out.append(("tests", "tests", ()))
    if "mfu" in wanted:
        out += [("mfu", f"mfu/{m}/{layout}/{'compiled' if c else 'eager'}", (m, layout, c))
                for m in MODELS for layout in ("bucket", "pack") for c in (False, True)]
    if "vae" in wanted:
        out.append(("vae", "vae/720p_33f", ()))
    if "loader" in wanted:
        out.append(("loader", "loader", ()))
    if "finetune" in wanted:
        out.append(("finetune", "finetune/wan_1.3b", ()))
    return out


def run(args) -> dict:
    dev = Device(args.dry_run)
    if not args.dry_run and not dev.cuda:
        raise SystemExit("no CUDA device: run with --dry-run on a CPU")
    runners = {"tests": case_tests, "mfu": case_train_step, "vae": case_vae, "loader": case_loader,
               "finetune": case_finetune}
    need = {c: missing(c) for c in NEEDS}
    for c, names in need.items():
        if names:
            print(f"[gpu_acceptance] {c}: missing {', '.join(names)} (see this script's docstring for wheels)")
    began = time.perf_counter()
    results = {}
    for kind, name, extra in planned(args):
        elapsed = time.perf_counter() - began
        if need[kind]:
            results[name] = {"ok": False, "skipped": f"missing packages: {', '.join(need[kind])}"}
        elif elapsed > args.budget_s:
            results[name] = {"ok": False, "skipped": f"time budget: {elapsed:.0f}s > --budget-s {args.budget_s:.0f}"}
        else:
            t0 = time.perf_counter()
            try:
                results[name] = runners[kind](dev, args, *extra)
            except Exception as e:  # one case failing must not lose the others' figures
                results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
            results[name]["case_s"] = round(time.perf_counter() - t0, 2)
        print(f"[gpu_acceptance] {name}: {'ok' if results[name].get('ok') else 'NOT ok'} "
              f"({results[name].get('case_s', 0)}s)", flush=True)
        if dev.cuda:
            dev.torch.cuda.empty_cache()
    torch = dev.torch
    xl = [r.get("mfu") for n, r in results.items() if n.startswith("mfu/DiT-XL") and r.get("mfu")]
    return {"dry_run": args.dry_run, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "total_s": round(time.perf_counter() - began, 1),
            "machine": {"device": torch.cuda.get_device_name() if dev.cuda else "cpu", "torch": torch.__version__,
                        "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "peak_flops": PEAK_BF16, "goal": {"dit_xl_mfu": 0.45, "best_dit_xl_mfu": max(xl) if xl else None,
                                              "met": bool(xl) and max(xl) >= 0.45},
            "cases": results}


def table(result: dict) -> str:
    lines = [f"{'case':<34}{'ok':>4}{'step s':>9}{'MFU':>7}{'HFU':>7}{'peak GiB':>10}  notes"]
    for name, r in result["cases"].items():
        note = r.get("skipped") or r.get("error") or ""
        if name == "tests" and "passed" in r:
            note = f"{r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped"
        elif name.startswith("vae") and "encode_s" in r:
            note = f"encode {r['encode_s']}s (peak {r['encode_peak_gib']} GiB), decode {r['decode_s']}s"
        elif name == "loader" and "loader_clips_per_s" in r:
            note = (f"loader {r['loader_clips_per_s']} clips/s vs raw decord {r['raw_decord_1_process_clips_per_s']} "
                    f"(1 proc), ratio to raw in {r['workers']} procs {r['loader_vs_raw_same_processes']}")
        elif name.startswith("finetune") and "full_step_s" in r:
            note = (f"{r['params_m']}M params, {r['tokens']:,} tokens: full {r['full_step_s']}s / {r['full_peak_gib']} GiB, "
                    f"LoRA r16 ({r['lora_trainable_m']}M train) {r['lora_step_s']}s / {r['lora_peak_gib']} GiB")
        elif "tokens_per_s" in r:
            note = f"{r['tokens']:,} tokens, {r['tokens_per_s']:,} tokens/s, {r['params_m']}M params"

        def f(key, fmt):
            return format(r[key], fmt) if r.get(key) is not None else "-"

        lines.append(f"{name:<34}{'yes' if r.get('ok') else 'NO':>4}{f('step_s', '.3f'):>9}{f('mfu', '.1%'):>7}"
                     f"{f('hfu', '.1%'):>7}{f('peak_gib', '.1f'):>10}  {note[:110]}")
    goal = result["goal"]
    lines.append(f"DiT-XL MFU goal >= 45%: best {goal['best_dit_xl_mfu']} -> {'met' if goal['met'] else 'not met'}; "
                 f"total {result['total_s']}s on {result['machine']['device']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {out}")
    return 0 if all(r.get("ok") for r in result["cases"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
