"""Packed rows (NaViT) through variable-length attention: each clip's outputs and gradients equal the clip run
alone, no N x N tensor, the clip offsets (Segments), padding to a token budget, the varlen (CUDA) branch."""

import pytest
import torch

from models.dit_parts import C, TEXT_ATTENTION, TEXT_DIM, clips_and_text, packed, tiny  # noqa: F401 (packed: a fixture)
from videogen.models.dit import dit_tiny, pack
from videogen.models.dit.attention import Segments, text_segments, token_runs


@pytest.mark.parametrize("text_attention", TEXT_ATTENTION)
def test_packed_equals_clips_one_by_one_outputs_and_gradients(text_attention):
    """A pack's outputs and every weight's gradient equal those of the clips run one by one (bucket path)."""
    latents, t, text, text_mask = clips_and_text()
    model = tiny(text_attention=text_attention).train()
    packed = model(latents, t, text, text_mask)
    sum(o.pow(2).sum() for o in packed).backward()
    packed_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    for i, x in enumerate(latents):
        alone = model(x[None], t[i : i + 1], text[i : i + 1], text_mask[i : i + 1])[0]
        assert packed[i].shape == x.shape and alone.abs().max() > 0.1
        torch.testing.assert_close(packed[i], alone, atol=2e-5, rtol=1e-4)
        alone.pow(2).sum().backward()  # gradients accumulate over the clips, as the pack's sum does
    assert sum(g.abs().sum() for g in packed_grads.values()) > 0
    for k, p in model.named_parameters():
        torch.testing.assert_close(packed_grads[k], p.grad, atol=1e-4, rtol=1e-4, msg=k)


@pytest.mark.parametrize("text_attention", TEXT_ATTENTION)
def test_packed_attention_builds_no_n_by_n_tensor(text_attention):
    """Forward and backward of a pack: no tensor anywhere holds N x N (or N x all-text-keys) values, and the
    attention work is the clips' own: the largest tensor is far below N^2."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(o, torch.Tensor):
                    self.largest = max(self.largest, o.numel())
            return out

    g = torch.Generator().manual_seed(0)
    latents = [torch.randn(C, 4, 8, 8, generator=g) for _ in range(16)]  # 16 clips x 64 tokens: N = 1024
    t, text = torch.rand(16, generator=g), torch.randn(16, 5, TEXT_DIM, generator=g)
    model = tiny(text_attention=text_attention).train()
    with Largest() as mode:
        sum(o.pow(2).sum() for o in model(latents, t, text, torch.ones(16, 5, dtype=torch.bool))).backward()
    n = 1024  # a dense mask alone would be N^2, the scores heads x N^2
    assert mode.largest < n * n / 2, mode.largest  # the largest is an activation: the modulation (N, 6 D)


def test_segments_from_clip_offsets():
    """Runs from segment ids; cross keys = each clip's real caption keys, joint = those + the clip's tokens."""
    ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 1, 1, 1, -1, -1]])
    runs = token_runs(ids)
    assert runs.start == (0, 3, 5, 6, 7, 10) and runs.end == (3, 5, 6, 7, 10, 12) and runs.clip == (0, 1, -1, 0, 1, -1)
    text_mask = torch.tensor([[[1, 1, 0], [1, 0, 0]], [[1, 0, 1], [1, 1, 1]]], dtype=torch.bool)  # (B, S, L')
    cross = text_segments(runs, text_mask, torch.device("cpu"), joint=False)
    assert cross.q_lens == (3, 2, 1, 1, 3, 2) and cross.k_lens == (2, 1, 1, 2, 3, 1)
    assert cross.key_index.tolist() == [0, 1, 3, 0, 6, 8, 9, 10, 11, 6]  # row 1's keys start at 6
    assert cross.cu_k.tolist() == [0, 2, 3, 4, 6, 9, 10] and cross.cu_k.dtype == torch.int32
    joint = text_segments(runs, text_mask, torch.device("cpu"), joint=True)  # K = 6 text + 6 tokens per row
    assert joint.k_lens == (5, 3, 1, 3, 6, 2)
    assert joint.key_index.tolist()[:9] == [0, 1, 6, 7, 8, 3, 9, 10, 11]
    assert joint.key_index.tolist()[9:] == [12, 14, 18] + [15, 16, 17, 19, 20, 21] + [22, 23]  # row 1 from 12
    assert isinstance(joint, Segments) and (joint.max_q, joint.max_k) == (4, 8)  # 3 and 6 up to a power of two
    assert (cross.max_q, cross.max_k) == (4, 4)
    with pytest.raises(ValueError, match="clip 0 are not contiguous"):
        token_runs(torch.tensor([[0, 0, 1, 0]]))


def test_pack_padded_to_a_token_budget_gives_the_same_outputs(packed):
    """``pad_to`` (a fixed row length for compiled kernels) adds ignored padding tokens and changes nothing."""
    model, latents, t, text, text_mask = packed
    with torch.no_grad():
        plain = model(latents, t, text, text_mask)
        padded = model(latents, t, text, text_mask, pad_to=128)
    for a, b in zip(plain, padded):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="pad_to=60"):
        model(latents, t, text, text_mask, pad_to=60)


def test_two_packed_rows_equal_each_row_alone(packed):
    """forward_tokens with B = 2 rows (different clips, padding in one): each row's output is what it gets alone."""
    model, latents, t, text, text_mask = packed
    a, b = pack(latents[:2], model.patch_size), pack([latents[2], latents[0]], model.patch_size)  # 54 and 60 tokens
    pad = b.tokens.shape[1] - a.tokens.shape[1]
    rows = {
        "tokens": torch.cat([torch.cat([a.tokens, torch.randn(1, pad, a.tokens.shape[2])], 1), b.tokens]),
        "positions": torch.cat([torch.cat([a.positions, torch.zeros(1, pad, 3, dtype=torch.long)], 1), b.positions]),
        "segment_ids": torch.cat([torch.cat([a.segment_ids, torch.full((1, pad), -1)], 1), b.segment_ids]),
    }
    t2, text2, mask2 = torch.stack([t[:2], t[[2, 0]]]), torch.stack([text[:2], text[[2, 0]]]), torch.stack([text_mask[:2], text_mask[[2, 0]]])
    with torch.no_grad():
        both = model.forward_tokens(rows["tokens"], rows["positions"], rows["segment_ids"], t2, text2, mask2)
        alone_a = model.forward_tokens(a.tokens, a.positions, a.segment_ids, t2[:1], text2[:1], mask2[:1])
        alone_b = model.forward_tokens(b.tokens, b.positions, b.segment_ids, t2[1:], text2[1:], mask2[1:])
    torch.testing.assert_close(both[:1, : a.tokens.shape[1]], alone_a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both[1:], alone_b, atol=1e-6, rtol=1e-5)


