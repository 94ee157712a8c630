"""HangWatchdog through a real Trainer: a step that hangs gets every thread's stack dumped (with the
hanging frame in it); a run whose steps finish in time dumps nothing."""

import time
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from cli_fixtures import TinyVideoModel
from videogen.callbacks.watchdog import HangWatchdog
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule


class HangsAtStep2(TinyVideoModel):
    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            time.sleep(1.6)  # stands in for a collective that never returns
        return super().training_step(batch, batch_idx)


SLEEP_LINE = next(n for n, line in enumerate(Path(__file__).read_text().splitlines(), 1) if "time.sleep(1.6)" in line)


def fit(tmp_path, shards, module, watchdog):
    dm = VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 32)], batch_size=2),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=0))
    Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[watchdog]).fit(module, datamodule=dm)


def test_a_hanging_step_dumps_the_stacks(tmp_path, clip_shards):
    watchdog = HangWatchdog(timeout=0.5, first_timeout=20)
    fit(tmp_path, clip_shards, HangsAtStep2(), watchdog)
    assert watchdog.path == tmp_path / "watchdog" / "watchdog-rank0.txt"
    text = watchdog.path.read_text()
    dumps = text.split("Timeout (0:00:00.500000)!")[1:]
    # each dump names the hanging frame; on a loaded machine the steps around the hang may outlast 0.5 s too and
    # add dumps of their own, so only the dumps taken in the sleep are counted: every 0.5 s of its 1.6 s
    hanging = [d for d in dumps if f'test_watchdog.py", line {SLEEP_LINE} in training_step' in d]
    assert 2 <= len(hanging) <= 4, text
    assert "(most recent call first)" in text


def test_steps_in_time_dump_nothing(tmp_path, clip_shards):
    watchdog = HangWatchdog(timeout=20, dirpath=str(tmp_path / "dumps"))
    fit(tmp_path, clip_shards, TinyVideoModel(), watchdog)
    lines = (tmp_path / "dumps" / "watchdog-rank0.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("# rank 0")


def test_bad_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout must be > 0"):
        HangWatchdog(timeout=0)
