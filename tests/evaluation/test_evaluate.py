"""`videogen evaluate` end to end: a folder of real mp4s; a tiny DiT export; a run folder of checkpoints
written by a real Trainer run, in which the VideoEvaluation callback logged the metrics to its loggers."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.optim import AdamW

from conftest import clip_sample, tiny_export, write_tar
from eval_clips import moving_square, static_clip
from eval_models import tiny_clip, tiny_dino, torchscript_i3d
from videogen.callbacks.evaluation import VideoEvaluation
from videogen.cli import main
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.evaluation.report import mp4_bytes
from videogen.models.dit import DiT
from videogen.modules.dit import DiTModule
from videogen.pretrained import save_export

pytestmark = pytest.mark.slow  # the module's fixture trains a DiT for 6 steps (~3-7 s)

PROMPTS = ["A small red square moves to the right across the frame.", "a blue circle"]


def tiny_dit():
    return DiT(in_channels=4, hidden_size=32, depth=1, num_heads=2, text_dim=384)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Six real DiT steps on real shards: validation and the callback every 2 steps, a checkpoint every 2."""
    tmp = tmp_path_factory.mktemp("evalrun")
    shards = tmp / "shards"
    shards.mkdir()
    write_tar(shards / "shard-000000.tar", [clip_sample(f"k{i}", 48, 32, 9, seed=i) for i in range(6)])
    vae = tiny_export(tmp / "vae")
    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(vae), text_max_length=16, ema_decay=0.9, val_shape=(9, 32, 48),
                       val_steps=2, optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0))
    callback = VideoEvaluation(prompts=PROMPTS, every_n_validations=2, reference=str(shards), log_videos=1)
    csv, tb = CSVLogger(tmp / "logs", name="csv"), TensorBoardLogger(tmp / "logs", name="tb")
    trainer = Trainer(accelerator="cpu", max_steps=6, enable_progress_bar=False, enable_model_summary=False,
                      logger=[csv, tb], log_every_n_steps=1, val_check_interval=2, check_val_every_n_epoch=None,
                      limit_val_batches=1, num_sanity_val_steps=0,
                      callbacks=[ModelCheckpoint(dirpath=tmp / "ckpt", every_n_train_steps=2, save_last=True,
                                                 save_top_k=-1), callback])
    dm = VideoDataModule(str(shards), val_shards=str(shards), bucketer=Bucketer([Bucket(9, 32, 48)], batch_size=2),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=2, val_batches=1))
    trainer.fit(module, datamodule=dm)
    export = save_export(tmp / "export", module.sample_dit, module.export_stats())
    return {"tmp": tmp, "shards": shards, "vae": vae, "export": export, "callback": callback, "csv": csv, "tb": tb}


def test_callback_logs_the_metrics_every_n_validations(run):
    import csv as csvlib

    cb = run["callback"]
    assert cb.validations == 3  # steps 2, 4, 6; evaluated at the 2nd only
    rows = list(csvlib.DictReader(open(run["csv"].log_dir + "/metrics.csv")))
    logged = [r for r in rows if r.get("eval/num_videos")]
    assert [int(r["step"]) for r in logged] == [4]  # the global step of the 2nd validation
    row = logged[0]
    for name in ("temporal_flicker", "motion_smoothness", "dynamic_degree", "subject_consistency", "vae_fd",
                 "judge_colour"):
        assert row[f"eval/{name}"] != "" and np.isfinite(float(row[f"eval/{name}"])), name
    assert float(row["eval/num_videos"]) == 2 and cb.last["num_videos"] == 2
    seconds = [r for r in rows if r.get("eval/seconds")]
    assert len(seconds) == 1 and 0 < float(seconds[0]["eval/time_share"]) < 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run["tb"].log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "eval/grid" in events.Tags()["images"] and "eval/vae_fd" in events.Tags()["scalars"]


