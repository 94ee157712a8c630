"""Pretrained diffusers video VAEs behind our VAE interface: tiny random Wan, CogVideoX, LTX-Video and
HunyuanVideo models saved with save_pretrained (no download), loaded by `load_vae` from the folder;
compression and latent shapes, the normalisation the diffusers pipelines use, the content identity,
memory plans, and hostile folders refused with one clear error."""

import json
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from videogen.encoding import (  # noqa: E402
    decode_latents, default_overlap, denormalize_latents, encode_latents, load_vae, normalize_latents, plan_for,
)
from videogen.errors import RefusedFile  # noqa: E402
from videogen.models.vae.diffusers_vae import DiffusersVideoVAE  # noqa: E402
from diffusers_vaes import COG, HUNYUAN, LTX, WAN, save_vae  # noqa: E402

@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers_vaes")

    def ltx_stats(model):  # LTX keeps its latent statistics as buffers saved with the weights
        model.latents_mean.copy_(torch.linspace(-0.5, 0.5, 8))
        model.latents_std.copy_(torch.linspace(0.5, 2.0, 8))

    return {"wan": save_vae(root / "wan", "AutoencoderKLWan", WAN),
            "cog": save_vae(root / "cog", "AutoencoderKLCogVideoX", COG),
            "ltx": save_vae(root / "ltx", "AutoencoderKLLTXVideo", LTX, edit=ltx_stats),
            "hunyuan": save_vae(root / "hunyuan", "AutoencoderKLHunyuanVideo", HUNYUAN)}


@pytest.mark.parametrize("name, tc, sc, channels, frames, size", [
    ("wan", 4, 8, 4, 9, 32), ("cog", 4, 8, 4, 9, 32), ("ltx", 8, 32, 8, 17, 64), ("hunyuan", 4, 8, 4, 9, 16)])
def test_each_family_encodes_and_decodes_like_the_model(folders, name, tc, sc, channels, frames, size):
    export = load_vae(folders[name])
    vae = export.module
    assert isinstance(vae, DiffusersVideoVAE) and not vae.training
    assert (vae.temporal_compression, vae.spatial_compression, vae.latent_channels) == (tc, sc, channels)
    s = export.stats
    assert (s["temporal_compression"], s["spatial_compression"], s["latent_channels"]) == (tc, sc, channels)
    assert len(s["latent_mean"]) == len(s["latent_std"]) == channels
    torch.manual_seed(1)
    x = torch.rand(1, 3, frames, size, 2 * size) * 2 - 1
    z = encode_latents(vae, x)
    assert z.shape == (1, channels, 1 + (frames - 1) // tc, size // sc, 2 * size // sc)
    with torch.no_grad():
        direct = vae.model.encode(x).latent_dist.mode()
    torch.testing.assert_close(z, direct, rtol=0, atol=0)  # no tiling planned at this size: the model itself
    video = decode_latents(vae, z)
    assert video.shape == x.shape and video.abs().max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(video, vae.model.decode(z).sample.clamp(-1, 1), rtol=0, atol=0)


def test_normalisation_is_the_pipelines(folders):
    """(z - mean) / std with our stats equals what each diffusers pipeline feeds its transformer, and
    denormalize equals what it gives its VAE to decode."""
    from diffusers import LTXPipeline

    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 4, 5)
    wan = load_vae(folders["wan"])
    cfg = wan.module.model.config
    mean = torch.tensor(cfg.latents_mean).view(1, 4, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, 4, 1, 1, 1)  # WanPipeline's latents_std
    torch.testing.assert_close(normalize_latents(z, wan.stats), (z - mean) * inv_std)
    torch.testing.assert_close(denormalize_latents(z, wan.stats), z / inv_std + mean)  # WanPipeline before decode

    for name in ("cog", "hunyuan"):  # CogVideoXPipeline / HunyuanVideoPipeline: z * scaling_factor
        export = load_vae(folders[name])
        sf = export.module.model.config.scaling_factor
        torch.testing.assert_close(normalize_latents(z, export.stats), z * sf)
        torch.testing.assert_close(denormalize_latents(z, export.stats), z / sf)
    assert load_vae(folders["cog"]).stats["latent_std"] == [pytest.approx(1 / 0.7)] * 4

    ltx = load_vae(folders["ltx"])
    model = ltx.module.model
    z8 = torch.randn(2, 8, 3, 2, 2)
    expected = LTXPipeline._normalize_latents(z8, model.latents_mean, model.latents_std, model.config.scaling_factor)
    torch.testing.assert_close(normalize_latents(z8, ltx.stats), expected)
    back = LTXPipeline._denormalize_latents(z8, model.latents_mean, model.latents_std, model.config.scaling_factor)
    torch.testing.assert_close(denormalize_latents(z8, ltx.stats), back)
    assert ltx.stats["latent_mean"][0] == pytest.approx(-0.5)  # the saved buffers, not the defaults