def test_varlen_call_gets_offsets_that_match_the_per_clip_path(packed, monkeypatch):
    """The CUDA branch's glue, on the CPU: varlen_attn replaced by a reference that reads only what it is given
    (flat (T, heads, d) q/k/v, int32 cu_seqlens, launch bounds) gives the per-clip path's outputs."""
    import torch.nn.functional as F

    from videogen.models.dit import attention

    calls = []

    def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k):
        assert q.dim() == 3 and q.is_contiguous() and k.is_contiguous() and cu_q.dtype == cu_k.dtype == torch.int32
        assert cu_q[-1] == q.shape[0] and cu_k[-1] == k.shape[0]
        lq, lk = cu_q.diff(), cu_k.diff()
        assert lq.max() <= max_q <= 2 * lq.max() and lk.max() <= max_k <= 2 * lk.max()
        calls.append(len(lq))
        return torch.cat([F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k[c:d].transpose(0, 1),
                                                         v[c:d].transpose(0, 1)).transpose(0, 1)
                          for a, b, c, d in zip(cu_q[:-1], cu_q[1:], cu_k[:-1], cu_k[1:])])

    model, latents, t, text, text_mask = packed
    with torch.no_grad():
        per_clip = model(latents, t, text, text_mask, pad_to=128)
        monkeypatch.setattr(attention, "varlen_attn", reference_varlen)
        monkeypatch.setattr(attention, "use_varlen", lambda q, backend: True)
        varlen = model(latents, t, text, text_mask, pad_to=128)
    assert calls and set(calls) == {4}  # 3 clips + the padding run, in every attention call
    for a, b in zip(per_clip, varlen):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_varlen_backend_refuses_where_it_cannot_run():
    model = tiny(attention_backend="varlen")
    latents, t, text, text_mask = clips_and_text()
    with pytest.raises(RuntimeError, match="attention_backend='varlen' needs"):
        model(latents, t, text, text_mask)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("text_attention", TEXT_ATTENTION)
def test_varlen_packed_equals_per_clip_on_cuda_in_bf16(text_attention):
    """On CUDA under bf16 autocast ``auto`` runs varlen_attn: outputs and gradients match the per-clip SDPA path."""
    from videogen.models.dit.attention import use_varlen

    g = torch.Generator().manual_seed(0)
    latents = [torch.randn(C, 3, 16, 16, generator=g), torch.randn(C, 1, 8, 24, generator=g),
               torch.randn(C, 2, 12, 8, generator=g)]
    t, text = torch.tensor([0.2, 0.5, 0.9]), torch.randn(3, 5, TEXT_DIM, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    args = ([x.cuda() for x in latents], t.cuda(), text.cuda(), text_mask.cuda())
    results = []
    for backend in ("auto", "per_clip"):
        torch.manual_seed(0)
        model = dit_tiny(in_channels=C, text_dim=TEXT_DIM, hidden_size=128, num_heads=2,
                         text_attention=text_attention, attention_backend=backend).cuda().train()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.05)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs = model(*args)
            assert use_varlen(torch.empty(1, 2, 1, 64, device="cuda", dtype=torch.bfloat16), backend) == (backend == "auto")
        sum(o.float().pow(2).mean() for o in outs).backward()
        results.append(([o.float() for o in outs], torch.cat([p.grad.flatten() for p in model.parameters()])))
    (out_a, grad_a), (out_b, grad_b) = results
    for a, b in zip(out_a, out_b):
        assert (a - b).norm() / b.norm() < 2e-2
    assert (grad_a - grad_b).norm() / grad_b.norm() < 3e-2
