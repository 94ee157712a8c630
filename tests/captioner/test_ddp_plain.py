"""The captioner under plain DDP (no find_unused_parameters), with video dropout: two gloo ranks on the CPU."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
from launch import data_section, fit_config, records, run_fit  # noqa: E402


@pytest.mark.slow
def test_captioner_plain_ddp_with_video_dropout(tmp_path):
    """Every parameter is in every step's graph (the no-video embedding included), so plain DDP steps."""
    from data_recipes.synthetic import write_synthetic

    write_synthetic(tmp_path / "synthetic", num_samples=8, seed=0, val_fraction=0.0, shard_size=3)
    model = {"class_path": "videogen.modules.captioner.CaptionerModule",
             "init_args": {"captioner": {"class_path": "videogen.models.captioner.VideoCaptioner",
                                         "init_args": {"vocab_size": 30522, "dim": 32, "depth": 1, "heads": 2,
                                                       "max_length": 64, "channels": [8, 16], "num_frames": 4,
                                                       "grid": [2, 2]}},
                           "max_length": 64, "txt_prob": 0.5, "video_dropout": 0.5,
                           "lr_scheduler": {"class_path": "videogen.modules.lr_schedule.WarmupCosine",
                                            "init_args": {"warmup": 1}}}}
    buckets = [{"num_frames": 5, "height": 32, "width": 48}, {"num_frames": 5, "height": 48, "width": 32},
               {"num_frames": 5, "height": 32, "width": 32}]
    data = data_section(tmp_path / "synthetic" / "train", bucketer={"buckets": buckets}, clips={"frame_stride": 2})
    cfg = fit_config(tmp_path / "captioner.yaml", model, data, tmp_path, max_steps=3, strategy="ddp")
    run_fit(cfg)
    r0, r1 = records(tmp_path)
    assert r0["end_step"] == r1["end_step"] == 3
    assert r0["weights_at_end"] == r1["weights_at_end"]
