"""What only a CUDA device can show (``pytest -m gpu``; skipped without one). benchmarks/gpu_acceptance.py
runs these first. Every test is small (a few seconds on an H100/H200) and needs torch, einops, numpy,
pyyaml, safetensors and pytest only: no data stack, no text encoder.

- a bucket batch's self-attention runs the flash kernel (SDPA's flash or cuDNN backend), forward and
  backward, in bf16;
- a pack (variable-length attention over the clips' offsets) equals the clips run one by one, in bf16,
  outputs and gradients;
- FSDP on one GPU (the wrapping of configs/trainer/fsdp_dit.yaml: one unit per block and per DiT,
  bf16 compute, fp32 gradient reduction) trains like the unwrapped DiT under bf16 autocast, for bucket
  and packed batches.
"""

import os

import pytest
import torch

from conftest import free_port

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def dit(**kw):
    from videogen.models.dit import DiT

    torch.manual_seed(0)
    model = DiT(**{"in_channels": 16, "hidden_size": 256, "depth": 2, "num_heads": 4, "text_dim": 64,
                   "frame_conditioning": False, **kw})
    with torch.no_grad():  # no zero-initialised gates: every layer is exercised and gets a gradient
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model.cuda()


def text(n: int, length: int = 12):
    g = torch.Generator().manual_seed(3)
    mask = torch.arange(length)[None] < torch.randint(1, length + 1, (n, 1), generator=g)
    return torch.randn(n, length, 64, generator=g).cuda(), mask.cuda()


def attention_ops(fn) -> dict[str, int]:
    """SDPA kernel calls (aten op names) made by ``fn``, forward and backward."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.key: e.count for e in prof.key_averages() if "scaled_dot_product" in e.key or "varlen" in e.key}


def test_bucket_self_attention_runs_the_flash_kernel():
    model = dit()
    x = torch.randn(2, 16, 5, 16, 16, device="cuda")  # 5 x 8 x 8 = 320 tokens per clip, head dim 64
    t = torch.rand(2, device="cuda")
    tokens, mask = text(2)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x, t, tokens, mask)
        out.float().pow(2).mean().backward()

    ops = attention_ops(step)
    flash = sum(n for k, n in ops.items() if ("flash" in k or "cudnn" in k) and "backward" not in k)
    flash_bwd = sum(n for k, n in ops.items() if ("flash" in k or "cudnn" in k) and "backward" in k)
    assert flash >= 2 and flash_bwd >= 2, ops  # the self-attention of both blocks, both ways


@pytest.mark.parametrize("text_attention", ["cross", "joint"])
def test_packed_bf16_equals_clips_one_by_one(text_attention):
    model = dit(text_attention=text_attention)
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 16, 16), (3, 16, 24), (1, 32, 32), (5, 8, 8)]
    clips = [torch.randn(16, *s, generator=g).cuda() for s in shapes]
    t = torch.rand(len(clips), generator=g).cuda()
    tokens, mask = text(len(clips))
    weights = [torch.randn(c.shape, generator=g).cuda() for c in clips]

    def grads(outs):
        model.zero_grad()
        sum((o.float() * w).sum() for o, w in zip(outs, weights)).backward()
        return {n: p.grad.float().clone() for n, p in model.named_parameters()}

    with torch.autocast("cuda", dtype=torch.bfloat16):
        packed = model(clips, t, tokens, mask, pad_to=2048)
    ops = attention_ops(lambda: model(clips, t, tokens, mask))
    g_packed = grads(packed)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        single = [model(c[None], t[i: i + 1], tokens[i: i + 1], mask[i: i + 1])[0] for i, c in enumerate(clips)]
    g_single = grads(single)
    assert any("varlen" in k for k in ops), ops  # the pack went through variable-length attention
    for a, b in zip(packed, single):
        assert a.shape == b.shape
        assert (a.float() - b.float()).abs().max() <= 0.03 * b.float().abs().max(), text_attention
    for n in g_single:
        scale = g_single[n].abs().max().clamp_min(1e-6)
        assert (g_packed[n] - g_single[n]).abs().max() <= 0.05 * scale, n


def test_fsdp_on_one_gpu_trains_like_the_unwrapped_dit():
    import copy
    import functools

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP, MixedPrecision
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from videogen.models.dit.blocks import DiTBlock
    from videogen.models.dit.model import DiT

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        plain = dit()
        wrapped = FSDP(copy.deepcopy(plain), auto_wrap_policy=ModuleWrapPolicy({DiTBlock, DiT}),
                       mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                      buffer_dtype=torch.float32),
                       device_id=torch.cuda.current_device())
        g = torch.Generator().manual_seed(5)
        bucket = torch.randn(2, 16, 5, 16, 16, generator=g).cuda()
        pack = [torch.randn(16, *s, generator=g).cuda() for s in ((5, 16, 16), (3, 8, 24))]
        losses = {"plain": [], "fsdp": []}
        for name, model in (("plain", plain), ("fsdp", wrapped)):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            for step in range(4):
                x = bucket if step % 2 == 0 else pack
                t = torch.full((len(x),), 0.5, device="cuda")
                tokens, mask = text(len(x))
                autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if name == "plain"
                            else functools.partial(torch.autocast, "cuda", enabled=False)())
                with autocast:
                    out = model(x, t, tokens, mask)
                outs = out if isinstance(out, list) else [out]
                loss = sum(o.float().pow(2).mean() for o in outs)
                loss.backward()
                opt.step()
                opt.zero_grad()
                losses[name].append(float(loss))
        assert losses["fsdp"] == pytest.approx(losses["plain"], rel=0.03), losses
        assert losses["plain"][2] != losses["plain"][0]  # it trains
    finally:
        dist.destroy_process_group()
