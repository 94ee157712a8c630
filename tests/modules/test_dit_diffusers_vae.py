"""A pretrained diffusers VAE (tiny random Wan and CogVideoX from save_pretrained) through the whole
stage-3 path: `videogen encode` writes a latent cache that records its identity and decodes back to the
clip's shape, our DiT trains from that cache and from pixels on the fly, a cache of another VAE is
refused, and `videogen vae-stats` measures statistics that `--vae STATS.json` then uses."""

import io
import json
import tarfile
from functools import partial

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

pytest.importorskip("diffusers")

from diffusers_vaes import COG, WAN, save_vae  # noqa: E402
from conftest import tiny_dit  # noqa: E402
from videogen.pipelines.encode import buckets_from, encode  # noqa: E402
from videogen.data import Bucket, Bucketer, LoaderOptions, StreamOptions, VideoDataModule  # noqa: E402
from videogen.encoding import check_cache_identity, decode_latents, encode_latents, load_vae  # noqa: E402
from videogen.errors import RefusedFile  # noqa: E402
from videogen.modules.dit import DiTModule  # noqa: E402
from videogen.modules.lr_schedule import WarmupCosine  # noqa: E402

BUCKETS = [{"num_frames": 9, "height": 64, "width": 96}, {"num_frames": 9, "height": 64, "width": 64}]


def datamodule(shards):
    return VideoDataModule(str(shards), val_shards=str(shards),
                           bucketer=Bucketer([Bucket(**b) for b in BUCKETS], batch_size=2),
                           clips=StreamOptions(span_clip=True), loader=LoaderOptions(num_workers=0, shuffle_buffer=4))


