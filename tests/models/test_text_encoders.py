"""T5 and CLIP text encoders from local folders: tiny random models saved with save_pretrained and a
WordLevel tokenizer built with the ``tokenizers`` package; encoder-only loading, dtype, CPU cache."""

from __future__ import annotations

import json

import pytest
import torch

from models.pretrained_parts import tiny_clip, tiny_t5
from videogen.models.text import FrozenTextEncoder

@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    return tiny_t5(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.mark.parametrize("which,cls,dim", [("t5", "T5EncoderModel", 32), ("clip", "CLIPTextModel", 32)])
def test_encoder_only_class_from_config_json(which, cls, dim, t5_folder, clip_folder):
    folder = t5_folder if which == "t5" else clip_folder
    enc = FrozenTextEncoder(str(folder), max_length=8, cache_size=4)
    assert type(enc.encoder).__name__ == cls and enc.dim == dim
    assert not any("decoder" in k or "vision" in k for k in enc.encoder.state_dict())
    assert next(enc.encoder.parameters()).dtype == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    tokens, mask = enc(["a red square moving left", "a blue circle"])
    assert tokens.shape == (2, 8, dim) and tokens.dtype == torch.float32
    assert mask.sum(1).tolist() == [6, 4]  # words + </s>
    assert tokens[~mask].abs().max() == 0 and tokens[mask].abs().min() > 0
    assert not torch.allclose(tokens[0, :3], tokens[1, :3])


def test_cache_is_on_the_cpu_bounded_and_returns_the_same_tokens(t5_folder):
    enc = FrozenTextEncoder(str(t5_folder), max_length=8, cache_size=2)
    first, m1 = enc(["a red square", "a blue circle"])
    again, m2 = enc(["a blue circle", "a red square"])  # both from the cache
    torch.testing.assert_close(again, first.flip(0))
    assert torch.equal(m2, m1.flip(0))
    assert all(tok.device.type == "cpu" and tok.shape[0] == int(m.sum()) for tok, m in enc._cache.values())
    enc(["a red circle"])
    assert list(enc._cache) == ["a red square", "a red circle"]  # the least recent went


def test_float32_option_and_refusals(t5_folder, tmp_path):
    enc = FrozenTextEncoder(str(t5_folder), max_length=8, dtype="float32")
    assert next(enc.encoder.parameters()).dtype == torch.float32
    half = FrozenTextEncoder(str(t5_folder), max_length=8, dtype="bfloat16")
    assert next(half.encoder.parameters()).dtype == torch.bfloat16
    tokens, _ = half(["a red square"])  # on the CPU it runs in fp32
    assert tokens.dtype == torch.float32 and next(half.encoder.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype='int8'"):
        FrozenTextEncoder(str(t5_folder), dtype="int8")
    bad = tmp_path / "bart"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bart", "is_encoder_decoder": True}))
    with pytest.raises(OSError, match="encoder-decoder of model_type 'bart'"):
        FrozenTextEncoder(str(bad))
