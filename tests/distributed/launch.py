"""Helpers for the multi-process tests: real shards, a YAML config, ``videogen fit`` in a subprocess.

Lightning's launcher re-runs the ``videogen`` command once per extra rank (``strategy: ddp``,
``devices: 2`` on the CPU, gloo); under SLURM, srun starts the ranks instead. Every rank runs
``recorder.RankRecorder`` (this folder is put on ``PYTHONPATH``), so the tests compare what the
ranks did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
TESTS = HERE.parent
VIDEOGEN = str(Path(sys.executable).parent / "videogen")


def root_conftest():
    """tests/conftest.py by its path: ``import conftest`` may find another folder's conftest.py."""
    import importlib.util

    name = "videogen_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def write_shards(folder: Path, sizes: list[int], size: tuple[int, int] = (32, 32), frames: int = 9) -> dict[str, str]:
    """Shards of ``sizes`` samples (unequal on purpose) plus dataset.json; returns key -> shard name."""
    fixtures = root_conftest()
    clip_sample, write_tar = fixtures.clip_sample, fixtures.write_tar
    from videogen.data.manifest import DatasetManifest, scan_shard

    folder.mkdir(parents=True, exist_ok=True)
    owner, stats, k = {}, [], 0
    for s, n in enumerate(sizes):
        samples = []
        for i in range(n):
            samples.append(clip_sample(f"s{s}k{i}", *size, frames, seed=k))
            owner[f"s{s}k{i}"] = f"shard-{s:06d}.tar"
            k += 1
        stats.append(scan_shard(write_tar(folder / f"shard-{s:06d}.tar", samples)))
    DatasetManifest(shards=stats).save(folder)
    return owner


def tiny_vae_model() -> dict:
    return root_conftest().tiny_vae_model()


def tiny_dit_model(vae_export: str, **kw) -> dict:
    return {"class_path": "videogen.modules.dit.DiTModule",
            "init_args": {"dit": {"class_path": "videogen.models.dit.DiT",
                                  "init_args": {"in_channels": 4, "hidden_size": 32, "depth": 2, "num_heads": 2,
                                                "text_dim": 384}},
                          "vae": vae_export, "text_max_length": 16,
                          "optimizer": {"class_path": "torch.optim.AdamW",
                                        "init_args": {"lr": 1.0e-3, "betas": [0.9, 0.99], "weight_decay": 0.0}},
                          "lr_scheduler": {"class_path": "videogen.modules.lr_schedule.WarmupCosine",
                                           "init_args": {"warmup": 1}}, **kw}}


def data_section(shards: Path, batch_size: int = 1, bucketer: dict | None = None, clips: dict | None = None,
                 loader: dict | None = None, **kw) -> dict:
    bucketer = {"buckets": [{"num_frames": 9, "height": 32, "width": 32}], "batch_size": batch_size, **(bucketer or {})}
    return {"class_path": "videogen.data.VideoDataModule",
            "init_args": {"train_shards": str(shards), "bucketer": bucketer, "clips": clips or {},
                          "loader": {"num_workers": 0, "shuffle_buffer": 4, **(loader or {})}, **kw}}


def fit_config(path: Path, model: dict, data: dict, out: Path, *, devices: int | str = 2, num_nodes: int = 1,
               strategy="ddp", save_weights: bool = False, callbacks: list[dict] | None = None, **trainer) -> Path:
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": devices, "num_nodes": num_nodes, "strategy": strategy,
                       "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                       "enable_checkpointing": False, "default_root_dir": str(out / "root"),
                       "callbacks": [{"class_path": "recorder.RankRecorder",
                                      "init_args": {"out": str(out / "records"), "save_weights": save_weights}},
                                     *(callbacks or [])],
                       **trainer},
           "model": model, "data": data}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def env(**extra) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"))}
    e.update(PYTHONPATH=os.pathsep.join([str(HERE), str(TESTS.parent)]), OMP_NUM_THREADS="1", WANDB_MODE="offline",
             HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    e.pop("MASTER_PORT", None)
    e.update(extra)
    return e


def run_fit(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``videogen fit --config CONFIG`` in a fresh process; raises with its output when it fails."""
    proc = subprocess.run([VIDEOGEN, "fit", "--config", str(config), *args], env=env(), capture_output=True,
                          text=True, timeout=timeout, cwd=config.parent)
    if proc.returncode != 0:
        raise AssertionError(f"videogen fit failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def records(out: Path, run: int = 0) -> list[dict]:
    """Each rank's record, by rank."""
    found = sorted((out / "records").glob(f"rank*-run{run}.json"))
    return [json.loads(p.read_text()) for p in found]


def keys_by_epoch(record: dict) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for b in record["batches"]:
        out.setdefault(b["epoch"], []).extend(b["keys"])
    return out
