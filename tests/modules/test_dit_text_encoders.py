"""A DiT trained 5 steps with a tiny T5 (encoder-only) and a tiny CLIP text encoder saved locally, then
`videogen sample` from its export: the text encoder travels by its folder and loads the same way."""

from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch.optim import AdamW

from conftest import clip_sample, tiny_export, write_tar
from models.pretrained_parts import tiny_clip, tiny_t5
from videogen.callbacks.export import StageExport
from videogen.cli import main
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.data.decode import PyAVDecoder
from videogen.models.dit import DiT
from videogen.modules.dit import DiTModule


@pytest.mark.parametrize("which", ["t5", "clip"])
def test_fit_five_steps_then_sample(which, tmp_path):
    folder = (tiny_t5 if which == "t5" else tiny_clip)(tmp_path / which)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "shard-000000.tar", [clip_sample(f"k{i}", 48, 32, 9, seed=i) for i in range(4)])
    torch.manual_seed(0)
    module = DiTModule(DiT(in_channels=4, hidden_size=32, depth=1, num_heads=2, text_dim=32),
                       vae=str(tiny_export(tmp_path / "vae")), text_encoder=str(folder), text_max_length=8,
                       optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0))
    trainer = Trainer(accelerator="cpu", max_steps=5, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(tmp_path), limit_val_batches=0,
                      callbacks=[StageExport(str(tmp_path / "export"))])
    trainer.fit(module, datamodule=VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 48)], batch_size=2),
                                                   loader=LoaderOptions(num_workers=0, shuffle_buffer=2)))
    assert trainer.global_step == 5 and torch.isfinite(trainer.logged_metrics["train/loss"])
    assert type(module.text_encoder.encoder).__name__ == ("T5EncoderModel" if which == "t5" else "CLIPTextModel")
    out = tmp_path / "out.mp4"
    assert main(["sample", "--ckpt", str(tmp_path / "export"), "--prompt", "a red square moving left", "--out",
                 str(out), "--num-frames", "9", "--height", "32", "--width", "48", "--steps", "2"]) == 0
    info = PyAVDecoder().probe(out.read_bytes())
    assert (info.width, info.height, info.num_frames) == (48, 32, 9)
