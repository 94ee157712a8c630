"""Experiment tracking through the real CLI: ``videogen fit`` with the shipped quickstart VAE config
(W&B offline + TensorBoard) records the resolved config, the training metrics (losses, throughput)
and validation videos in the offline W&B run, ready for ``wandb sync``."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).parents[1] / "configs" / "vae" / "quickstart.yaml"


def read_wandb_records(path: Path) -> list:
    """The records of an offline run's ``run-*.wandb`` transaction log, decoded with wandb's own protobuf
    schema. The file is a 7-byte ``:W&B`` header, then LevelDB's log format: 32 KiB blocks of chunks
    with a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    pos, block, records, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def items(record, kind: str) -> dict:
    entries = record.history.item if kind == "history" else record.config.update
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


def test_quickstart_config_logs_config_metrics_and_videos_to_wandb_offline(tmp_path, clip_shards):
    # a fresh `videogen fit` process, as users run it (W&B keeps process-wide run state), in tmp_path:
    # the config's relative runs/ paths land there; offline comes from the config itself
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_SILENT="true", OMP_NUM_THREADS="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "videogen"), "fit", "--config", str(CONFIG),
                           f"--data.init_args.train_shards={clip_shards}", f"--data.init_args.val_shards={clip_shards}",
                           "--data.init_args.loader.num_workers=0", "--data.init_args.loader.val_batches=1", "--trainer.max_steps=4",
                           "--trainer.val_check_interval=4", "--trainer.log_every_n_steps=2",
                           "--trainer.enable_progress_bar=false"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    root = tmp_path / "runs" / "vae" / "quickstart"
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline W&B run"
    records = read_wandb_records(next(runs[0].glob("run-*.wandb")))
    history = [items(r, "history") for r in records if r.WhichOneof("record_type") == "history"]
    logged = {k: v for row in history for k, v in row.items()}
    for key in ("train/loss", "train/psnr", "val/psnr", "throughput/clips_per_s", "throughput/megapixels_per_s",
                "throughput/tflops_per_s", "throughput/data_wait"):
        assert isinstance(logged.get(key), (int, float)), key
    # throughput every log_every_n_steps (2) steps, per bucket too
    steps = [row["trainer/global_step"] for row in history if "throughput/clips_per_s" in row]
    assert steps == [2, 4] and any(k.startswith("throughput/9x64x") for k in logged)
    videos = [row for row in history if "val/reconstruction/_type" in row]
    assert len(videos) == 1 and videos[0]["val/reconstruction/count"] == 4 and videos[0]["trainer/global_step"] == 4
    media = list((runs[0] / "files" / "media" / "videos" / "val").glob("reconstruction*.mp4"))
    assert len(media) == 4 and all(v.stat().st_size > 1000 for v in media)
    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update(items(r, "config"))
    run_config = config["config"]  # the resolved CLI config (LoggedConfig), beside the module's hparams
    assert run_config["model"]["class_path"] == "videogen.modules.vae.VAEModule"
    assert run_config["model"]["init_args"]["vae"]["init_args"]["latent_channels"] == 8
    assert run_config["trainer"]["max_steps"] == 4
    assert run_config["data"]["init_args"]["train_shards"] == str(clip_shards)
    assert config["kl_weight"] == 1e-6  # save_hyperparameters of the module
    # TensorBoard (the second logger) and config.yaml beside the logs as well
    assert list((root / "tb").rglob("events.out.tfevents.*")) and (root / "config.yaml").is_file()
