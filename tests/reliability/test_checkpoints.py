"""Checkpoints survive a kill mid-save and a full disk, and are never a way to run code."""

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reliability_helpers import ROOT, child_env, fit_config, kill_mid_save, make_shards, tiny_vae_model
from videogen.checkpoint_io import AtomicCheckpointIO


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("ckpt") / "shards", n=4, shards=1)


def test_every_videogen_fit_writes_checkpoints_atomically(tmp_path, shards):
    from videogen.cli import lightning_cli

    cfg = fit_config(tmp_path / "c.yaml", tmp_path / "run", shards, tiny_vae_model(), 2, every=1)
    cli = lightning_cli(["--config", str(cfg)], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_sigkill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path, shards):
    # the 2nd write of last.ckpt (step 2) stops half-way; step 1's last.ckpt is complete by then
    folder, marker = kill_mid_save(tmp_path, tmp_path / "run", shards, 4)
    partial = [p for p in folder.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < int(marker.read_text())  # killed mid-write
    last = torch.load(folder / "last.ckpt", weights_only=True)  # whole, and data only
    assert last["global_step"] == 1 and last["videogen"]["stage"] == "vae"
    # the leftover temporary file never shadows a checkpoint, and the run resumes from last.ckpt
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "last.ckpt"] \
        or sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    torch.load(folder / "epoch=0-step=2.ckpt", weights_only=True)  # written (atomically) before last.ckpt


FSIZE_CHILD = r"""
import resource, signal, sys, torch
from videogen.checkpoint_io import AtomicCheckpointIO
io = AtomicCheckpointIO()
path = sys.argv[1]
io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "global_step": 1}, path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG: a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
try:
    io.save_checkpoint({"state_dict": {"w": torch.ones(100_000)}, "global_step": 2}, path)
except OSError as e:
    print("ERROR:", e)
    sys.exit(3)
"""


def test_disk_full_while_saving_a_checkpoint_fails_loudly_and_keeps_the_previous_one(tmp_path):
    path = tmp_path / "ckpt" / "last.ckpt"
    out = subprocess.run([sys.executable, "-c", FSIZE_CHILD, str(path)], capture_output=True, text=True,
                         env=child_env(), cwd=str(ROOT), timeout=120)
    assert out.returncode == 3, out.stderr[-2000:]
    assert f"could not write checkpoint {path}" in out.stdout and "disk full" in out.stdout
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind


class MakesAFile:
    """A pickle payload: unpickling it would create a file."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "videogen": {"stage": "vae"}, "hyper_parameters": MakesAFile(str(target))}, path)
    # sanity: a plain unpickle would run the payload
    assert target.exists() is False
    return path, target


def test_malicious_pickle_in_a_checkpoint_is_refused_everywhere(tmp_path, shards, capsys):
    from videogen.cli import main
    from videogen.pretrained import load_checkpoint_module, load_stage

    path, target = evil_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_checkpoint_module(path)
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_stage(path)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert main(["export", "--ckpt", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "cannot be read safely" in capsys.readouterr().out
    cfg = fit_config(tmp_path / "c.yaml", tmp_path / "run", shards, tiny_vae_model(), 1)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        main(["fit", "--config", str(cfg), f"--ckpt_path={path}"])  # LightningCLI reads its hparams safely too
    assert not target.exists()
    assert not (tmp_path / "out").exists()


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for file in sorted((ROOT / "videogen").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{file.relative_to(ROOT)}:{node.lineno}", ok))
            if isinstance(node, (ast.Import, ast.ImportFrom)):  # nor any other unpickler
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(names), f"{file}:{node.lineno}"
    assert calls, "expected torch.load calls in videogen/"
    assert [c for c, ok in calls if not ok] == []
