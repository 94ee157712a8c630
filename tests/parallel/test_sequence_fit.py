"""The acceptance run of sequence parallelism: ``videogen fit --config configs/dit/quickstart.yaml --config
configs/trainer/sequence_parallel.yaml --trainer.devices=2 --trainer.accelerator=cpu`` (two gloo
processes, one clip's tokens split over both) logs the same per-step ``train/loss`` as the same command
on one process, and ends with the same weights, validation loss and export. Real shards from
``videogen make-synthetic``, a tiny VAE export of the quickstart's latent width, the real MiniLM text
encoder; the quickstart config as shipped but for the data paths, batch size, step count, a cheap
validation at the last step (which samples its prompts under sequence parallelism) and fp32 (the quickstart
trains in bf16-mixed; the runs are compared to 1e-4)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
from launch import VIDEOGEN, env  # noqa: E402

REPO = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


def _vae_export(folder: Path) -> Path:
    from videogen.models.vae import VideoAutoencoder
    from videogen.pretrained import save_export

    torch.manual_seed(0)
    vae = VideoAutoencoder(latent_channels=8, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    stats = {"latent_channels": 8, "latent_mean": [0.0] * 8, "latent_std": [1.0] * 8, "temporal_compression": 4,
             "spatial_compression": 4}
    return save_export(folder, vae, stats)


def _fit(cwd: Path, *extra: str) -> tuple[list[tuple[int, float]], dict, str]:
    cwd.mkdir()
    args = [VIDEOGEN, "fit", "--config", str(REPO / "configs/dit/quickstart.yaml"), *extra,
            "--model.init_args.vae=../vae", "--data.init_args.train_shards=../syn/train",
            "--data.init_args.val_shards=../syn/val", "--data.init_args.bucketer.batch_size=2", "--trainer.max_steps=10",
            "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=10", "--trainer.limit_val_batches=1",
            "--model.init_args.val_steps=2", "--model.init_args.val_shape=[5, 32, 32]",
            "--trainer.enable_progress_bar=false", "--trainer.precision=32",
            '--trainer.logger={"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "csv"}}']
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    rows = list(csv.DictReader((cwd / "csv/lightning_logs/version_0/metrics.csv").open()))
    losses = [(int(r["step"]), float(r["train/loss"])) for r in rows if r.get("train/loss")]
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    from safetensors.torch import load_file

    export = load_file(str(cwd / "runs/dit/quickstart/export/model.safetensors"))
    return losses, {"val": val, "export": export}, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The shard set, the VAE export and the one-process run every sequence-parallel run is compared with."""
    tmp = tmp_path_factory.mktemp("sp_fit")
    made = subprocess.run([VIDEOGEN, "make-synthetic", "--out", str(tmp / "syn"), "--num-samples", "16",
                           "--val-fraction", "0.25", "--shard-size", "4", "--seed", "0", "--no-progress"],
                          env=env(), capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    _vae_export(tmp / "vae")
    return tmp, _fit(tmp / "one")


def _assert_same_run(one, two, log: str) -> None:
    (one_losses, one_end, _), (two_losses, two_end) = one, two
    # both ranks ran the sequence-parallel DiT and its EMA copy, one data-parallel group
    for rank in (0, 1):
        assert f"global rank {rank} = data rank 0 of 1, sequence rank {rank} of 2 (2 DiTs)" in log
    assert [s for s, _ in one_losses] == [s for s, _ in two_losses] == list(range(10))
    for (_, a), (_, b) in zip(one_losses, two_losses):
        assert abs(a - b) <= 1e-4 * abs(a), (one_losses, two_losses)
    assert len(set(round(x, 4) for _, x in one_losses)) > 5  # the loss moves: the weights are being trained
    assert len(one_end["val"]) == len(two_end["val"]) == 1
    assert two_end["val"][0] == pytest.approx(one_end["val"][0], rel=1e-4)
    assert sorted(one_end["export"]) == sorted(two_end["export"])
    for k, w in one_end["export"].items():
        assert torch.allclose(w, two_end["export"][k], rtol=1e-4, atol=1e-6), k


def test_sequence_parallel_fit_logs_the_one_process_losses(one_process):
    tmp, one = one_process
    losses, end, log = _fit(tmp / "ddp", "--config", str(REPO / "configs/trainer/sequence_parallel.yaml"),
                            "--trainer.devices=2", "--trainer.accelerator=cpu")
    _assert_same_run(one, (losses, end), log)


def test_sequence_parallel_under_fsdp_logs_the_one_process_losses(one_process):
    """SequenceParallelFSDPStrategy with fsdp_dit.yaml's wrapping (one unit per block and per DiT), fp32, on
    the CPU variant of tests/distributed/cpu_sp_fsdp.py: the weights are sharded over both ranks."""
    tmp, one = one_process
    fragment = tmp / "sp_fsdp.yaml"
    fragment.write_text(yaml.safe_dump({"trainer": {"strategy": {
        "class_path": "cpu_sp_fsdp.CPUSequenceParallelFSDPStrategy",
        "init_args": {"sequence_parallel_size": 2, "sharding_strategy": "FULL_SHARD", "state_dict_type": "full",
                      "auto_wrap_policy": ["videogen.models.dit.blocks.DiTBlock", "videogen.models.dit.model.DiT"]}}}}))
    losses, end, log = _fit(tmp / "fsdp", "--config", str(fragment), "--trainer.devices=2", "--trainer.accelerator=cpu")
    _assert_same_run(one, (losses, end), log)


# tokens of the DiT's 4x8x8 pixels (VAE 4x4x4 x patch 1x2x2): 288-token clips, 2 per pack
PACKED = ["--data.init_args.bucketer.packing=true", "--data.init_args.bucketer.token_budget=600",
          "--data.init_args.bucketer.max_area=6144", "--data.init_args.bucketer.max_frames=9"]


def test_sequence_parallel_fit_with_packed_batches_logs_the_one_process_losses(one_process):
    tmp, _ = one_process
    one = _fit(tmp / "packed-one", *PACKED)
    losses, end, log = _fit(tmp / "packed-ddp", "--config", str(REPO / "configs/trainer/sequence_parallel.yaml"),
                            "--trainer.devices=2", "--trainer.accelerator=cpu", *PACKED)
    assert "train/loss_bucket/packed" in (tmp / "packed-one/csv/lightning_logs/version_0/metrics.csv").read_text()
    _assert_same_run(one, (losses, end), log)