def trainer(tmp_path, steps):
    return Trainer(accelerator="cpu", max_steps=steps, enable_progress_bar=False, enable_model_summary=False,
                   logger=False, default_root_dir=str(tmp_path), limit_val_batches=0, num_sanity_val_steps=0,
                   enable_checkpointing=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """2 shards x 3 real mp4 clips (96x64 and 64x64, 9 to 11 frames) with a manifest."""
    from conftest import clip_sample, write_tar
    from videogen.data.manifest import DatasetManifest, scan_shard

    folder = tmp_path_factory.mktemp("shards")
    stats = []
    for s in range(2):
        samples = [clip_sample(f"c{k:03d}", *((96, 64) if k % 2 == 0 else (64, 64)), 9 + k % 3, seed=k)
                   for k in range(3 * s, 3 * s + 3)]
        stats.append(scan_shard(write_tar(folder / f"shard-{s:06d}.tar", samples)))
    DatasetManifest(shards=stats).save(folder)
    return folder


@pytest.fixture(scope="module")
def wan_cache(tmp_path_factory, shards):
    tmp_path = tmp_path_factory.mktemp("wan_cache")
    vae_dir = save_vae(tmp_path / "wan", "AutoencoderKLWan", WAN)
    config = tmp_path / "dit.yaml"
    data = {"bucketer": {"buckets": BUCKETS}, "clips": {"span_clip": True}}
    config.write_text(json.dumps({"data": {"init_args": data}}))
    out = encode(str(vae_dir), str(shards), tmp_path / "lat", buckets=buckets_from(config), num_workers=0,
                 accelerator="cpu", devices=1, progress=False)
    return {"vae": vae_dir, "out": out, "pixels": shards}


def first_sample(shard):
    with tarfile.open(shard) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    key = sorted(n.split(".")[0] for n in members)[0]
    return np.load(io.BytesIO(members[f"{key}.latent.npy"]), allow_pickle=False), json.loads(members[f"{key}.json"])


def test_encode_caches_with_the_identity_and_decodes_back(wan_cache):
    export = load_vae(wan_cache["vae"])
    manifest = json.loads((wan_cache["out"] / "dataset.json").read_text())
    recorded = manifest["created_by"]["vae"]
    assert manifest["num_samples"] == 6
    assert recorded["class_path"] == "diffusers.AutoencoderKLWan"
    assert recorded["weights_sha256"] == export.manifest["weights_sha256"] and len(recorded["weights_sha256"]) == 64
    assert recorded["latent_mean"] == WAN["latents_mean"] and recorded["latent_std"] == WAN["latents_std"]
    z, meta = first_sample(wan_cache["out"] / "shard-000000.tar")
    t, h, w = meta["latent"]["frames"], meta["latent"]["height"], meta["latent"]["width"]
    assert z.dtype == np.float16 and z.shape == (4, 1 + (t - 1) // 4, h // 8, w // 8) == (4, 3, 8, w // 8)
    video = decode_latents(export.module, torch.from_numpy(z.astype(np.float32))[None])
    assert video.shape == (1, 3, t, h, w) and video.abs().max() <= 1
    check_cache_identity(wan_cache["out"], export)  # its own cache passes


def test_a_cache_of_another_vae_is_refused(wan_cache, tmp_path):
    other_wan = load_vae(save_vae(tmp_path / "wan2", "AutoencoderKLWan", WAN, seed=1))
    cog = load_vae(save_vae(tmp_path / "cog", "AutoencoderKLCogVideoX", COG))
    for export in (other_wan, cog):
        with pytest.raises(ValueError, match="latents were written by the VAE at .*wan"):
            check_cache_identity(wan_cache["out"], export)
    module = DiTModule(tiny_dit(), vae=str(tmp_path / "cog"), text_max_length=16, ema_decay=None)
    t = trainer(tmp_path, 2)
    with pytest.raises(ValueError, match="latents were written by the VAE at"):
        t.fit(module, datamodule=datamodule(wan_cache["out"]))
    assert t.global_step == 0
    with pytest.raises(ValueError, match="latents were written by the VAE at .*wan.*: write this cache to a new folder"):
        encode(str(tmp_path / "cog"), str(wan_cache["pixels"]), wan_cache["out"], num_workers=0, accelerator="cpu",
               devices=1, progress=False)


def test_our_dit_trains_on_a_diffusers_vae_from_the_cache_and_from_pixels(wan_cache, tmp_path):
    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(wan_cache["vae"]), text_max_length=16, ema_decay=None,
                       lr_scheduler=partial(WarmupCosine, warmup=1))

    def no_encode(*args, **kwargs):
        raise AssertionError("the VAE encoder ran although the batch came from a latent cache")

    module.vae.encode = no_encode
    before = {k: v.clone() for k, v in module.dit.state_dict().items()}
    t = trainer(tmp_path / "cache", 2)
    t.fit(module, datamodule=datamodule(wan_cache["out"]))
    assert t.global_step == 2 and torch.isfinite(t.logged_metrics["train/loss"])
    assert any(not torch.equal(before[k], v) for k, v in module.dit.state_dict().items())
    # on the fly from pixels through a CogVideoX VAE (9-frame buckets: 3 latent frames, odd as it needs)
    save_vae(tmp_path / "cog", "AutoencoderKLCogVideoX", COG)
    module = DiTModule(tiny_dit(), vae=str(tmp_path / "cog"), text_max_length=16, ema_decay=None,
                       lr_scheduler=partial(WarmupCosine, warmup=1))
    assert module.vae_export.stats["latent_std"] == [pytest.approx(1 / COG["scaling_factor"])] * 4
    t = trainer(tmp_path / "pixels", 2)
    t.fit(module, datamodule=datamodule(wan_cache["pixels"]))
    assert t.global_step == 2 and torch.isfinite(t.logged_metrics["train/loss"])
    assert module.hparams.vae == str(tmp_path / "cog")
    # videogen sample decodes through the VAE the DiT export records (the diffusers folder)
    import av

    from videogen.cli import main
    from videogen.pretrained import save_export

    dit_export = save_export(tmp_path / "dit_export", module.dit, module.export_stats())
    assert json.loads((dit_export / "stats.json").read_text())["vae"]["source"] == str((tmp_path / "cog").resolve())
    out = tmp_path / "sample.mp4"
    assert main(["sample", "--ckpt", str(dit_export), "--prompt", "a red ball", "--out", str(out), "--num-frames", "9",
                 "--height", "32", "--width", "48", "--steps", "2"]) == 0
    with av.open(str(out)) as f:
        frames = [(fr.height, fr.width) for fr in f.decode(video=0)]
    assert frames == [(32, 48)] * 9
    with pytest.raises(ValueError, match="in_channels=8 but the VAE at .* has 4 latent channels"):
        DiTModule(tiny_dit(in_channels=8), vae=str(tmp_path / "cog"), text_max_length=16)


def test_vae_stats_measures_and_load_vae_uses_them(tmp_path, shards, capsys):
    from videogen.cli import main
    from videogen.encoding import LatentMoments

    vae_dir = save_vae(tmp_path / "wan", "AutoencoderKLWan", WAN)
    out = tmp_path / "wan.stats.json"
    assert main(["vae-stats", "--vae", str(vae_dir), "--data", str(shards), "--out", str(out),
                 "--max-clips", "3", "--max-frames", "5"]) == 0
    record = json.loads(out.read_text())
    assert record["measured_clips"] == 3 and record["vae"] == str(vae_dir.resolve())
    export = load_vae(out)
    assert export.stats["latent_mean"] == pytest.approx(record["latent_mean"])
    assert export.stats["latent_mean"] != WAN["latents_mean"] and export.stats["stats_from"].startswith("measured")
    assert export.manifest["weights_sha256"] == load_vae(vae_dir).manifest["weights_sha256"]  # same cache identity
    # the numbers are the moments of the posterior means of those clips (first 5 frames, as eval-vae trims)
    from videogen.data.decode import make_decoder
    from videogen.data.shards import expand_urls
    from videogen.data.stages import Skips
    from videogen.evaluation.reconstruction import frames_to_video, iter_records

    decoder, moments = make_decoder("auto"), LatentMoments(4)
    for i, r in zip(range(3), iter_records(expand_urls(str(shards)), decoder, Skips())):
        frames = decoder.decode(r.media, list(range(5)))
        moments.add(encode_latents(export.module, frames_to_video(frames, "cpu")))
    mean, var = moments.result()
    assert record["latent_mean"] == pytest.approx(mean.tolist(), abs=1e-5)
    assert record["latent_std"] == pytest.approx(var.sqrt().tolist(), abs=1e-5)
    # stats measured with other weights are refused; so is writing into the weights folder
    save_vae(vae_dir, "AutoencoderKLWan", WAN, seed=3)
    with pytest.raises(RefusedFile, match="measured with other weights"):
        load_vae(out)
    assert main(["vae-stats", "--vae", str(vae_dir), "--data", str(shards), "--out",
                 str(vae_dir / "stats.json")]) == 2
    assert "inside the VAE's weights folder" in capsys.readouterr().err


def test_eval_vae_reconstructs_with_a_diffusers_vae(tmp_path, shards, capsys):
    from videogen.cli import main

    cog = save_vae(tmp_path / "cog", "AutoencoderKLCogVideoX", COG)
    assert main(["eval-vae", "--vae", str(cog), "--data", str(shards), "--json", "--max-clips", "2",
                 "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_clips"] == 2 and report["temporal_compression"] == 4 and report["spatial_compression"] == 8
    assert [c["frames"] for c in report["clips"]] == [9, 9]  # 9 and 10 frames trimmed to 1 + k*8
    assert all(5 < c["psnr"] < 60 for c in report["clips"])
