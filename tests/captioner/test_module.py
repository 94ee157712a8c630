"""CaptionerModule in a real Lightning Trainer on real shards; export, checkpoint, prompt upsampling."""

from __future__ import annotations

import json
import re
from functools import partial

import pytest
import torch

from videogen.modules.lr_schedule import WarmupCosine


def fit(synthetic_set, root, **module_kw):
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from videogen.callbacks.export import StageExport
    from videogen.data import Bucket, Bucketer, LoaderOptions, StreamOptions, VideoDataModule
    from videogen.models.captioner import captioner_tiny
    from videogen.modules.captioner import CaptionerModule

    torch.manual_seed(0)
    module = CaptionerModule(captioner_tiny(), lr_scheduler=partial(WarmupCosine, warmup=1), val_max_new_tokens=12,
                             val_log_captions=2, flip_prob=0.5, flip_swaps={"left": "right", "right": "left"}, **module_kw)

    data = VideoDataModule(str(synthetic_set / "train"), str(synthetic_set / "val"),
                           bucketer=Bucketer([Bucket(5, 32, 48), Bucket(5, 48, 32), Bucket(5, 32, 32)], batch_size=2),
                           clips=StreamOptions(frame_stride=2), loader=LoaderOptions(num_workers=0, val_batches=1))
    trainer = Trainer(accelerator="cpu", max_steps=4, val_check_interval=4, check_val_every_n_epoch=None,
                      limit_val_batches=1, num_sanity_val_steps=0, enable_progress_bar=False, log_every_n_steps=1,
                      default_root_dir=root, logger=TensorBoardLogger(root, name="tb"),
                      callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True), StageExport(str(root / "export"))])
    trainer.fit(module, datamodule=data)
    return trainer, module


def test_fit_logs_metrics_exports_and_recaptions_from_ckpt(synthetic_set, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from videogen.pipelines.captioning import load_captioner
    from videogen.pipelines.recaption import recaption
    from videogen.models.captioner import VideoCaptioner

    trainer, module = fit(synthetic_set, tmp_path, txt_prob=0.5, video_dropout=0.5,
                          vocab_from=str(synthetic_set / "train"))
    assert module.tokens.token_map is not None and 50 < module.tokens.vocab_size < 200
    metrics = trainer.callback_metrics
    for name in ("train/loss", "val/loss", "val/token_acc", "val/bleu4", "val/attr_colour", "val/attr_shape"):
        assert name in metrics, name
    assert 0.0 <= float(metrics["val/bleu4"]) <= 1.0
    events = EventAccumulator(str(next((tmp_path / "tb").rglob("events.*")).parent), size_guidance={"tensors": 0})
    events.Reload()
    assert any("val/captions" in t for t in events.Tags()["tensors"])  # the generated captions table
    export, tokens = load_captioner(tmp_path / "export")
    assert isinstance(export.module, VideoCaptioner) and export.stats["stage"] == "captioner"
    assert export.stats["text_only"] and export.stats["tokenizer"] == module.tokenizer_path
    assert tokens.token_map == module.tokens.token_map  # the export carries the output vocabulary
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    from_ckpt, _ = load_captioner(ckpt)
    for (k, a), (_, b) in zip(export.module.state_dict().items(), from_ckpt.module.state_dict().items()):
        assert torch.equal(a, b), k
    out = tmp_path / "recaptioned"
    summary = recaption(str(ckpt), str(synthetic_set / "val"), out, max_new_tokens=6, progress=False)
    assert summary["captions"] == 3 and summary["manifest"]


def test_missing_captions_are_counted_not_trained(synthetic_set):
    from videogen.models.captioner import captioner_tiny
    from videogen.modules.captioner import CaptionerModule

    module = CaptionerModule(captioner_tiny(), caption_key="nonexistent")
    batch = {"video": torch.zeros(2, 3, 5, 32, 32), "caption": ["a", "b"], "key": ["k1", "k2"], "url": ["s", "s"],
             "meta": [{"captions": {"long": "x"}}, {}]}
    loss = module.training_step(batch, 0)  # every weight still gets a (zero) gradient: no rank skips a step
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None for p in module.captioner.parameters())
    assert module.skips.counts["missing_caption"] == 2
    with pytest.raises(ValueError, match="vocab_size"):
        from videogen.models.captioner import VideoCaptioner

        CaptionerModule(VideoCaptioner(vocab_size=100))
    with pytest.raises(ValueError, match="txt_prob"):
        CaptionerModule(captioner_tiny(), txt_prob=1.5)