def test_identity_is_the_content_of_config_and_weights(folders, tmp_path):
    a = load_vae(folders["wan"]).manifest["weights_sha256"]
    assert load_vae(folders["wan"]).manifest["weights_sha256"] == a  # deterministic
    other = load_vae(save_vae(tmp_path / "wan_seed1", "AutoencoderKLWan", WAN, seed=1)).manifest["weights_sha256"]
    assert other != a
    edited = shutil.copytree(folders["wan"], tmp_path / "wan_edited")
    config = json.loads((edited / "config.json").read_text())
    config["latents_std"] = [1.0, 1.0, 1.0, 1.0]
    (edited / "config.json").write_text(json.dumps(config))
    changed = load_vae(edited)
    assert changed.manifest["weights_sha256"] not in (a, other) and changed.stats["latent_std"] == [1.0] * 4


def test_memory_plan_tiles_within_the_budget_and_still_encodes(folders):
    vae = load_vae(folders["wan"]).module
    x = torch.rand(1, 3, 1, 160, 160) * 2 - 1
    assert plan_for(vae, tuple(x.shape), "cpu", memory_budget_gb=64).tile is None
    plan = plan_for(vae, tuple(x.shape), "cpu", memory_budget_gb=0.001)
    assert plan.tile is not None and max(plan.tile) < 160 and plan.tile_overlap == default_overlap(vae) == 64
    assert vae.activation_bytes(1, *plan.tile) < vae.activation_bytes(1, 160, 160)
    z = encode_latents(vae, x, memory_budget_gb=0.001)  # the model's own tiling, blended
    assert z.shape == (1, 4, 1, 20, 20) and torch.isfinite(z).all()
    assert vae.model.use_tiling and vae.model.tile_sample_min_height == plan.tile[0]
    encode_latents(vae, x[..., :32, :32], memory_budget_gb=64)
    assert not vae.model.use_tiling  # set for each call, never left over from the last one
    ltx = load_vae(folders["ltx"]).module
    plan = plan_for(ltx, (1, 3, 65, 64, 64), "cpu", memory_budget_gb=1e-4)
    assert plan.chunk_frames is not None and plan.chunk_frames % 8 == 0  # LTX: frame-wise chunks first


def test_wrong_clip_shapes_get_clear_errors(folders):
    cog = load_vae(folders["cog"]).module
    assert cog.frame_multiple == 8  # CogVideoX decodes odd latent frame counts only
    with pytest.raises(ValueError, match=r"encodes 1 \+ k\*8 frames.*T=13"):
        cog.encode(torch.zeros(1, 3, 13, 32, 32))
    with pytest.raises(ValueError, match="odd number"):
        list(cog.decode_chunks(torch.zeros(1, 4, 2, 4, 4)))
    wan = load_vae(folders["wan"]).module
    with pytest.raises(ValueError, match="divisible by 8, got H=30"):
        wan.encode(torch.zeros(1, 3, 9, 30, 32))
    with pytest.raises(ValueError, match="multiples of the spatial compression 8"):
        wan.encode(torch.zeros(1, 3, 9, 32, 32), tile=(20, 32))


# ---- hostile folders: one clear error, nothing built -----------------------------------------------


