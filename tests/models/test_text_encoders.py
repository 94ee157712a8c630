"""T5 and CLIP text encoders from local folders: tiny random models saved with save_pretrained and a
WordLevel tokenizer built with the ``tokenizers`` package; encoder-only loading, dtype, CPU cache."""

from __future__ import annotations

import json

import pytest
import torch

from videogen.models.text import FrozenTextEncoder

WORDS = ["<pad>", "</s>", "<unk>", "<s>", "a", "red", "blue", "square", "circle", "moving", "left", "right"]


def tokenizer(**special):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
                                   **special)


def tiny_t5(folder):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)  # a whole T5 folder, as shipped
    tokenizer().save_pretrained(folder)
    return folder


def tiny_clip(folder):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                         pad_token_id=0, bos_token_id=3, eos_token_id=1),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=16, patch_size=8),
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)  # text + vision towers, as shipped
    tokenizer(bos_token="<s>").save_pretrained(folder)
    return folder


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