def test_upsample_prompt_with_a_text_only_captioner(captioner_export, tmp_path):
    from videogen.pipelines.captioning import upsample_prompt
    from videogen.models.captioner import captioner_tiny
    from videogen.modules.captioner import CaptionerModule
    from videogen.pretrained import save_export

    one = upsample_prompt("a red circle", captioner=str(captioner_export), max_new_tokens=10)
    assert isinstance(one, str) and one
    many = upsample_prompt(["a red circle", "a blue square"], captioner=str(captioner_export), max_new_tokens=10)
    assert many[0] == one and len(many) == 2
    plain = CaptionerModule(captioner_tiny())  # trained without txt prompts: refused, with the reason
    folder = save_export(tmp_path / "plain", plain.captioner, plain.export_stats())
    with pytest.raises(ValueError, match="without a video"):
        upsample_prompt("a red circle", captioner=str(folder))
    with pytest.raises(ValueError, match="either captioner"):
        upsample_prompt("a red circle")


def test_upsample_prompt_with_a_causal_lm(tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from videogen.pipelines.captioning import upsample_prompt
    from videogen.models.text import default_text_encoder_path

    tok = AutoTokenizer.from_pretrained(default_text_encoder_path(), local_files_only=True)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=128))
    word = tok.convert_tokens_to_ids("bright")
    assert word != tok.unk_token_id
    with torch.no_grad():  # an LM that always says "bright": the final norm outputs the word's (tied) embedding
        lm.transformer.wte.weight[word] *= 10
        lm.transformer.ln_f.weight.zero_()
        lm.transformer.ln_f.bias.copy_(lm.transformer.wte.weight[word])
    lm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    # the continuation only (not the instruction echoed back), its first line
    out = upsample_prompt(["a red circle", "a cat"], causal_lm=str(tmp_path), max_new_tokens=3)
    assert out == ["bright bright bright"] * 2


def test_upsample_with_picks_captioner_or_causal_lm(captioner_export, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from videogen.pipelines.captioning import upsample_prompt, upsample_with
    from videogen.models.text import default_text_encoder_path

    assert upsample_with(captioner_export, ["a red circle"], max_new_tokens=6) == upsample_prompt(
        ["a red circle"], captioner=str(captioner_export), max_new_tokens=6)
    lm = tmp_path / "lm"
    tok = AutoTokenizer.from_pretrained(default_text_encoder_path(), local_files_only=True)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=64)).save_pretrained(lm)
    tok.save_pretrained(lm)
    assert len(upsample_with(lm, ["a red circle"], max_new_tokens=4)) == 1
    with pytest.raises(FileNotFoundError, match="no such captioner"):
        upsample_with(tmp_path / "missing", ["a red circle"])


def test_captioner_on_vae_latents(synthetic_set, tmp_path):
    """With vae: the captioner reads the frozen VAE's normalised latents; recaption loads the same VAE."""
    from tests.test_configs import make_vae_export
    from videogen.pipelines.recaption import recaption
    from videogen.models.captioner import VideoCaptioner
    from videogen.modules.captioner import CaptionerModule
    from videogen.pretrained import save_export

    vae = make_vae_export(tmp_path / "vae", 4)
    with pytest.raises(ValueError, match="in_channels"):
        CaptionerModule(VideoCaptioner(dim=32, depth=1, heads=2, channels=(8,), num_frames=3, grid=(2, 2)), vae=str(vae))
    torch.manual_seed(0)
    module = CaptionerModule(VideoCaptioner(dim=32, depth=1, heads=2, max_length=64, in_channels=4, channels=(8,),
                                            num_frames=3, grid=(2, 2)), vae=str(vae))
    batch = {"video": torch.rand(2, 3, 5, 32, 48) * 2 - 1, "caption": ["a", "b"], "key": ["k1", "k2"],
             "url": ["s", "s"], "meta": [{"captions": {"long": "A red circle moves up."}}] * 2}
    latents = module.visual_input(batch["video"])
    assert latents.shape == (2, 4, 3, 8, 12)  # 2x4x4 compression
    loss = module.training_step(batch, 0)
    loss.backward()
    assert module.captioner.encoder.cnn[0].weight.grad is not None
    stats = module.export_stats()
    assert stats["vae"]["weights_sha256"]
    folder = save_export(tmp_path / "export", module.captioner, stats)
    summary = recaption(str(folder), str(synthetic_set / "val"), tmp_path / "out", max_new_tokens=4, progress=False)
    assert summary["captions"] == 3
    was = stats["vae"]["weights_sha256"][:12]
    torch.manual_seed(1)
    make_vae_export(vae, 4)  # the VAE folder now holds other weights: the captioner refuses it
    now = json.loads((vae / "manifest.json").read_text())["weights_sha256"][:12]
    with pytest.raises(ValueError, match=re.escape(
            f"the captioner at {folder} was trained with the VAE at {vae} (weights sha256 {was}), but this run uses "
            f"the VAE at {vae} ({now}): restore that VAE, or train the captioner again")):
        recaption(str(folder), str(synthetic_set / "val"), tmp_path / "out2", max_new_tokens=4, progress=False)
