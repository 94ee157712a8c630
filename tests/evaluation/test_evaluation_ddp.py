"""VideoEvaluation under two real DDP processes (gloo, CPU, `videogen fit`): each rank samples its share
of the prompts, rank 0 logs the metrics of all of them, and the run ends (the collectives line up
with an uneven number of prompts)."""

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))
from launch import data_section, fit_config, records, run_fit, tiny_dit_model, write_shards  # noqa: E402

pytestmark = pytest.mark.slow


def test_two_ranks_share_the_prompts_and_rank_zero_logs_every_video(tmp_path):
    from conftest import tiny_export

    write_shards(tmp_path / "shards", [3, 3])
    vae = tiny_export(tmp_path / "vae")
    model = tiny_dit_model(str(vae), ema_decay=None, val_shape=[9, 32, 32], val_steps=2)
    prompts = ["a red square moves left", "a blue circle moves up", "a white triangle"]  # 3 prompts on 2 ranks
    callback = {"class_path": "videogen.callbacks.evaluation.VideoEvaluation",
                "init_args": {"prompts": prompts, "reference": str(tmp_path / "shards"), "log_videos": 0,
                              "metrics": ["vae_fd", "temporal_flicker", "dynamic_degree", "judge"]}}
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "logs"),
                                                                                 "name": "csv"}}
    cfg = fit_config(tmp_path / "dit.yaml", model, data_section(tmp_path / "shards", val_shards=str(tmp_path / "shards"),
                                                                loader={"val_batches": 1}),
                     tmp_path, max_steps=2, callbacks=[callback], logger=logger, val_check_interval=2,
                     check_val_every_n_epoch=None, limit_val_batches=1, num_sanity_val_steps=0, log_every_n_steps=1)
    run_fit(cfg)
    r0, r1 = records(tmp_path)
    assert r0["end_step"] == r1["end_step"] == 2
    rows = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    logged = [r for r in rows if r.get("eval/num_videos")]
    assert len(logged) == 1 and float(logged[0]["eval/num_videos"]) == 3
    for name in ("vae_fd", "temporal_flicker", "dynamic_degree", "judge_colour"):
        assert logged[0][f"eval/{name}"] != "", name
    assert any(r.get("eval/time_share") for r in rows)
