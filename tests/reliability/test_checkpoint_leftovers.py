"""What a killed save leaves is cleaned at the next save, and a checkpoint of another model config
is refused at resume with one line naming the keys that do not fit."""

import os
import subprocess
import sys
import time

import pytest
import torch

from reliability_helpers import ROOT, child_env, fit_config, kill_mid_save, make_shards, run_fit, tiny_vae_model
from videogen.checkpoint_io import AtomicCheckpointIO


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("leftovers") / "shards", n=4, shards=1)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_partial_a_killed_save_left_is_removed_at_the_next_save(tmp_path):
    """The temporary file as 99e149e names it (``.<name>.<pid>.partial``), its writer gone."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    stale = folder / f".last.ckpt.{dead_pid()}.partial"
    stale.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, folder / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


def test_partials_of_killed_saves_are_removed_at_the_next_save_and_live_ones_kept(tmp_path):
    from videogen.checkpoint_io import _host

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "ckpt"
        folder.mkdir()
        dead = folder / f".last.ckpt.{_host()}-{dead_pid()}.partial"      # killed on this host
        old_format = folder / f".last.ckpt.{dead_pid()}.partial"           # written before hosts were named
        writing = folder / f".last.ckpt.{_host()}-{live.pid}.partial"    # a save in progress in another process
        elsewhere = folder / ".epoch=0-step=3.ckpt.othernode-12.partial"  # another node, untouched for 2 hours
        fresh_elsewhere = folder / ".epoch=0-step=4.ckpt.othernode-13.partial"
        mine = folder / "notes.partial"                                   # not a checkpoint temp file
        for p in (dead, old_format, writing, elsewhere, fresh_elsewhere, mine):
            p.write_bytes(b"half a checkpoint")
        os.utime(elsewhere, (time.time() - 7200, time.time() - 7200))
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1},
                                             folder / "last.ckpt")
        left = sorted(p.name for p in folder.iterdir())
        assert left == sorted([p.name for p in (writing, fresh_elsewhere, mine)] + ["last.ckpt"])
        assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 1
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_a_run_killed_mid_save_leaves_no_partial_after_it_resumes(tmp_path, shards):
    run = tmp_path / "run"
    folder, _ = kill_mid_save(tmp_path, run, shards, 2)
    assert [p.name for p in folder.iterdir() if p.name.endswith(".partial")]  # what the kill left
    cfg = fit_config(tmp_path / "c2.yaml", run, shards, tiny_vae_model(), 3, every=1)
    assert run_fit(["--config", str(cfg), "--ckpt_path", str(folder / "last.ckpt")], tmp_path / "log2") == 0, \
        (tmp_path / "log2").read_text()[-3000:]
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".partial")]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 3


@pytest.mark.slow
def test_resuming_with_a_checkpoint_of_another_config_is_one_line_naming_keys(tmp_path, shards):
    run = tmp_path / "run"
    cfg = fit_config(tmp_path / "c.yaml", run, shards, tiny_vae_model(), 1, every=1)
    assert run_fit(["--config", str(cfg)], tmp_path / "log") == 0, (tmp_path / "log").read_text()[-3000:]
    other = tiny_vae_model()
    vae = other["init_args"]["vae"]["init_args"]
    vae["base_channels"] = 2 * vae.get("base_channels", 8)
    cfg = fit_config(tmp_path / "c2.yaml", tmp_path / "run2", shards, other, 2, every=1)
    proc = subprocess.run([sys.executable, "-m", "videogen.cli", "fit", "--config", str(cfg), "--ckpt_path",
                           str(run / "ckpt" / "last.ckpt")], capture_output=True, text=True, env=child_env(),
                          cwd=str(ROOT), timeout=240)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("videogen: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error(s) in loading state_dict" not in proc.stderr
    line = errors[0]
    assert line.startswith(f"videogen: error: ckpt_path={run / 'ckpt' / 'last.ckpt'}: its weights do not fit")
    assert "shape-mismatched (vae.encoder.conv_in.conv.weight (8, 24, 3, 3, 3) (expected (16, 24, 3, 3, 3))" in line
