"""Tokenizer and prompt template, loss masking, word swaps, BLEU-4 and attribute matching."""

import math

import pytest
import torch
import torch.nn.functional as F

from videogen.captioning import IGNORE, encode_example, load_tokenizer, swap_words
from videogen.models.captioner import captioner_tiny
from videogen.evaluation.caption_metrics import attribute_hits, bleu4
from videogen.modules.captioner import CaptionerModule

CAPTION = "A small red circle moves to the left across the frame. The background is a plain, solid slate colour."


def test_template_round_trip():
    tok = load_tokenizer()
    prompt = tok.prompt("Describe this video. Short caption: {txt}.", "a red circle")
    assert prompt[0] == tok.bos
    assert tok.decode(prompt) == "describe this video. short caption : a red circle."
    ids, labels = encode_example(tok, prompt, CAPTION, max_length=128)
    assert ids[: len(prompt)] == prompt and ids[-1] == tok.eos
    trained = [t for t in labels if t != IGNORE]
    assert tok.decode(trained) == CAPTION.lower()  # WordPiece lower-cases; nothing else is lost
    assert len(ids) == len(labels)


def test_long_examples_are_cut_to_max_length():
    tok = load_tokenizer()
    ids, labels = encode_example(tok, tok.prompt("Describe."), CAPTION, max_length=10)
    assert len(ids) == len(labels) == 10


def test_missing_tokenizer_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_tokenizer(str(tmp_path / "nope"))


def test_prompt_tokens_are_not_trained():
    """The loss is the cross-entropy of the caption tokens only: the prompt's logits get no gradient."""
    torch.manual_seed(0)
    module = CaptionerModule(captioner_tiny())
    tok = module.tokens
    ids, labels, mask = module.sequences([CAPTION], ["a red circle"], [True])
    n_prompt = len(tok.prompt(module.hparams.txt_prompt, "a red circle"))
    assert (labels[0, :n_prompt] == IGNORE).all() and (labels[0, n_prompt:] != IGNORE).all()
    memory = module.captioner.encode(torch.rand(1, 3, 5, 32, 32) * 2 - 1)
    logits, _ = module.captioner.decode(memory, ids[:, :-1], mask[:, :-1])
    logits.retain_grad()
    loss = F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
    loss.backward()
    grad = logits.grad[0].abs().sum(-1)  # per input position
    assert (grad[: n_prompt - 1] == 0).all()  # positions whose next token is a prompt token
    assert (grad[n_prompt - 1:] > 0).all()  # the last prompt token predicts the first caption token
    same, _, _ = module.caption_loss(memory, ids, labels, mask)
    assert same.item() == pytest.approx(loss.item(), rel=1e-5)


def test_swap_words_is_simultaneous_and_keeps_case():
    swaps = {"left": "right", "right": "left", "up": "down", "down": "up", "top edge": "bottom edge",
             "bottom edge": "top edge"}
    assert swap_words("Left, then right; up toward the top edge.", swaps) == "Right, then left; down toward the bottom edge."
    assert swap_words("lighter at the top, an upright cup", swaps) == "lighter at the top, an upright cup"


def test_bleu4():
    ref = "a small red circle moves to the left across the frame"
    assert bleu4([ref], [ref]) == pytest.approx(1.0)
    assert bleu4(["completely unrelated words here now"], [ref]) == 0.0
    hyp = "a small red circle moves to the right across the frame"
    # 1-4 gram precisions 10/11, 8/10, 6/9, 4/8 and no brevity penalty (same length)
    expected = math.exp((math.log(10 / 11) + math.log(8 / 10) + math.log(6 / 9) + math.log(4 / 8)) / 4)
    assert bleu4([hyp], [ref]) == pytest.approx(expected)
    short = "a small red circle moves to the left"
    assert bleu4([short], [ref]) == pytest.approx(math.exp(1 - 11 / 8))  # all n-grams match: brevity only
    with pytest.raises(ValueError):
        bleu4(["a"], [])


def test_attribute_hits_need_exactly_the_true_value():
    truth = {"colour": "red", "shape": "circle", "direction": "left", "background": "slate"}
    assert attribute_hits(CAPTION, truth) == {"colour": True, "shape": True, "direction": True}
    assert attribute_hits("A red and blue square moves up.", truth) == {"colour": False, "shape": False,
                                                                         "direction": False}
    assert attribute_hits("A red circle rests.", {**truth, "direction": "none"}) == {"colour": True, "shape": True}


def test_token_map_round_trip_and_unknown_words(synthetic_set):
    from videogen.captioning import build_token_map, caption_texts

    base = load_tokenizer()
    texts = caption_texts(str(synthetic_set / "train"), "long")
    assert len(texts) == 18  # 9 txt + 9 long captions
    tok = load_tokenizer(None, build_token_map(base, texts))
    assert tok.vocab_size < 200 and (tok.bos, tok.eos, tok.pad) != (base.bos, base.eos, base.pad)
    caption = texts[1]
    ids = tok.text(caption)
    assert max(ids) < tok.vocab_size and tok.decode(ids) == base.decode(base.text(caption))
    unknown = tok.text("a zebra")
    assert tok.decode(unknown) == "a"  # words outside the map become [UNK], which decodes to nothing


def test_frame_encoder_tokens_depend_on_the_clip():
    """At init, different clips give clearly different visual tokens (a signal-shrinking init once made
    every clip look the same to the decoder)."""
    from videogen.models.captioner import VideoCaptioner

    torch.manual_seed(0)
    model = VideoCaptioner(64, 64, 1, 2, 32, channels=(32, 64, 128), num_frames=4, stem_stride=2)
    video = torch.full((4, 3, 5, 64, 64), -0.8)
    for i in range(4):  # one coloured square each, in a different place and colour
        video[i, i % 3, :, 8 * i: 8 * i + 20, 10: 30] = 0.9
    with torch.no_grad():
        memory = model.encode(video)  # (B, N, D)
    across = memory.std(0).mean()
    within = memory.std(1).mean()
    assert across > 0.2 * within


def test_augmentations_move_pixels_and_swap_words():
    import random

    module = CaptionerModule(captioner_tiny(), flip_prob=1.0, flip_swaps={"left": "right", "right": "left"},
                             vflip_prob=1.0, vflip_swaps={"up": "down", "down": "up", "at the top": "at the bottom",
                                                          "at the bottom": "at the top"},
                             reverse_prob=1.0, reverse_swaps={"left": "right", "right": "left", "up": "down", "down": "up"})
    video = torch.arange(2 * 3 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 3, 4, 5)
    out, texts = module.augment(video.clone(), [["moves left and up, lighter at the top"], ["moves down"]],
                                random.Random(0))
    torch.testing.assert_close(out, video.flip(-1).flip(-2).flip(2))  # mirrored both ways and played backwards
    # left->right (flip) ->left (reverse); up->down (vflip) ->up (reverse); top->bottom (vflip only)
    assert texts == [["moves left and up, lighter at the bottom"], ["moves down"]]
