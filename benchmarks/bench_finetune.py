"""LoRA vs full finetuning of a pretrained diffusers transformer: step time and peak memory.

Builds a small random WanTransformer3DModel (``--layers``, ``--heads`` x 128 wide), saves it with
save_pretrained to a temporary folder, and times training steps (forward, backward, AdamW) of
``videogen.models.dit.diffusers_adapters.WanTransformer`` in each mode on one latent batch, each mode in its
own process so the peak resident memory (CPU: ru_maxrss; CUDA: max_memory_allocated) is that mode's alone.

    python benchmarks/bench_finetune.py --device cpu --layers 4 --heads 3 --steps 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def run_mode(args: argparse.Namespace, folder: str, lora_rank: int | None) -> dict:
    import torch

    from videogen.models.dit.diffusers_adapters import WanTransformer
    from videogen.modules.dit import checkpoint_blocks

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = WanTransformer(folder, lora_rank=lora_rank).to(device)
    if args.checkpointing:  # as DiTModule(activation_checkpointing=True) applies it
        checkpoint_blocks(net)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(1, 16, args.frames, args.size, args.size, device=device)
    text = torch.randn(1, 64, 4096 if args.text_dim is None else args.text_dim, device=device)
    mask = torch.ones(1, 64, dtype=torch.bool, device=device)
    times = []
    for step in range(args.steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = net(x, torch.rand(1, device=device), text, mask).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step allocates the optimizer state
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"mode": "full" if lora_rank is None else f"lora r{lora_rank}", "trainable": sum(p.numel() for p in params),
            "total": sum(p.numel() for p in net.parameters()), "step_s": sorted(times)[len(times) // 2],
            "peak_bytes": peak, "tokens": args.frames * (args.size // 2) ** 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--text-dim", type=int, default=64)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=16, help="latent height = width")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_mode(args, args.folder, None if args.child == "full" else args.rank)))
        return
    from diffusers import WanTransformer3DModel

    with tempfile.TemporaryDirectory() as folder:
        dim = 128 * args.heads
        WanTransformer3DModel(num_attention_heads=args.heads, attention_head_dim=128, in_channels=16, out_channels=16,
                              text_dim=args.text_dim, ffn_dim=4 * dim, num_layers=args.layers).save_pretrained(folder)
        rows = []
        for mode in ("full", "lora"):
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode, "--folder", folder],
                                 check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['mode']:>9}: {r['trainable'] / 1e6:8.3f}M of {r['total'] / 1e6:.3f}M params train, "
              f"step {r['step_s'] * 1000:8.1f} ms, peak {r['peak_bytes'] / 2 ** 20:8.1f} MiB ({r['tokens']} tokens)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
