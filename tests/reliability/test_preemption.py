"""SIGTERM (``docker stop``, ``scancel``, a time limit) while `videogen fit` trains real steps (no
sleep): the checkpoint is saved at the next batch boundary as ``hpc_ckpt_1.ckpt``, the run exits with
143, and ``--ckpt_path=hpc`` resumes it to the same per-step losses as an uninterrupted run. Older
HPC checkpoints are pruned; a requeued SLURM job resumes from the newest one whatever ckpt_path says."""

import os
import signal
import time

import pytest
import torch

from reliability_helpers import fit_config, make_shards, read_record, run_fit, start_fit, tiny_vae_model

STEPS = 40


@pytest.mark.slow
def test_sigterm_saves_at_a_batch_boundary_and_the_run_resumes_from_it(tmp_path):
    shards = make_shards(tmp_path / "shards")
    ref = fit_config(tmp_path / "ref.yaml", tmp_path / "ref", shards, tiny_vae_model(), STEPS,
                     record=tmp_path / "ref.jsonl")
    assert run_fit(["--config", str(ref)], tmp_path / "ref.log") == 0, (tmp_path / "ref.log").read_text()[-3000:]

    run = tmp_path / "run"
    cfg = fit_config(tmp_path / "run.yaml", run, shards, tiny_vae_model(), STEPS, record=tmp_path / "a.jsonl")
    proc = start_fit(["--config", str(cfg)], tmp_path / "a.log")
    deadline = time.monotonic() + 240
    while len(read_record(tmp_path / "a.jsonl")) < 3:  # three real steps done, the fourth under way
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()[-3000:]
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(120) == 128 + signal.SIGTERM, (tmp_path / "a.log").read_text()[-3000:]
    log = (tmp_path / "a.log").read_text()
    killed = read_record(tmp_path / "a.jsonl")
    assert 3 <= len(killed) < STEPS, "the run ended before the signal: make STEPS larger"
    saved = torch.load(run / "hpc_ckpt_1.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == killed[-1]["step"] == len(killed)  # the batch it was in finished, then the save
    assert f"SIGTERM at step {len(killed)}: saved" in log

    assert run_fit(["--config", str(cfg), "--ckpt_path=hpc"], tmp_path / "b.log") == 0, \
        (tmp_path / "b.log").read_text()[-3000:]
    reference = [r["loss"] for r in read_record(tmp_path / "ref.jsonl")]
    resumed = read_record(tmp_path / "a.jsonl")[len(killed):]  # the same config: the resumed run appends
    assert [r["step"] for r in resumed] == list(range(len(killed) + 1, STEPS + 1))
    assert [r["loss"] for r in killed] == reference[:len(killed)]
    assert [r["loss"] for r in resumed] == reference[len(killed):]


def test_older_hpc_checkpoints_are_pruned_to_the_newest(tmp_path):
    from videogen.callbacks.preemption import hpc_checkpoints, prune_hpc_checkpoints

    for n in (1, 2, 3, 10):
        (tmp_path / f"hpc_ckpt_{n}.ckpt").write_bytes(b"x")
    (tmp_path / "hpc_ckpt_x.ckpt").write_bytes(b"not ours")
    (tmp_path / "last.ckpt").write_bytes(b"not ours")
    assert [p.name for p in prune_hpc_checkpoints(tmp_path, keep=2)] == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"]
    assert [p.name for p in hpc_checkpoints(tmp_path)] == ["hpc_ckpt_3.ckpt", "hpc_ckpt_10.ckpt"]
    assert (tmp_path / "hpc_ckpt_x.ckpt").exists() and (tmp_path / "last.ckpt").exists()


@pytest.mark.parametrize("restart, expected", [("0", "runs/old.ckpt"), ("1", "hpc"), ("2", "hpc")])
def test_a_requeued_job_resumes_from_the_newest_hpc_checkpoint_whatever_ckpt_path_says(tmp_path, monkeypatch,
                                                                                       restart, expected):
    from jsonargparse import Namespace

    from videogen.cli import resume_requeued_job

    (tmp_path / "hpc_ckpt_3.ckpt").write_bytes(b"x")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", restart)
    config = Namespace(ckpt_path="runs/old.ckpt", trainer=Namespace(default_root_dir=str(tmp_path)))
    resume_requeued_job(config)
    assert config.ckpt_path == expected
    empty = Namespace(ckpt_path="runs/old.ckpt", trainer=Namespace(default_root_dir=str(tmp_path / "none")))
    resume_requeued_job(empty)  # requeued before any HPC save: the given checkpoint stays
    assert empty.ckpt_path == "runs/old.ckpt"
