"""Fixtures for the curation tests (imported by each test module: a conftest.py here would shadow
tests/conftest.py for `from conftest import ...`): a small labelled synthetic set (every kind of clip the steps
must find) written once per module as real shards, and a tiny real CLIP model folder."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """(folder, labels): 14 clips in shards of 4: normal, static, two-scene (known cut), exact and
    re-encoded duplicates (originals in earlier shards), black, jittery and letterboxed clips."""
    from data_recipes.curate.testset import write_curation_set

    folder = tmp_path_factory.mktemp("labelled") / "src"
    labels = write_curation_set(folder, num_clips=14, seed=0, shard_size=4)
    return folder, labels


@pytest.fixture
def src(labelled, tmp_path):
    """A private copy of the labelled set (tests that add or damage shards)."""
    folder = tmp_path / "src"
    shutil.copytree(labelled[0], folder)
    return folder, json.loads((folder / "labels.json").read_text())


def make_tiny_clip(folder):
    """A randomly initialised CLIP (16-wide, one layer) with a byte-level tokenizer, saved as a Hugging
    Face folder: the real loading and scoring code runs on it offline."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    torch.manual_seed(0)
    end, start = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=end, bos_token_id=start,
                         pad_token_id=end),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder
