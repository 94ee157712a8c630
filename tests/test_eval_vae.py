"""videogen eval-vae on tiny real shards with a tiny random VAE: numbers, counts, JSON shape, errors."""

from __future__ import annotations

import argparse
import json
import tarfile

import pytest
import torch

from tests.conftest import clip_sample, write_tar
from videogen.commands import eval_vae
from videogen.evaluation import reconstruction
from videogen.models.configurable import to_config
from videogen.models.vae import VideoAutoencoder
from videogen.pretrained import save_export


def tiny_vae() -> VideoAutoencoder:
    torch.manual_seed(0)
    return VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                            temporal_compression=4, spatial_compression=4, patch_size=2, patch_size_t=2).eval()


def synthetic(sample: dict, colour: str = "red") -> dict:
    sample["json"] = {**sample["json"], "attributes": {"colour": colour, "shape": "square"}}
    return sample


@pytest.fixture
def vae_export(tmp_path):
    return save_export(tmp_path / "vae", tiny_vae(), stats={"temporal_compression": 4, "spatial_compression": 4})


@pytest.fixture
def shards(tmp_path):
    """Two shards: 3 usable clips (two synthetic, one with an odd size and no attributes), 2 bad ones."""
    folder = tmp_path / "shards"
    folder.mkdir()
    write_tar(folder / "shard-000000.tar", [
        synthetic(clip_sample("a", 32, 32, 9, seed=1)),
        {"__key__": "empty", "mp4": b"", "txt": "nothing"},
        synthetic(clip_sample("b", 48, 32, 11, seed=2)),  # 11 frames -> 9
    ])
    write_tar(folder / "shard-000001.tar", [
        {"__key__": "garbage", "mp4": b"not a video at all", "txt": "x",
         "json": {"width": 32, "height": 32, "num_frames": 9, "fps": 12}},
        clip_sample("c", 42, 30, 13, seed=3),  # 42x30 -> centred 40x28
    ])
    return folder


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    eval_vae.add_arguments(parser)
    return eval_vae.run(parser.parse_args([*argv, "--no-progress"]))


def report_of(capsys, *argv: str) -> dict:
    assert cli(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_trimmed_shape():
    from videogen.models.latent_grid import LatentGrid

    assert reconstruction.trimmed_shape(11, 30, 42, LatentGrid(4, 4)) == (9, 28, 40, 1, 1)
    assert reconstruction.trimmed_shape(13, 64, 96, LatentGrid(4, 8)) == (13, 64, 96, 0, 0)
    assert reconstruction.trimmed_shape(13, 64, 64, LatentGrid(4, 8), max_frames=8) == (5, 64, 64, 0, 0)
    assert reconstruction.trimmed_shape(3, 20, 20, LatentGrid(4, 8)) == (1, 16, 16, 2, 2)  # an image-like clip
    assert reconstruction.trimmed_shape(9, 6, 64, LatentGrid(4, 8)) is None
    assert reconstruction.trimmed_shape(15, 64, 64, LatentGrid(4, 8, frame_multiple=8)) == (9, 64, 64, 0, 0)


def test_report_counts_numbers_and_json_shape(capsys, vae_export, shards):
    rep = report_of(capsys, "--vae", str(vae_export), "--data", str(shards))
    for key in ("psnr", "ssim", "num_clips", "encode_seconds_per_clip", "decode_seconds_per_clip",
                "colour_agreement", "colour_agreement_original", "num_colour_clips", "num_skipped", "skipped",
                "clips"):
        assert key in rep
    assert rep["num_clips"] == 3 and rep["num_skipped"] == 2
    assert [(c["key"], c["frames"], c["height"], c["width"]) for c in rep["clips"]] == \
        [("a", 9, 32, 32), ("b", 9, 32, 48), ("c", 13, 28, 40)]
    assert {(s["key"], s["reason"]) for s in rep["skipped"]} == {("empty", "empty_media"),
                                                                ("garbage", "decode_error")}
    assert 0 < rep["psnr"] < 60 and -1 < rep["ssim"] < 1
    assert rep["psnr"] == pytest.approx(sum(c["psnr"] for c in rep["clips"]) / 3)
    assert rep["encode_seconds_per_clip"] > 0 and rep["decode_seconds_per_clip"] > 0
    # two synthetic clips; the pixel judge sees the red square in the originals
    assert rep["num_colour_clips"] == 2 and rep["colour_agreement_original"] == 1.0
    assert rep["colour_agreement"] in (0.0, 0.5, 1.0)
    assert [c["colour"] for c in rep["clips"]] == ["red", "red", None]


def test_psnr_and_ssim_equal_a_direct_computation(capsys, vae_export, shards):
    from videogen.data.decode import make_decoder
    from videogen.evaluation.reconstruction import psnr, ssim
    from videogen.pretrained import load_export

    rep = report_of(capsys, "--vae", str(vae_export), "--data", str(shards))
    vae = load_export(vae_export).module
    with tarfile.open(shards / "shard-000001.tar") as tar:  # the shard's own bytes (x264 output varies per run)
        media = tar.extractfile("c.mp4").read()
    frames = make_decoder().decode(media, list(range(13)))[:, 1:29, 1:41]  # centred 28x40 crop
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
    clip = rep["clips"][2]
    assert clip["psnr"] == pytest.approx(float(psnr(x, rec)[0]), rel=1e-5)
    assert clip["ssim"] == pytest.approx(float(ssim(x, rec)[0]), rel=1e-5)


def test_limits_chunking_and_no_attributes(capsys, vae_export, shards, tmp_path):
    full = report_of(capsys, "--vae", str(vae_export), "--data", str(shards))
    rep = report_of(capsys, "--vae", str(vae_export), "--data", str(shards), "--max-clips", "2",
                    "--max-frames", "8")
    assert rep["num_clips"] == 2 and [c["frames"] for c in rep["clips"]] == [5, 5]
    # chunked time is exact, so the figures match the one-pass run
    chunked = report_of(capsys, "--vae", str(vae_export), "--data", str(shards), "--chunk-frames", "4")
    assert chunked["psnr"] == pytest.approx(full["psnr"], rel=1e-4)
    assert chunked["chunk_frames"] == 4
    plain = tmp_path / "plain"
    plain.mkdir()
    write_tar(plain / "shard-000000.tar", [clip_sample("p", 32, 32, 5, seed=4)])
    rep = report_of(capsys, "--vae", str(vae_export), "--data", str(plain))
    assert rep["num_clips"] == 1 and rep["colour_agreement"] is None and rep["num_colour_clips"] == 0


def test_a_checkpoint_gives_the_same_figures_as_its_export(capsys, vae_export, shards, tmp_path):
    vae = tiny_vae()
    ckpt = tmp_path / "vae.ckpt"
    torch.save({"state_dict": {f"vae.{k}": v for k, v in vae.state_dict().items()}, "global_step": 3,
                "videogen": {"stage": "vae", "config": to_config(vae), "stats": {}, "export_prefix": "vae."}}, ckpt)
    loaded, _ = reconstruction.vae_and_stats(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values()))
    a = report_of(capsys, "--vae", str(ckpt), "--data", str(shards), "--max-clips", "1")
    b = report_of(capsys, "--vae", str(vae_export), "--data", str(shards), "--max-clips", "1")
    assert a["psnr"] == pytest.approx(b["psnr"], rel=1e-6)