def test_evaluate_a_folder_of_mp4s(run, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    clips = {"moving": moving_square(), "still": static_clip(), "other": moving_square(speed=2, colour=(45, 95, 245))}
    for name, frames in clips.items():
        (videos / f"{name}.mp4").write_bytes(mp4_bytes(frames, 8))
    (videos / "moving.txt").write_text("A small red square moves to the right across the frame.")
    (videos / "broken.mp4").write_bytes(b"not a video")
    i3d = torchscript_i3d(tmp_path / "i3d.pt")
    out = tmp_path / "report"
    assert main(["evaluate", "--videos", str(videos), "--reference", str(run["shards"]), "--vae", str(run["vae"]),
                 "--i3d", str(i3d), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--shape", "9", "32", "48",
                 "--json", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed == metrics and metrics["num_videos"] == 3
    assert metrics["fvd"] > 0 and metrics["vae_fd"] > 0
    assert metrics["dynamic_degree"] == pytest.approx(2 / 3)
    assert metrics["judge_colour"] == 1.0 and metrics["judge_direction"] == 1.0  # only moving.mp4 has a prompt
    assert "clip_score" not in metrics  # no --clip
    report = json.loads((out / "report.json").read_text())
    assert [s["reason"] for s in report["skipped_inputs"]] == ["decode_error"]
    assert report["skipped_metrics"] == {"clip_score": "needs --clip DIR and videos with prompts"}
    assert (out / "grid.png").is_file() and len(list((out / "videos").glob("*.mp4"))) == 3
    # the report's own videos folder evaluates again to the same per-video numbers
    again = tmp_path / "again"
    assert main(["evaluate", "--videos", str(out / "videos"), "--metrics", "temporal_flicker,judge", "--out",
                 str(again), "--no-progress"]) == 0
    assert json.loads((again / "metrics.json").read_text())["judge_colour"] == 1.0


def test_evaluate_with_local_clip_and_image_encoder_folders(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(mp4_bytes(moving_square(), 8))
    (videos / "a.txt").write_text("a red square moves right")
    (videos / "b.mp4").write_bytes(mp4_bytes(static_clip(), 8))
    out = tmp_path / "report"
    assert main(["evaluate", "--videos", str(videos), "--clip", str(tiny_clip(tmp_path / "clip")), "--image-encoder",
                 str(tiny_dino(tmp_path / "dino")), "--metrics", "clip_score,consistency", "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"num_videos", "clip_score", "subject_consistency", "background_consistency"}
    rows = json.loads((out / "report.json").read_text())["videos"]
    assert "clip_score" in rows[0] and "clip_score" not in rows[1]  # b.mp4 has no prompt
    assert rows[1]["subject_consistency"] == pytest.approx(1.0, abs=1e-5)  # a still clip


def test_evaluate_samples_a_dit_export_with_a_seed_per_prompt(run, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS + ["a green triangle"]) + "\n")
    outs = []
    for batch in ("1", "3"):
        out = tmp_path / f"report{batch}"
        assert main(["evaluate", "--ckpt", str(run["export"]), "--prompts", str(prompts), "--reference",
                     str(run["shards"]), "--shape", "9", "32", "48", "--steps", "2", "--batch-size", batch,
                     "--metrics", "vae_fd,dynamic_degree,judge", "--out", str(out), "--no-progress",
                     "--cache-dir", str(tmp_path / "cache")]) == 0
        outs.append(json.loads((out / "metrics.json").read_text()))
        rows = [json.loads(r) for r in (out / "videos" / "samples.jsonl").read_text().splitlines()]
        assert [r["seed"] for r in rows] == [0, 1, 2] and [r["prompt"] for r in rows][:2] == PROMPTS
    assert all(o.pop("sample_seconds_per_video") > 0 for o in outs)
    # the same videos whatever the batch size (up to float rounding of batched matmuls)
    assert outs[0] == pytest.approx(outs[1], rel=1e-4)
    assert outs[0]["num_videos"] == 3 and set(outs[0]) >= {"vae_fd", "dynamic_degree", "judge_colour"}


def test_evaluate_a_run_folder_plots_every_metric_over_steps(run, tmp_path):
    out = tmp_path / "curve"
    assert main(["evaluate", "--ckpt", str(run["tmp"] / "ckpt"), "--reference", str(run["shards"]),
                 "--num-prompts", "2", "--shape", "9", "32", "48", "--steps", "2", "--out", str(out),
                 "--metrics", "vae_fd,temporal_flicker", "--no-progress", "--no-videos",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert [p["step"] for p in curve] == [2, 4, 6]  # last.ckpt repeats step 6 and is skipped
    assert all((out / f"step-{s:07d}" / "metrics.json").is_file() for s in (2, 4, 6))
    assert {p.name for p in (out / "plots").glob("*.png")} == {"vae_fd.png", "temporal_flicker.png",
                                                          "sample_seconds_per_video.png"}
    assert json.loads((out / "metrics.json").read_text())["step"] == 6


def test_bad_inputs_are_one_line_errors(run, tmp_path, capsys):
    assert main(["evaluate", "--videos", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(run["export"]), "--out", str(tmp_path / "r")]) == 2
    assert "--ckpt needs --prompts" in capsys.readouterr().err
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(mp4_bytes(moving_square(), 8))
    assert main(["evaluate", "--videos", str(tmp_path / "v"), "--metrics", "fvd", "--out", str(tmp_path / "r")]) == 2
    assert "--metrics fvd: needs --i3d FILE and --reference SHARDS" in capsys.readouterr().err
    assert main(["evaluate", "--videos", str(tmp_path / "v"), "--metrics", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "unknown" in capsys.readouterr().err


def test_a_seed_per_video_gives_each_prompt_the_video_it_gets_alone(run):
    from videogen.evaluation.generation import generate_videos, load_generator

    gen = load_generator(str(run["export"]))
    kw = {"num_frames": 9, "height": 32, "width": 48, "steps": 2, "progress": False}
    batched = generate_videos(gen, PROMPTS, seed=5, batch_size=2, **kw)
    alone = generate_videos(gen, PROMPTS[1:], seed=6, batch_size=1, **kw)  # prompt 1 has seed 5 + 1
    assert torch.allclose(batched[1], alone[0], atol=1e-4)
    assert not torch.allclose(batched[0], batched[1], atol=1e-2)