def test_unknown_class_name_is_refused(folders, tmp_path):
    bad = shutil.copytree(folders["wan"], tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["_class_name"] = "UNet2DConditionModel"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(RefusedFile, match=r"config.json: _class_name 'UNet2DConditionModel' is not a supported"):
        load_vae(bad)


def test_pickle_only_folder_is_refused(folders, tmp_path):
    bad = tmp_path / "pickled"
    bad.mkdir()
    shutil.copy(folders["wan"] / "config.json", bad / "config.json")
    torch.save({"x": torch.zeros(1)}, bad / "diffusion_pytorch_model.bin")
    with pytest.raises(RefusedFile, match=r"only pickle weights \(diffusion_pytorch_model.bin\)"):
        load_vae(bad)


def test_missing_config_is_refused(folders, tmp_path):
    bad = tmp_path / "noconfig"
    bad.mkdir()
    shutil.copy(folders["wan"] / "diffusion_pytorch_model.safetensors", bad)
    with pytest.raises(RefusedFile, match="no config.json"):
        load_vae(bad)


def test_weights_unlike_the_config_are_refused_before_building(folders, tmp_path):
    bad = shutil.copytree(folders["wan"], tmp_path / "resized")
    config = json.loads((bad / "config.json").read_text())
    config["base_dim"] = 100000  # would allocate gigabytes if built before the shapes were compared
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(RefusedFile, match="do not fit the AutoencoderKLWan its config.json describes"):
        load_vae(bad)
    (bad / "config.json").write_text("[1, 2]")
    with pytest.raises(RefusedFile, match="not a JSON object"):
        load_vae(bad)
    (bad / "config.json").write_text(" " * (2 << 20))
    with pytest.raises(RefusedFile, match="more than"):
        load_vae(bad)


def test_a_json_that_is_not_a_stats_file_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"vae": str(tmp_path)}))
    with pytest.raises(RefusedFile, match="not a statistics file written by `videogen vae-stats`"):
        load_vae(path)


def test_the_cli_shows_a_refusal_as_one_line(folders, tmp_path, capsys):
    from videogen.cli import main

    bad = shutil.copytree(folders["wan"], tmp_path / "bad")
    (bad / "diffusion_pytorch_model.safetensors").unlink()
    (bad / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    assert main(["encode", "--vae", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "only pickle weights" in err and len(err.splitlines()) == 1


def test_sharded_weights_load_and_a_hostile_index_is_refused(folders, tmp_path):
    torch.manual_seed(0)
    diffusers.AutoencoderKLWan(**WAN).save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    folder = tmp_path / "sharded"
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    export = load_vae(folder)
    single = load_vae(folders["wan"])
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    torch.testing.assert_close(encode_latents(export.module, x), encode_latents(single.module, x), rtol=0, atol=0)
    assert export.manifest["weights_sha256"] != single.manifest["weights_sha256"]  # the files differ
    index["weight_map"][next(iter(index["weight_map"]))] = "../escape.safetensors"
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(RefusedFile, match=r"names \['../escape.safetensors'\]"):
        load_vae(folder)


@pytest.mark.parametrize("name, frames, size", [("ltx", 33, 32), ("hunyuan", 25, 16)])
def test_frame_wise_chunks_keep_the_shapes_and_stay_close(folders, name, frames, size):
    """LTX and Hunyuan run chunk_frames-long overlapping chunks, blended (approximate, documented)."""
    vae = load_vae(folders[name]).module
    tc = vae.temporal_compression
    torch.manual_seed(0)
    x = torch.rand(1, 3, frames, size, size) * 2 - 1
    with torch.no_grad():
        whole = vae.encode(x).mode()
        chunked = vae.encode(x, chunk_frames=2 * tc).mode()
        assert chunked.shape == whole.shape and whole.shape[2] == 1 + (frames - 1) // tc
        assert vae.model.use_framewise_encoding
        assert (chunked - whole).abs().mean() < whole.abs().mean()  # close, not equal
        video = vae.decode(whole, chunk_frames=2)
        assert video.shape == x.shape and vae.model.use_framewise_decoding
        vae.encode(x)
        assert not vae.model.use_framewise_encoding  # off again when no chunk is asked for
    with pytest.raises(ValueError, match=f"chunk_frames={tc} must be a multiple of the temporal compression {tc} and "
                                         f"at least {2 * tc}"):
        vae.encode(x, chunk_frames=tc)


def test_tail_decoder_gives_the_frames_after_the_prefix(folders):
    """A diffusers VAE keeps its time loop's caches to itself: ``tail_decoder`` decodes prefix + tail whole at
    every call and returns the tail's frames, as our VAE's does."""
    vae = load_vae(folders["wan"]).module
    torch.manual_seed(2)
    z = torch.randn(1, 4, 3, 4, 4)
    with torch.no_grad():
        whole = vae.decode(z, chunk_frames=1)
        tail = vae.tail_decoder(z[:, :, :2])(z[:, :, 2:])
    assert tail.shape[2] == vae.temporal_compression
    torch.testing.assert_close(tail, whole[:, :, vae.num_frames(2):], rtol=0, atol=0)
