"""Training-step throughput of our DiT: against a matched diffusers transformer, packing vs padding,
scaling with tokens, and MFU against the measured matmul peak.

    python benchmarks/bench_dit.py [--threads 1] [--warmup 2] [--steps 5] [--max-tokens 8192] [--profile]
                                   [--sections reference,packing,scaling,packed_scale,compile]
                                   [--out benchmarks/out/bench_dit.json]

A *training step* is forward + MSE loss + backward + ``AdamW.step()`` (``zero_grad`` included),
float32, ``--threads`` torch threads, models randomly initialised (speed does not depend on the
weights), ``model.train()``. Timed steps come after ``--warmup`` untimed steps (AdamW allocates its
state in the first; the first step after it was still up to 1.5x slow in trial runs); the median counts. Wall time and process CPU time are both recorded: with one thread on
a loaded machine the CPU time per step is the steadier figure, and the ratios of two models timed
step after step (interleaved, same load) are the figures to read.

Sections:

1. **ours vs reference**: our ``DiT`` and diffusers' ``CogVideoXTransformer3DModel``, same width,
   depth, heads, head dim, MLP width, patch (1, 2, 2), 16 latent channels, text length 32 of width
   384, 3D RoPE, on the same latent batch; tokens/s and the ratio, for our DiT with each
   ``text_attention`` ('cross', the default, and 'joint'). CogVideoX is the closest
   diffusers model: full 3D attention over all spacetime tokens of the clip (as ours), adaLN timestep
   modulation, QK-norm, 3D RoPE. Latte factorises attention into spatial and temporal blocks (a
   different attention pattern and cost curve), so it is not used. The remaining differences are
   architectural and counted in the FLOPs: CogVideoX puts the text tokens into the self-attention
   (joint attention over L + N tokens, text also through the MLP); ours with 'cross' has a separate
   cross-attention to L + 1 text keys (one more q and output projection per token), with 'joint' the
   L + 1 text keys/values join the self-attention (text tokens are not queries and skip the MLP).
2. **packing vs padding**: clips of different (T, H, W) in one packed ``forward`` row
   (variable-length attention over the clip offsets) against zero-padding every clip to the largest (T, H, W) and a batched
   ``forward``; useful (unpadded) tokens/s and the padded fraction. The loss covers only the real
   latent elements in both.
3. **scaling**: step time of our DiT for one clip of 256 ... ``--max-tokens`` tokens.
4. **MFU**: FLOPs per step / step time / peak, where the peak is the best float32 matmul rate
   (2048^3, ``--threads`` threads) measured in this run, before and after the model cases. This
   is MFU against a measured CPU matmul peak, not a vendor peak, and there is no GPU here.
   FLOPs per step: the analytic ``3 x DiT.forward_flops`` for ours, and for both models the
   matmul FLOPs of a real forward + backward counted by ``torch.utils.flop_counter`` (attention
   through SDPA's math path while counting, since the counter has no formula for the CPU fused
   kernel; the timed steps use the default kernels).

5. **packed_scale**: one packed training step of 4, 8 and 16 clips of 1,024 tokens each (latents
   (16, 4, 32, 32)) on a smaller DiT (``SCALE_MODEL``: 192 wide, 2 blocks, 3 heads of 64), time and
   memory above base. Memory: the process's peak RSS during the step (``VmHWM``, reset through
   ``/proc/self/clear_refs`` right before it) minus its RSS just before, with glibc's mmap threshold
   fixed at 64 KiB (``mallopt``) so freed tensors leave RSS at once and the peak is the step's live
   tensors (+ allocator overhead), not what the heap kept from earlier steps. Linear scaling is 4x from
   4 to 16 clips; the whole row in one attention (N x N) would be 16x in the attention part.
6. **compile**: tokens/s of eager and ``compile_blocks`` (``torch.compile`` per block, inductor) on
   section 1's bucket batch and section 2's pack, interleaved; compile time is in the warm-up (counted
   separately).

``--profile`` adds a ``torch.profiler`` table (top ops by self CPU time) of one training step of
each model in section 1.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from videogen.models.dit import DiT

# the model pair of section 1 (and our model in 2-3): small enough for seconds per step on one CPU thread
HIDDEN, DEPTH, HEADS, MLP_RATIO = 384, 4, 6, 4.0
CHANNELS, TEXT_LEN, TEXT_DIM = 16, 32, 384
PATCH = (1, 2, 2)
SECTION1_BATCH = [(CHANNELS, 5, 16, 16)] * 4  # 4 clips x 320 tokens
MIXED = [(CHANNELS, 5, 16, 16), (CHANNELS, 3, 24, 12), (CHANNELS, 1, 16, 16), (CHANNELS, 5, 8, 24)]
SCALING = [(4, 16, 16), (8, 16, 16), (16, 16, 16), (8, 32, 32), (16, 32, 32), (32, 32, 32)]  # 256 ... 8192 tokens
MATMUL_N = 2048
SCALE_MODEL = {"hidden_size": 192, "depth": 2, "num_heads": 3}  # section 5: 16 clips x 1,024 tokens in seconds
SCALE_CLIP, SCALE_CLIPS = (CHANNELS, 4, 32, 32), (4, 8, 16)  # 4 x 16 x 16 = 1,024 tokens a clip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per case first (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per case (default 5)")
    p.add_argument("--max-tokens", type=int, default=8192, help="largest clip of the scaling section (default 8192)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table for section 1")
    p.add_argument("--sections", default="reference,packing,scaling,packed_scale,compile",
                   help="comma-separated sections to run (default: all)")
    p.add_argument("--out", default="benchmarks/out/bench_dit.json", help="where the JSON goes")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# models and steps


def build_ours(text_attention: str = "cross") -> DiT:
    return DiT(CHANNELS, PATCH, HIDDEN, DEPTH, HEADS, MLP_RATIO, TEXT_DIM, qk_norm=True, text_attention=text_attention)


def build_reference() -> torch.nn.Module:
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel(
        num_attention_heads=HEADS,
        attention_head_dim=HIDDEN // HEADS,
        in_channels=CHANNELS,
        out_channels=CHANNELS,
        time_embed_dim=HIDDEN,  # ours conditions on a D-wide timestep embedding too
        text_embed_dim=TEXT_DIM,
        num_layers=DEPTH,
        patch_size=PATCH[1],  # (1, 2, 2): CogVideoX 1.0 patches each frame 2x2, no temporal patch
        patch_size_t=None,
        max_text_seq_length=TEXT_LEN,
        use_rotary_positional_embeddings=True,  # 3D RoPE like ours, no learned / sincos position table
    )


def reference_rope(model: torch.nn.Module, t: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3D RoPE tables CogVideoX's pipeline passes in, for one latent grid (computed once, outside the step)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    gh, gw = h // model.config.patch_size, w // model.config.patch_size
    return get_3d_rotary_pos_embed(model.config.attention_head_dim, ((0, 0), (gh, gw)), (gh, gw), t)


class Case:
    """One training step of a model on fixed inputs: ``run()`` does zero_grad, forward, loss, backward, AdamW."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> None:
        self.model = model.train()
        self.loss_fn = loss_fn
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, record: bool = True) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        self.opt.zero_grad(set_to_none=True)
        self.loss_fn().backward()
        self.opt.step()
        if record:
            self.wall.append(time.perf_counter() - w0)
            self.cpu.append(time.process_time() - c0)

    def counted_flops(self) -> int:
        """Matmul FLOPs of one forward + backward, counted op by op (SDPA through its math path)."""
        self.opt.zero_grad(set_to_none=True)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            self.loss_fn().backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def summary(self, tokens: int, step_flops: int, peak: float) -> dict:
        wall, cpu = statistics.median(self.wall), statistics.median(self.cpu)
        return {
            "tokens": tokens,
            "step_s_median": wall,
            "step_s_all": self.wall,
            "cpu_s_median": cpu,
            "tokens_per_s": tokens / wall,
            "tokens_per_cpu_s": tokens / cpu,
            "step_flops": step_flops,
            "gflops_per_s": step_flops / wall / 1e9,
            "mfu_vs_matmul_peak": step_flops / wall / peak,
            "mfu_cpu_time": step_flops / cpu / peak,
        }


