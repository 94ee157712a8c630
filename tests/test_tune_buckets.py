"""``videogen tune-buckets`` on a CPU with a tiny VAE config: batch sizes per bucket from measured
peaks (the CPU proxy), the largest that fits the budget; a bucket too big for one clip is left out;
the written fragment merges after the original config; bad inputs give clear errors."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "distributed"))
from launch import tiny_vae_model, write_shards  # noqa: E402
from videogen.cli import lightning_cli, main  # noqa: E402
from videogen.data.bucket_tuning import step_peak_bytes  # noqa: E402

MIB = 2**20
BUCKETS = [{"num_frames": 9, "height": 32, "width": 48}, {"num_frames": 9, "height": 64, "width": 64}]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tune")
    write_shards(tmp / "shards", [2])
    cfg = {"trainer": {"accelerator": "cpu", "precision": "32-true"}, "model": tiny_vae_model(),
           "data": {"class_path": "videogen.data.VideoDataModule",
                    "init_args": {"train_shards": str(tmp / "shards"), "bucketer": {"buckets": BUCKETS},
                                  "loader": {"num_workers": 0}}}}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_batch_sizes_are_the_largest_that_fit_and_merge_into_the_config(config, tmp_path):
    budget = 8 * MIB
    out = tmp_path / "tuned.yaml"
    assert main(["tune-buckets", "--config", str(config), "--memory-gb", str(budget / 2**30), "--max-batch", "16",
                 "--out", str(out)]) == 0
    text = out.read_text()
    tuned = yaml.safe_load(text)["data"]["init_args"]["bucketer"]["buckets"]
    assert [(b["height"], b["width"]) for b in tuned] == [(32, 48)]  # 64x64 does not fit one clip in 8 MiB
    assert "bucket 9x64x64: left out" in text and "CPU proxy" in text
    cli = lightning_cli(["--config", str(config), "--trainer.logger=false"], run=False)
    module, bucket = cli.model, cli.datamodule.bucketer.buckets[0]
    best = tuned[0]["batch_size"]
    peaks = {b: step_peak_bytes(module, bucket, b, "cpu", "32-true") for b in (1, 2, best, best + 1)}
    assert peaks[best] <= budget < peaks[best + 1]  # the largest batch within the budget
    assert peaks[2] - peaks[1] > 0 and peaks[1] > 0
    big = step_peak_bytes(module, cli.datamodule.bucketer.buckets[1], 1, "cpu", "32-true")
    assert big > budget  # why 64x64 was left out
    # the fragment merges after the original: the tuned table replaces the original one
    merged = lightning_cli(["--config", str(config), "--config", str(out), "--trainer.logger=false"], run=False)
    table = merged.datamodule.bucketer.buckets
    assert [(b.name, b.batch_size) for b in table] == [("9x32x48", best)]


def test_cpu_proxy_grows_by_the_same_step_per_clip(config):
    cli = lightning_cli(["--config", str(config), "--trainer.logger=false"], run=False)
    bucket = cli.datamodule.bucketer.buckets[0]
    p1, p2, p4 = (step_peak_bytes(cli.model, bucket, b, "cpu", "32-true") for b in (1, 2, 4))
    assert p4 - p2 == pytest.approx(2 * (p2 - p1), rel=0.02)  # activations and batch: linear in clips


def test_bad_inputs_are_refused_with_the_reason(config, tmp_path):
    with pytest.raises(SystemExit, match="no bucket fits"):
        main(["tune-buckets", "--config", str(config), "--memory-gb", str(1 / 1024), "--out", str(tmp_path / "x.yaml")])
    with pytest.raises(SystemExit, match="give the memory budget"):
        main(["tune-buckets", "--config", str(config)])
    with pytest.raises(SystemExit, match="no such file"):
        main(["tune-buckets", "--config", str(tmp_path / "missing.yaml"), "--memory-gb", "1"])
    packing = yaml.safe_load(config.read_text())
    packing["data"]["init_args"]["bucketer"] = {"packing": True, "token_budget": 4096}
    path = tmp_path / "packing.yaml"
    path.write_text(yaml.safe_dump(packing))
    with pytest.raises(SystemExit, match="no bucket table to tune"):
        main(["tune-buckets", "--config", str(path), "--memory-gb", "1"])
