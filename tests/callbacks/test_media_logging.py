"""Media (videos, images, text tables) reach both TensorBoard and Weights & Biases (offline), the loggers
users run; a logger that fails is a warning, never an error."""

import logging

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from videogen.callbacks.media_logging import log_image, log_text_table, log_videos, side_by_side
from videogen.data.stages import to_uint8


def test_to_uint8_and_side_by_side():
    v = torch.linspace(-1, 1, 3 * 6 * 4 * 4).view(1, 3, 6, 4, 4)
    both = side_by_side(v, -v)
    assert both.shape == (1, 3, 6, 4, 8)
    u = to_uint8(both[0])
    assert u.shape == (6, 3, 4, 8) and u.dtype == torch.uint8 and u.min() == 0 and u.max() == 255


def test_videos_logged_to_tensorboard_and_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    tb = TensorBoardLogger(tmp_path, name="tb")
    wb = WandbLogger(project="videogen-test", save_dir=str(tmp_path), offline=True)
    trainer = Trainer(logger=[tb, wb], accelerator="cpu", enable_progress_bar=False)
    videos = [torch.rand(3, 5, 16, 24) * 2 - 1 for _ in range(2)]
    assert log_videos(trainer, "val/reconstruction", videos, step=3) == 2
    rows = [("a", "a red ball", "a red|ball"), ("b", "a cat", "a dog")]
    assert log_text_table(trainer, "val/captions", ("key", "generated", "reference"), rows, step=3) == 2
    assert log_image(trainer, "eval/grid", np.full((8, 12, 3), 128, np.uint8), step=3) == 2
    wb.experiment.finish()
    tb.experiment.flush()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((tmp_path / "tb").rglob("events.out.tfevents.*")).parent))
    acc.Reload()
    assert "val/reconstruction" in acc.Tags()["images"] and "eval/grid" in acc.Tags()["images"]
    text = acc.Tensors("val/captions/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text == ("| key | generated | reference |\n|---|---|---|\n| a | a red ball | a red/ball |\n"
                    "| b | a cat | a dog |")
    media = list(tmp_path.rglob("media/videos/val/reconstruction*"))
    assert len(media) == 2 and all(p.stat().st_size > 0 for p in media)
    assert list(tmp_path.rglob("media/table/val/captions*")) and list(tmp_path.rglob("media/images/eval/grid*"))


class _Broken(TensorBoardLogger):
    @property
    def experiment(self):
        raise RuntimeError("disk full")


def test_a_failing_logger_is_a_warning_and_others_still_log(tmp_path, caplog):
    ok = TensorBoardLogger(tmp_path, name="ok")
    trainer = Trainer(logger=[_Broken(tmp_path, name="broken"), ok, CSVLogger(tmp_path)], accelerator="cpu",
                      enable_progress_bar=False)
    with caplog.at_level(logging.WARNING, logger="videogen"):
        assert log_videos(trainer, "val/samples", [torch.zeros(3, 2, 4, 4)], step=1) == 1
    assert "could not log val/samples to _Broken: disk full" in caplog.text
