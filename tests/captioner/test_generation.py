"""Generation: KV cache equals no cache, left padding, seeded determinism, sampling methods."""

import pytest
import torch

from videogen.models.captioner import VideoCaptioner, generate_tokens

EOS, PAD = 2, 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VideoCaptioner(vocab_size=50, dim=32, depth=2, heads=2, max_length=48, channels=(8, 16), num_frames=4,
                       grid=(2, 2)).eval()
    with torch.no_grad():  # sharpen the logits so greedy/beam choices are far from ties
        m.decoder.embed.weight.mul_(40)
    return m


@pytest.fixture(scope="module")
def memory(model):
    torch.manual_seed(1)
    return model.encode(torch.rand(3, 3, 9, 32, 48) * 2 - 1)


PROMPTS = [[1, 5, 6, 7], [1, 9], [1, 11, 12]]  # different lengths: left-padded in one batch


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_kv_cache_equals_no_cache(model, memory, method):
    kw = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=20, method=method, num_beams=3)
    with_cache = generate_tokens(model, memory, PROMPTS, use_cache=True, **kw)
    without = generate_tokens(model, memory, PROMPTS, use_cache=False, **kw)
    assert with_cache == without
    assert all(len(c) > 0 for c in with_cache)


def test_cached_logits_match_full_forward(model, memory):
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    full, _ = model.decode(memory[:1], ids)
    logits, cache = model.decode(memory[:1], ids[:, :3])
    steps = [logits[:, -1]]
    for i in range(3, 6):
        logits, cache = model.decode(memory[:1], ids[:, i:i + 1], cache=cache)
        steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 2:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_batched_left_padding_equals_one_by_one(model, memory, method):
    kw = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=12, method=method, num_beams=3)
    batched = generate_tokens(model, memory, PROMPTS, **kw)
    alone = [generate_tokens(model, memory[i:i + 1], [p], **kw)[0] for i, p in enumerate(PROMPTS)]
    assert batched == alone


def test_top_p_is_deterministic_for_a_seed(model, memory):
    def run(seed):
        return generate_tokens(model, memory, PROMPTS, eos_id=EOS, pad_id=PAD, max_new_tokens=15, method="top-p",
                               top_p=0.95, temperature=3.0, generator=torch.Generator().manual_seed(seed))

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_generation_stops_at_eos_and_at_the_decoder_length(model, memory):
    out = generate_tokens(model, memory, PROMPTS, eos_id=EOS, pad_id=PAD, max_new_tokens=500)
    assert all(len(p) + len(o) <= model.max_length for p, o in zip(PROMPTS, out))
    assert all(EOS not in o and PAD not in o for o in out)


def test_beam_search_scores_at_least_greedy(model, memory):
    """Beam search finds a caption whose length-normalised log-probability is at least greedy's."""
    def score(prompt, new, mem):
        ids = torch.tensor([prompt + new + [EOS]])
        logits, _ = model.decode(mem, ids[:, :-1])
        logp = torch.log_softmax(logits[0], -1)
        n = len(prompt)
        return sum(logp[n - 1 + i, t].item() for i, t in enumerate(new + [EOS])) / (len(new) + 1)

    kw = dict(eos_id=EOS, pad_id=PAD, max_new_tokens=30)
    greedy = generate_tokens(model, memory, PROMPTS, method="greedy", **kw)
    beam = generate_tokens(model, memory, PROMPTS, method="beam", num_beams=4, **kw)
    for i, p in enumerate(PROMPTS):
        if len(greedy[i]) < 30 and len(beam[i]) < 30:  # both finished with EOS
            assert score(p, beam[i], memory[i:i + 1]) >= score(p, greedy[i], memory[i:i + 1]) - 1e-4


def test_bad_arguments(model, memory):
    with pytest.raises(ValueError, match="sampling method"):
        generate_tokens(model, memory, PROMPTS, eos_id=EOS, pad_id=PAD, method="nucleus")
    with pytest.raises(ValueError, match="prompts for"):
        generate_tokens(model, memory, PROMPTS[:1], eos_id=EOS, pad_id=PAD)