def interleaved(cases: list[Case], steps: int, warmup: int) -> None:
    """``warmup`` untimed rounds, then ``steps`` rounds of one step per case: every case sees the same load."""
    for _ in range(warmup):
        for case in cases:
            case.run(record=False)
    for _ in range(steps):
        for case in cases:
            case.run()


def inputs(shapes: list[tuple[int, int, int, int]], seed: int) -> tuple[list[torch.Tensor], ...]:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(s, generator=g) for s in shapes]
    targets = [torch.randn(s, generator=g) for s in shapes]
    n = len(shapes)
    t = torch.rand(n, generator=g)
    text = torch.randn(n, TEXT_LEN, TEXT_DIM, generator=g)
    text_mask = torch.ones(n, TEXT_LEN, dtype=torch.bool)
    return xs, targets, t, text, text_mask


def tokens_of(shape: tuple[int, ...]) -> int:
    c, t, h, w = shape
    return (t // PATCH[0]) * (h // PATCH[1]) * (w // PATCH[2])


# ---------------------------------------------------------------------------------------------
# measurements


def matmul_peak(threads: int, repeats: int = 5) -> float:
    """Best float32 FLOP/s of an N^3 matmul on this many threads."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(MATMUL_N, MATMUL_N, generator=g), torch.randn(MATMUL_N, MATMUL_N, generator=g)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * MATMUL_N**3 / best


def section_reference(steps: int, warmup: int, peak: float, profile: bool) -> dict:
    shapes = SECTION1_BATCH
    xs, targets, t, text, text_mask = inputs(shapes, seed=1)
    x, target = torch.stack(xs), torch.stack(targets)  # (B, C, T, H, W)
    torch.manual_seed(0)
    ours = {"ours": build_ours("cross"), "ours_joint": build_ours("joint")}
    ref = build_reference()
    c, tt, h, w = shapes[0]
    rope = reference_rope(ref, tt, h, w)
    x_ref, target_ref = x.transpose(1, 2).contiguous(), target.transpose(1, 2).contiguous()  # CogVideoX: (B, T, C, H, W)

    def loss_of(model: DiT) -> Callable[[], torch.Tensor]:
        return lambda: F.mse_loss(model(x, t, text, text_mask), target)

    def loss_ref() -> torch.Tensor:
        out = ref(x_ref, text, 1000 * t, image_rotary_emb=rope, return_dict=False)[0]
        return F.mse_loss(out, target_ref)

    cases = {name: Case(model, loss_of(model)) for name, model in ours.items()}
    cases["reference"] = Case(ref, loss_ref)
    interleaved(list(cases.values()), steps, warmup)
    tokens = sum(tokens_of(s) for s in shapes)
    result = {
        "batch": [list(s) for s in shapes],
        "reference": {
            "model": "diffusers.CogVideoXTransformer3DModel",
            "params": sum(p.numel() for p in ref.parameters()),
            **cases["reference"].summary(tokens, cases["reference"].counted_flops(), peak),
        },
    }
    for name, model in ours.items():
        case = cases[name]
        analytic = 3 * model.forward_flops([tokens_of(s) for s in shapes], TEXT_LEN)
        counted = case.counted_flops()
        row = {"text_attention": model.text_attention, "params": sum(p.numel() for p in model.parameters()),
               **case.summary(tokens, analytic, peak), "counted_step_flops": counted}
        row["mfu_counted_flops"] = counted / row["step_s_median"] / peak
        result[name] = row
        result[f"{name}_over_reference_tokens_per_s"] = row["tokens_per_s"] / result["reference"]["tokens_per_s"]
        result[f"{name}_over_reference_per_round"] = [r / o for o, r in zip(case.wall, cases["reference"].wall)]
        result[f"{name}_over_reference_cpu_time"] = result["reference"]["cpu_s_median"] / row["cpu_s_median"]
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        for name, case in cases.items():
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                case.run(record=False)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18)
            print(f"\n--- profile, one training step: {name} ---\n{table}")
            result[f"profile_{name}"] = table
    return result


def section_packing(steps: int, warmup: int, peak: float) -> dict:
    xs, targets, t, text, text_mask = inputs(MIXED, seed=2)
    torch.manual_seed(0)
    model = build_ours()
    big = tuple(max(s[i] for s in MIXED) for i in range(1, 4))  # largest (T, H, W) over the clips
    padded_x = torch.zeros(len(MIXED), CHANNELS, *big)
    padded_target = torch.zeros_like(padded_x)
    valid = torch.zeros_like(padded_x, dtype=torch.bool)
    for i, (x, y) in enumerate(zip(xs, targets)):
        _, tt, h, w = x.shape
        padded_x[i, :, :tt, :h, :w], padded_target[i, :, :tt, :h, :w], valid[i, :, :tt, :h, :w] = x, y, True
    real = valid.sum()

    def loss_packed() -> torch.Tensor:
        outs = model(xs, t, text, text_mask)
        return sum(((o - y) ** 2).sum() for o, y in zip(outs, targets)) / real

    def loss_padded() -> torch.Tensor:
        out = model(padded_x, t, text, text_mask)
        return ((out - padded_target) ** 2)[valid].sum() / real

    # one model, two step functions: both update the same weights, which does not change the speed
    packed, padded = Case(model, loss_packed), Case(model, loss_padded)
    padded.opt = packed.opt
    interleaved([packed, padded], steps, warmup)
    useful = sum(tokens_of(s) for s in MIXED)
    padded_tokens = len(MIXED) * tokens_of((CHANNELS, *big))
    result = {
        "clips": [list(s) for s in MIXED],
        "padded_to": list(big),
        "useful_tokens": useful,
        "padded_tokens": padded_tokens,
        "padding_fraction": 1 - useful / padded_tokens,
        "packed": packed.summary(useful, 3 * model.forward_flops([tokens_of(s) for s in MIXED], TEXT_LEN), peak),
        "padded": padded.summary(useful, 3 * model.forward_flops([tokens_of((CHANNELS, *big))] * len(MIXED), TEXT_LEN), peak),
    }
    for key in ("packed", "padded"):  # tokens/s above are useful tokens; MFU counts the FLOPs actually run
        result[key]["useful_tokens_per_s"] = result[key].pop("tokens_per_s")
    result["packed_over_padded_useful_tokens_per_s"] = (
        result["packed"]["useful_tokens_per_s"] / result["padded"]["useful_tokens_per_s"]
    )
    result["packed_over_padded_per_round"] = [p / q for q, p in zip(packed.wall, padded.wall)]
    return result


def section_scaling(steps: int, warmup: int, peak: float, max_tokens: int) -> list[dict]:
    torch.manual_seed(0)
    model = build_ours()
    rows = []
    for thw in SCALING:
        shape = (CHANNELS, *thw)
        n = tokens_of(shape)
        if n > max_tokens:
            break
        xs, targets, t, text, text_mask = inputs([shape], seed=3)
        x, target = xs[0][None], targets[0][None]
        case = Case(model, lambda: F.mse_loss(model(x, t, text, text_mask), target))
        # big clips (seconds to tens of seconds a step): one warm-up + 1 timed step
        interleaved([case], steps, warmup) if n <= 1024 else interleaved([case], 1, 1)
        flops = 3 * model.forward_flops([n], TEXT_LEN)
        attn = 3 * DEPTH * 4 * n * n * HIDDEN  # the N^2 part: self-attention scores + values
        rows.append({"latent": list(shape), "attention_flop_share": attn / flops, **case.summary(n, flops, peak)})
        print(f"  scaling {n:5d} tokens: {rows[-1]['step_s_median']:.2f} s/step", flush=True)
    return rows


def rss_kib(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in KiB."""
    line = next(ln for ln in open("/proc/self/status") if ln.startswith(field + ":"))
    return int(line.split()[1])


def section_packed_scale(steps: int, warmup: int, peak: float) -> list[dict]:
    import ctypes

    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: big buffers go back to the OS when freed
    rows = []
    for clips in SCALE_CLIPS:
        torch.manual_seed(0)
        model = DiT(CHANNELS, PATCH, mlp_ratio=MLP_RATIO, text_dim=TEXT_DIM, **SCALE_MODEL)
        xs, targets, t, text, text_mask = inputs([SCALE_CLIP] * clips, seed=5)

        def loss() -> torch.Tensor:
            return sum(F.mse_loss(o, y, reduction="sum") for o, y in zip(model(xs, t, text, text_mask), targets))

        case = Case(model, loss)
        interleaved([case], 0, max(1, warmup))  # AdamW's state exists before the measured step
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = rss_kib("VmRSS")
        interleaved([case], steps, 0)
        above = (rss_kib("VmHWM") - base) / 1024  # the peak over the timed steps
        n = clips * tokens_of(SCALE_CLIP)
        flops = 3 * model.forward_flops([tokens_of(SCALE_CLIP)] * clips, TEXT_LEN)
        rows.append({"clips": clips, "tokens": n, "memory_above_base_mib": above, **case.summary(n, flops, peak)})
        print(f"  packed {clips:2d} x 1024 tokens: {statistics.median(case.wall):.2f} s, {above:.0f} MiB above base", flush=True)
    first = rows[0]
    for r in rows:
        r["time_over_4_clips"] = r["step_s_median"] / first["step_s_median"]
        # None when 4 clips peak within the allocator's noise of the base (0 MiB measured): no ratio to give
        r["memory_over_4_clips"] = (r["memory_above_base_mib"] / first["memory_above_base_mib"]
                                    if first["memory_above_base_mib"] > 0 else None)
    return rows


def section_compile(steps: int, warmup: int, peak: float) -> dict:
    from videogen.modules.dit import compile_blocks

    xs, targets, t, text, text_mask = inputs(SECTION1_BATCH, seed=1)
    x, target = torch.stack(xs), torch.stack(targets)
    mixed = inputs(MIXED, seed=2)
    torch.manual_seed(0)
    eager = build_ours()
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled)
    result = {}
    for name, loss_of, tokens in (
        ("bucket", lambda m: lambda: F.mse_loss(m(x, t, text, text_mask), target), sum(tokens_of(s) for s in SECTION1_BATCH)),
        ("packed", lambda m: lambda: sum(F.mse_loss(o, y) for o, y in zip(m(*mixed[:1], *mixed[2:]), mixed[1])),
         sum(tokens_of(s) for s in MIXED)),
    ):
        cases = {"eager": Case(eager, loss_of(eager)), "compiled": Case(compiled, loss_of(compiled))}
        t0 = time.perf_counter()
        cases["compiled"].run(record=False)  # the compile
        compile_s = time.perf_counter() - t0
        interleaved(list(cases.values()), steps, warmup)
        row = {k: c.summary(tokens, 0, peak) for k, c in cases.items()}
        row["compile_s"] = compile_s
        row["compiled_over_eager_tokens_per_s"] = row["compiled"]["tokens_per_s"] / row["eager"]["tokens_per_s"]
        result[name] = row
        print(f"  compile {name}: eager {row['eager']['tokens_per_s']:.0f} tok/s, compiled "
              f"{row['compiled']['tokens_per_s']:.0f} tok/s ({row['compiled_over_eager_tokens_per_s']:.2f}x), "
              f"compile {compile_s:.0f} s", flush=True)
    return result


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    diffusers = importlib.import_module("diffusers") if importlib.util.find_spec("diffusers") else None  # only section 1 needs it
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__ if diffusers else None,
        "gpu": torch.cuda.is_available(),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    peak_before = matmul_peak(args.threads)
    print(f"matmul peak ({MATMUL_N}^3 fp32, {args.threads} thread(s)): {peak_before / 1e9:.1f} GFLOP/s", flush=True)
    chosen = set(args.sections.split(","))
    reference = section_reference(args.steps, args.warmup, peak_before, args.profile) if "reference" in chosen else None
    packing = section_packing(args.steps, args.warmup, peak_before) if "packing" in chosen else None
    scaling = section_scaling(args.steps, args.warmup, peak_before, args.max_tokens) if "scaling" in chosen else None
    packed_scale = section_packed_scale(args.steps, args.warmup, peak_before) if "packed_scale" in chosen else None
    compiled = section_compile(args.steps, args.warmup, peak_before) if "compile" in chosen else None
    peak_after = matmul_peak(args.threads)
    result = {
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "args": vars(args),
        "machine": machine(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "model": {"hidden": HIDDEN, "depth": DEPTH, "heads": HEADS, "mlp_ratio": MLP_RATIO, "patch": PATCH,
                  "channels": CHANNELS, "text_len": TEXT_LEN, "text_dim": TEXT_DIM},
        "matmul_peak_flops": {"before": peak_before, "after": peak_after, "used": peak_before},
        "reference": reference,
        "packing": packing,
        "scaling": scaling,
        "packed_scale": packed_scale,
        "compile": compiled,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

    print(f"\nmachine: {result['machine']['cpu']}, {args.threads} thread(s), load {load_before[0]:.2f} -> "
          f"{result['load_avg_after'][0]:.2f}; matmul peak {peak_before / 1e9:.1f} / {peak_after / 1e9:.1f} GFLOP/s "
          "(before / after); no GPU")
    if packed_scale:
        print("\n5. packed step, clips of 1024 tokens (model", SCALE_MODEL, ")")
        for r in packed_scale:
            print(f"{r['clips']:>3} clips {r['step_s_median']:>7.2f} s ({r['time_over_4_clips']:.2f}x) "
                  f"{r['memory_above_base_mib']:>7.0f} MiB above base"
                  + (f" ({r['memory_over_4_clips']:.2f}x)" if r["memory_over_4_clips"] is not None else ""))
    if compiled:
        for k, r in compiled.items():
            print(f"6. compile, {k}: {r['compiled_over_eager_tokens_per_s']:.2f}x tokens/s (compile {r['compile_s']:.0f} s)")
    if reference is None or packing is None or scaling is None:
        print(f"\nwrote {out}")
        return
    print("\n1. training step, same batch", reference["batch"])
    print(f"{'model':<14}{'params':>10}{'s/step':>9}{'cpu s':>8}{'tok/s':>9}{'GFLOP/step':>12}{'MFU':>7}")
    for name, key in (("ours (cross)", "ours"), ("ours (joint)", "ours_joint"), ("CogVideoX", "reference")):
        r = reference[key]
        print(f"{name:<14}{r['params']:>10,}{r['step_s_median']:>9.3f}{r['cpu_s_median']:>8.3f}"
              f"{r['tokens_per_s']:>9.0f}{r['step_flops'] / 1e9:>12.1f}{r['mfu_vs_matmul_peak']:>7.1%}")
    for key in ("ours", "ours_joint"):
        r = reference[key]
        print(f"{key} / CogVideoX tokens/s: {reference[f'{key}_over_reference_tokens_per_s']:.2f} "
              f"(CPU time: {reference[f'{key}_over_reference_cpu_time']:.2f}); counted step FLOPs "
              f"{r['counted_step_flops'] / 1e9:.1f} G vs analytic 3x forward {r['step_flops'] / 1e9:.1f} G")
    print(f"\n2. packing vs padding: {packing['useful_tokens']} useful tokens, padded to {packing['padded_tokens']} "
          f"({packing['padding_fraction']:.0%} padding)")
    for key in ("packed", "padded"):
        r = packing[key]
        print(f"{key:<8} {r['step_s_median']:.3f} s/step, {r['useful_tokens_per_s']:.0f} useful tok/s, "
              f"MFU {r['mfu_vs_matmul_peak']:.1%}")
    print(f"packed / padded useful tokens/s: {packing['packed_over_padded_useful_tokens_per_s']:.2f}")
    print("\n3. scaling (one clip)")
    print(f"{'tokens':>7}{'s/step':>9}{'tok/s':>8}{'GFLOP/step':>12}{'attn share':>12}{'MFU':>7}")
    for r in scaling:
        print(f"{r['tokens']:>7}{r['step_s_median']:>9.3f}{r['tokens_per_s']:>8.0f}{r['step_flops'] / 1e9:>12.1f}"
              f"{r['attention_flop_share']:>12.0%}{r['mfu_vs_matmul_peak']:>7.1%}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