def test_errors_name_the_input_and_exit_2(capsys, vae_export, shards, tmp_path):
    assert cli("--vae", str(tmp_path / "nope"), "--data", str(shards)) == 2
    assert "nope: no such VAE export folder or checkpoint" in capsys.readouterr().err
    assert cli("--vae", str(vae_export), "--data", str(tmp_path / "missing")) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    assert cli("--vae", str(vae_export), "--data", str(shards), "--chunk-frames", "6") == 2
    assert "--chunk-frames 6: must be a positive multiple of the VAE's temporal compression 4" in \
        capsys.readouterr().err
    assert cli("--vae", str(vae_export), "--data", str(shards), "--tile", "30", "32") == 2
    assert "--tile 30 32" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    write_tar(bad / "shard-000000.tar", [{"__key__": "g", "mp4": b"junk", "txt": "x"}])
    assert cli("--vae", str(vae_export), "--data", str(bad)) == 2
    err = capsys.readouterr().err
    assert "no clip could be evaluated" in err and "decode_error" in err
    not_vae = tmp_path / "ckpt"
    torch.save({"state_dict": {}}, not_vae)
    assert cli("--vae", str(not_vae), "--data", str(shards)) == 2
    assert "has no 'videogen' record" in capsys.readouterr().err


@pytest.mark.slow
def test_default_plan_from_a_small_memory_budget_is_exact(capsys, vae_export, tmp_path):
    # a budget far below one pass: the plan chunks time and tiles space; both are exact at the default
    # overlap (the receptive field), so the figures equal the one-pass run's
    folder = tmp_path / "big"
    folder.mkdir()
    write_tar(folder / "shard-000000.tar", [clip_sample("big", 200, 160, 33, seed=5)])
    one_pass = report_of(capsys, "--vae", str(vae_export), "--data", str(folder), "--memory-budget", "100")
    planned = report_of(capsys, "--vae", str(vae_export), "--data", str(folder), "--memory-budget", "0.002")
    assert one_pass["clips"][0]["chunk_frames"] is None and one_pass["clips"][0]["tile"] is None
    clip = planned["clips"][0]
    assert clip["chunk_frames"] == 16 and clip["tile"] is not None and clip["tile"] != [160, 200]
    assert planned["psnr"] == pytest.approx(one_pass["psnr"], abs=1e-3)
    assert planned["ssim"] == pytest.approx(one_pass["ssim"], abs=1e-4)
    assert cli("--vae", str(vae_export), "--data", str(folder), "--memory-budget", "0") == 2
    assert "--memory-budget 0.0: must be a positive number of GB" in capsys.readouterr().err
