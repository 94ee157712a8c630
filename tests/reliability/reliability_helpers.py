"""Shared pieces of the reliability tests: tiny real shards, stage configs for `videogen fit`, a child
process running the real CLI, and a callback recording per-step losses (and stopping at a step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Callback

HERE = Path(__file__).parent
TESTS = HERE.parent
ROOT = TESTS.parent
CHILD = HERE / "fit_child.py"


def _root_conftest():
    """tests/conftest.py by path: `from conftest import` finds whichever conftest pytest loaded last."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("videogen_tests_root_conftest", TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conftest = _root_conftest()
clip_sample, make_mp4, make_png, write_tar = (_conftest.clip_sample, _conftest.make_mp4, _conftest.make_png,
                                              _conftest.write_tar)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", WANDB_MODE="offline",
               HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(HERE), str(TESTS), str(ROOT)]))
    env.update(extra)
    return env


def make_shards(folder: Path, n: int = 6, shards: int = 2) -> Path:
    """``shards`` shards of ``n`` real 9-frame clips (64x64 and 96x64) with a manifest."""
    from videogen.data.manifest import DatasetManifest, scan_shard

    folder.mkdir(parents=True, exist_ok=True)
    stats = []
    for s in range(shards):
        samples = [clip_sample(f"s{s}k{i}", 96 if i % 2 else 64, 64, 9, seed=s * 10 + i) for i in range(n)]
        stats.append(scan_shard(write_tar(folder / f"shard-{s:06d}.tar", samples)))
    DatasetManifest(shards=stats).save(folder)
    return folder


def tiny_vae_model() -> dict:
    return _conftest.tiny_vae_model(ema_decay=0.9)


def tiny_dit_model(vae_export: Path) -> dict:
    return {"class_path": "videogen.modules.dit.DiTModule",
            "init_args": {"dit": {"class_path": "videogen.models.dit.DiT",
                                  "init_args": {"in_channels": 4, "hidden_size": 32, "depth": 1, "num_heads": 2,
                                                "text_dim": 384, "frame_conditioning": True}},
                          "vae": str(vae_export), "text_max_length": 16, "cond_prob": 0.5, "ema_decay": 0.9,
                          "optimizer": {"class_path": "torch.optim.AdamW",
                                        "init_args": {"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.0}},
                          "lr_scheduler": {"class_path": "videogen.modules.lr_schedule.WarmupCosine",
                                           "init_args": {"warmup": 1}}}}


def fit_config(path: Path, run: Path, shards: Path, model: dict, max_steps: int, every: int | None = None,
               record: Path | None = None, kill_at: int | None = None, **data) -> Path:
    callbacks = []
    if every:
        callbacks.append({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                          "init_args": {"dirpath": str(run / "ckpt"), "every_n_train_steps": every, "save_last": True}})
    if record:
        callbacks.append({"class_path": "reliability_helpers.StepRecorder", "init_args": {"record_to": str(record),
                                                                             "stop_at": kill_at}})
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": max_steps, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0,
                    "num_sanity_val_steps": 0, "default_root_dir": str(run), "callbacks": callbacks},
        "model": model,
        "data": {"class_path": "videogen.data.VideoDataModule",
                 "init_args": {"train_shards": str(shards), "loader": {"num_workers": 0, "shuffle_buffer": 4},
                               "bucketer": {"batch_size": 2, "buckets": [{"num_frames": 9, "height": 32, "width": 48},
                                                                         {"num_frames": 9, "height": 32, "width": 32}]},
                               **data}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_fit(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen([sys.executable, str(CHILD), "fit", *args], stdout=out, stderr=subprocess.STDOUT,
                            env=child_env(**env), cwd=str(ROOT))


def run_fit(args: list[str], log: Path, timeout: float = 240, **env: str) -> int:
    proc = start_fit(args, log, **env)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Wait until ``path`` exists (the child reached the point to kill it at)."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child ended (status {proc.returncode}) before {path.name}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path.name}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def kill_mid_save(tmp_path: Path, run: Path, shards: Path, max_steps: int) -> tuple[Path, Path]:
    """Train the tiny VAE with a checkpoint every step and SIGKILL it half-way through writing the
    second ``last.ckpt`` (step 1's is complete by then): ``(checkpoint folder, marker)``, the marker
    holding the byte count the interrupted write was heading for."""
    import signal

    cfg = fit_config(tmp_path / "c.yaml", run, shards, tiny_vae_model(), max_steps, every=1)
    marker = tmp_path / "saving"
    proc = start_fit(["--config", str(cfg)], tmp_path / "log", VG_SLOW_SAVE=f"last.ckpt.:{marker}",
                     VG_SLOW_SAVE_SKIP="1")
    wait_for(marker, proc, tmp_path / "log")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    return run / "ckpt", marker


def read_record(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


class StepRecorder(Callback):
    """Appends ``{"step", "loss"}`` after every training batch; with ``stop_at`` it writes
    ``<record_to>.stopped`` and waits (to be SIGKILLed) inside the optimizer step that follows
    ``stop_at`` finished steps, i.e. mid-step: forward and backward done, weights not yet updated."""

    def __init__(self, record_to: str, stop_at: int | None = None):
        self.record_to, self.stop_at = record_to, stop_at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        with open(self.record_to, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "loss": None if loss is None else float(loss)}) + "\n")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.stop_at is not None and trainer.global_step == self.stop_at:
            Path(self.record_to + ".stopped").write_text(str(trainer.global_step))
            time.sleep(600)


def tiny_captioner_model() -> dict:
    return {"class_path": "videogen.modules.captioner.CaptionerModule",
            "init_args": {"captioner": {"class_path": "videogen.models.captioner.VideoCaptioner",
                                        "init_args": {"vocab_size": 30522, "dim": 32, "depth": 1, "heads": 2,
                                                      "max_length": 64, "channels": [8, 16], "num_frames": 4,
                                                      "grid": [2, 2]}},
                          "caption_key": "txt", "frame_size": 32, "max_length": 32, "flip_prob": 0.5,
                          "flip_swaps": {"left": "right"},
                          "optimizer": {"class_path": "torch.optim.AdamW",
                                        "init_args": {"lr": 1e-3, "betas": [0.9, 0.98], "weight_decay": 0.01}},
                          "lr_scheduler": {"class_path": "videogen.modules.lr_schedule.WarmupCosine",
                                           "init_args": {"warmup": 1}}}}
