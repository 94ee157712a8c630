"""The Hugging Face adapter with a tiny randomly initialised VisionEncoderDecoderModel (no downloads)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.optim import AdamW

from videogen.models.captioner import HFVisionCaptioner, generate_tokens
from videogen.modules.lr_schedule import WarmupCosine


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """A ViT encoder + BERT decoder (random weights) saved with MiniLM's tokenizer, like save_pretrained does."""
    from tests.captioner.vlm import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


def batch(n=2):
    return {"video": torch.rand(n, 3, 9, 48, 64) * 2 - 1, "caption": ["a red circle", "a blue square"][:n],
            "key": ["a", "b"][:n], "url": ["u", "u"][:n],
            "meta": [{"captions": {"long": "A small red circle moves to the left."},
                      "attributes": {"colour": "red", "shape": "circle", "direction": "left"}},
                     {"captions": {"long": "A large blue square moves up."}}][:n]}


def train(module, steps=8):
    opt = module.configure_optimizers()["optimizer"]
    losses = []
    for step in range(steps):
        loss = module.training_step(batch(), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_full_finetuning_learns_and_generates(tiny_vlm):
    from videogen.modules.captioner import CaptionerModule

    module = CaptionerModule(HFVisionCaptioner(str(tiny_vlm), num_frames=3),
                             optimizer=partial(AdamW, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.01),
                             lr_scheduler=partial(WarmupCosine, warmup=1))
    assert module.tokenizer_path == str(tiny_vlm)  # the model folder's own tokenizer
    memory = module.captioner.encode(batch()["video"])
    assert memory.shape[0] == 2 and memory.shape[1] == 3 * (1 + (32 // 8) ** 2)  # frames x (CLS + patches)
    losses = train(module, steps=25)
    assert losses[-1] < losses[0] * 0.5
    module.eval()
    prompts = [module.tokens.prompt(module.hparams.prompt)] * 2
    kw = dict(eos_id=module.tokens.eos, pad_id=module.tokens.pad, max_new_tokens=8)
    with torch.no_grad():
        memory = module.captioner.encode(batch()["video"])
        cached = generate_tokens(module.captioner, memory, prompts, **kw)
        plain = generate_tokens(module.captioner, memory, prompts, use_cache=False, **kw)
        beam = generate_tokens(module.captioner, memory, prompts, method="beam", num_beams=2, **kw)
    assert cached == plain and all(len(c) > 0 for c in cached) and len(beam) == 2


def test_lora_trains_only_adapters_and_exports(tiny_vlm, tmp_path):
    pytest.importorskip("peft", reason="LoRA needs the lora extra: pip install 'videogen[lora]'")
    from videogen.modules.captioner import CaptionerModule
    from videogen.pretrained import load_export, save_export

    captioner = HFVisionCaptioner(str(tiny_vlm), num_frames=2, lora_rank=4, lora_alpha=8)
    trainable = {n for n, p in captioner.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n == "time" for n in trainable)
    frozen = {n: p.detach().clone() for n, p in captioner.named_parameters() if not p.requires_grad}
    module = CaptionerModule(captioner, optimizer=partial(AdamW, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.01),
                             lr_scheduler=partial(WarmupCosine, warmup=1))
    losses = train(module, steps=6)
    assert losses[-1] < losses[0]
    assert all(torch.equal(frozen[n], p) for n, p in captioner.named_parameters() if n in frozen)
    folder = save_export(tmp_path / "export", captioner, module.export_stats())
    loaded = load_export(folder, expect=HFVisionCaptioner).module
    video = batch()["video"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(video), captioner.eval().encode(video))


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HFVisionCaptioner(str(tmp_path))
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vision-encoder-decoder"):
        HFVisionCaptioner(str(tmp_path))
