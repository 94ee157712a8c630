"""Memory per GPU of DiT training under Ulysses sequence parallelism: the table in docs/cluster.md.

    python benchmarks/sp_memory.py            # prints the markdown table

Arithmetic, not a measurement on a GPU (none was available); the inputs are stated here:

- tokens: 720p (1280 x 720) at 16 fps, clips of 1 + 4k frames (2 s = 33, 5 s = 81, 16 s = 257), the
  4x8x8 causal VAE (latent frames 1 + (F - 1) / 4, 90 x 160 latents), DiT patch 1x2x2 -> 45 x 80 = 3,600
  tokens per latent frame;
- activations: what autograd saves for one cross-attention DiT block, per token per width, counted
  with ``torch.autograd.graph.saved_tensors_hooks`` under bf16 autocast on the CPU (fp32 residual
  stream, N = 1,024, width 256 and 512: 105 and 115 bytes; the count does not grow with N: no N x N
  tensor): ``BLOCK_BYTES``. With activation checkpointing per block a block keeps only its fp32 input
  (4 bytes per token per width) until backward, and one block
  at a time is recomputed in full: (4 depth + BLOCK_BYTES) N D / P bytes per rank; without
  checkpointing every block keeps all: depth BLOCK_BYTES N D / P;
- weights: fp32 weights, gradients, AdamW's two moments and the fp32 EMA copy, 20 bytes per parameter,
  sharded by FSDP over the P ranks of one sequence group (more with more data-parallel groups), plus
  two blocks' bf16 weights gathered at a time;
- compute: ``DiT.forward_flops`` (120 text keys) x 4 per training step with checkpointing (forward,
  recompute, backward = 2 forwards), divided over the P ranks (Ulysses splits every matmul and the
  attention by tokens or heads); the time is that at 40% of an H100/H200's 989 TFLOP/s bf16 peak.
"""

from __future__ import annotations

BLOCK_BYTES = 115  # saved bytes per token per width of one cross-attention block under bf16 autocast (measured)
FPS, TOKENS_PER_LATENT_FRAME = 16, (720 // 8 // 2) * (1280 // 8 // 2)
CLIPS = {"2 s": 33, "5 s": 81, "16 s": 257}
DEGREES = (1, 2, 4, 8)
MODELS = {"DiT-B": dict(hidden_size=768, depth=12, num_heads=12), "DiT-XL": dict(hidden_size=1152, depth=28, num_heads=16)}


def tokens(frames: int) -> int:
    return (1 + (frames - 1) // 4) * TOKENS_PER_LATENT_FRAME


def table() -> str:
    from videogen.models.dit import DiT

    lines = ["| model | clip | tokens | P | activations / GPU, checkpointed | not checkpointed | weights, grads, "
             "AdamW, EMA / GPU | total / GPU (checkpointed) | step time at 40% MFU |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, kw in MODELS.items():
        dit = DiT(in_channels=16, text_dim=384, frame_conditioning=True, **kw)
        params = sum(p.numel() for p in dit.parameters())
        block = sum(p.numel() for p in dit.blocks[0].parameters())
        d, depth = kw["hidden_size"], kw["depth"]
        for clip, frames in CLIPS.items():
            n = tokens(frames)
            step_flops = 4 * dit.forward_flops([n], 120)
            for p in DEGREES:
                act = (4 * depth + BLOCK_BYTES) * n * d / p
                full = depth * BLOCK_BYTES * n * d / p
                states = 20 * params / p + 2 * 2 * block
                seconds = step_flops / p / (0.4 * 989e12)
                lines.append(f"| {name} ({params / 1e6:.0f}M) | 720p x {clip} ({frames} frames) | {n:,} | {p} | "
                             f"{act / 2**30:.1f} GiB | {full / 2**30:.0f} GiB | {states / 2**30:.1f} GiB | "
                             f"{(act + states) / 2**30:.1f} GiB | {seconds:.1f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
