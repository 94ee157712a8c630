"""Every command that writes shards refuses an --out that is, lies inside or holds an input, with one
line and before writing anything: foreign shards are never overwritten by outputs."""

import hashlib

import pytest
import torch

from reliability_helpers import make_mp4, make_shards
from videogen.cli import main
from videogen.models.vae import VideoAutoencoder
from videogen.pretrained import save_export


def snapshot(folder):
    """Every file under ``folder`` and its sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def workspace(tmp_path):
    make_shards(tmp_path / "data", n=2, shards=2)
    (tmp_path / "raw").mkdir()
    for i in range(2):
        (tmp_path / "raw" / f"v{i}.mp4").write_bytes(make_mp4(64, 64, 9, seed=i))
        (tmp_path / "raw" / f"v{i}.txt").write_text(f"clip {i}")
    torch.manual_seed(0)
    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    save_export(tmp_path / "vae", vae, {"latent_channels": 4, "latent_mean": [0.0] * 4, "latent_std": [1.0] * 4,
                                        "temporal_compression": 4, "spatial_compression": 4})
    return tmp_path


CASES = {
    "encode --out = --data": ("encode", "data", "data"),
    "encode --out inside --data": ("encode", "data/latents", "data"),
    "encode --out = folder of a shard": ("encode", "data", "data/shard-000000.tar"),
    "encode --out = folder of a glob": ("encode", "data", "data/*.tar"),
    "recaption --out = --data": ("recaption", "data", "data"),
    "recaption --out holds --data": ("recaption", ".", "data"),
    "curate --out = --data": ("curate", "data", "data"),
    "curate --out inside --data": ("curate", "data/curated", "data"),
    "make-shards --out = --src": ("make-shards", "raw", "raw"),
    "make-shards --out inside --src": ("make-shards", "raw/shards", "raw"),
    "make-shards --out holds --src": ("make-shards", ".", "raw"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_over_an_input_is_refused_before_anything_is_written(workspace, captioner_export, capsys, case):
    command, out, data = CASES[case]
    out, data = str(workspace / out), str(workspace / data)
    argv = {"encode": ["encode", "--vae", str(workspace / "vae"), "--data", data, "--out", out, "--num-workers", "0",
                       "--accelerator", "cpu", "--devices", "1"],
            "recaption": ["recaption", "--ckpt", str(captioner_export), "--data", data, "--out", out,
                          "--device", "cpu", "--no-progress"],
            "curate": ["curate", "--data", data, "--out", out, "--steps", "quality", "--workers", "1",
                       "--no-progress"],
            "make-shards": ["make-shards", "--src", data, "--out", out, "--workers", "1", "--no-progress"]}[command]
    before = snapshot(workspace)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith(f"videogen: error: {out}: the output folder "), err
    assert "nothing was written" in err
    assert snapshot(workspace) == before  # no file changed, none added


def test_outputs_apart_from_the_inputs_still_work(workspace, capsys):
    assert main(["make-shards", "--src", str(workspace / "raw"), "--out", str(workspace / "shards"), "--workers", "1",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (workspace / "shards").glob("*.tar")) == ["shard-000000.tar"]
