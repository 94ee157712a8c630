"""`save_export` never deletes a folder that is not an export, and replaces an export so that a kill
at any step leaves the old export or the new one (rename-aside-then-swap with fsync)."""

import os
import shutil

import pytest
import torch

from videogen import pretrained
from videogen.cli import main
from videogen.errors import RefusedFile
from videogen.models.configurable import to_config
from videogen.models.vae import VideoAutoencoder
from videogen.pretrained import load_export, load_stage, save_export

STATS = {"latent_channels": 4, "latent_mean": [0.0] * 4, "latent_std": [1.0] * 4, "temporal_compression": 4,
         "spatial_compression": 4}


def tiny_vae(seed: int) -> VideoAutoencoder:
    torch.manual_seed(seed)
    return VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                            spatial_compression=4, patch_size=2, patch_size_t=2)


def stage_checkpoint(path, vae):
    """A checkpoint as VAEModule writes it: the weights under ``vae.`` and the videogen record."""
    torch.save({"videogen": {"stage": "vae", "config": to_config(vae), "stats": STATS, "export_prefix": "vae."},
                "state_dict": {f"vae.{k}": v for k, v in vae.state_dict().items()}, "global_step": 7}, path)
    return path


def same_weights(module, reference) -> bool:
    a, b = module.state_dict(), reference.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_videogen_export_refuses_to_wipe_a_run_folder(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    (run / "ckpt").mkdir(parents=True)
    (run / "ckpt" / "last.ckpt").write_bytes(b"weeks of training")
    (run / "config.yaml").write_text("model: {}\n")
    ckpt = stage_checkpoint(tmp_path / "vae.ckpt", tiny_vae(0))
    rc = main(["export", "--ckpt", str(ckpt), "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith(f"videogen: error: {run}: exists and is not an export")
    assert (run / "ckpt" / "last.ckpt").read_bytes() == b"weeks of training" and (run / "config.yaml").is_file()
    assert sorted(p.name for p in run.parent.iterdir()) == ["x"]  # no staging folder left beside it


def test_a_file_or_a_folder_with_extra_files_is_not_replaced(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(RefusedFile, match="is not an export folder"):
        save_export(target, tiny_vae(0), STATS)
    assert target.read_text() == "mine"
    export = save_export(tmp_path / "e", tiny_vae(0), STATS)
    (export / "README.md").write_text("my notes about this export")
    with pytest.raises(RefusedFile, match="README.md"):
        save_export(export, tiny_vae(1), STATS)
    assert (export / "README.md").is_file() and same_weights(load_export(export).module, tiny_vae(0))


def test_videogen_export_replaces_an_export_and_leaves_nothing_beside_it(tmp_path, capsys):
    out = save_export(tmp_path / "export", tiny_vae(0), STATS)
    ckpt = stage_checkpoint(tmp_path / "vae.ckpt", tiny_vae(1))
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert same_weights(load_export(out).module, tiny_vae(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "vae.ckpt"]


class Crash(Exception):
    pass


def crash_at(monkeypatch, k: int) -> list[str]:
    """Raise at the k-th file-system step of a save (a write, an fsync, a rename or a removal)."""
    steps: list[str] = []

    def wrap(owner, name):
        original = getattr(owner, name)

        def step(*args, **kwargs):
            steps.append(name)
            if len(steps) == k:
                raise Crash(f"killed at step {k} ({name})")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, step)

    for owner, name in ((os, "rename"), (os, "replace"), (os, "fsync"), (shutil, "rmtree"),
                        (pretrained, "_write_synced")):
        wrap(owner, name)
    return steps


def test_a_kill_at_any_step_of_a_replace_leaves_a_complete_export(tmp_path, monkeypatch):
    old, new = tiny_vae(0), tiny_vae(1)
    k, outcomes = 0, set()
    while True:
        k += 1
        out = tmp_path / f"k{k}" / "export"
        save_export(out, old, STATS)
        with monkeypatch.context() as m:
            steps = crash_at(m, k)
            try:
                save_export(out, new, STATS)
                finished = True
            except Crash:
                finished = False
        loaded = load_stage(out, expect=VideoAutoencoder).module  # the export is whole wherever it stopped
        is_old, is_new = same_weights(loaded, old), same_weights(loaded, new)
        assert is_old or is_new, (k, steps)
        outcomes.add("new" if is_new else "old")
        save_export(out, new, STATS)  # the next save finishes or undoes the interrupted one
        assert same_weights(load_export(out).module, new)
        assert sorted(p.name for p in out.parent.iterdir()) == ["export"], (k, steps)
        if finished:
            break
    assert k > 8 and outcomes == {"old", "new"}  # every step was interrupted once, both outcomes were seen
