"""The DiT trains from a latent cache (`videogen encode --buckets-from`) as it would from pixels:
the cached latents are the ones the pixel path computes, no VAE encode runs during training, and
another VAE's cache is refused before the first step."""

import io
import json
import random
import tarfile

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from conftest import tiny_dit, tiny_export
from videogen.pipelines.encode import buckets_from, encode
from videogen.data import Bucket, Bucketer, LoaderOptions, StreamOptions, VideoDataModule
from videogen.data import stages
from videogen.encoding import encode_latents
from videogen.modules.dit import DiTModule

BUCKETS = [{"num_frames": 9, "height": 64, "width": 96}, {"num_frames": 9, "height": 64, "width": 64}]


@pytest.fixture
def cache(tmp_path, clip_shards):
    vae_dir = tiny_export(tmp_path / "vae")
    config = tmp_path / "dit.yaml"
    data = {"bucketer": {"buckets": BUCKETS}, "clips": {"span_clip": True}}
    config.write_text(json.dumps({"data": {"init_args": data}}))  # JSON is YAML
    out = encode(str(vae_dir), str(clip_shards), tmp_path / "lat", buckets=buckets_from(config), num_workers=0,
                 accelerator="cpu", devices=1, progress=False)
    return {"vae": vae_dir, "out": out, "pixels": clip_shards}


def datamodule(shards, **kw):
    return VideoDataModule(str(shards), val_shards=str(shards),
                           bucketer=Bucketer([Bucket(**b) for b in BUCKETS], batch_size=2),
                           clips=StreamOptions(span_clip=True), loader=LoaderOptions(num_workers=0, shuffle_buffer=4),
                           **kw)


def test_cached_latents_equal_the_pixel_path(cache):
    from videogen.encoding import load_vae

    vae = load_vae(cache["vae"]).module
    manifest = json.loads((cache["out"] / "dataset.json").read_text())
    assert manifest["num_samples"] == 24 and manifest["created_by"]["args"]["span_clip"] is True
    cached, pixel = {}, {}
    for shards, into in ((cache["out"], cached), (cache["pixels"], pixel)):
        dm = datamodule(shards)
        for batch in dm.val_dataloader():
            batch = stages.to_float(batch)
            z = batch["latent"] if "latent" in batch else encode_latents(vae, batch["video"])
            into.update(zip(batch["key"], z))
    assert cached.keys() == pixel.keys() and len(cached) >= 8
    for key, z in cached.items():
        assert z.shape == pixel[key].shape
        torch.testing.assert_close(z, pixel[key].to(torch.float16).float(), atol=2e-3, rtol=1e-2)


def test_dit_trains_from_the_cache_without_encoding(cache, tmp_path):
    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(cache["vae"]), text_max_length=16, cond_prob=0.5, ema_decay=0.9)

    def no_encode(*args, **kwargs):
        raise AssertionError("the VAE encoder ran although the batch came from a latent cache")

    module.vae.encode = no_encode
    trainer = Trainer(accelerator="cpu", max_steps=3, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(tmp_path), limit_val_batches=1, val_check_interval=3,
                      check_val_every_n_epoch=None, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule(cache["out"]))
    assert trainer.global_step == 3 and torch.isfinite(trainer.logged_metrics["train/loss"])
    assert torch.isfinite(trainer.logged_metrics["val/loss"])


def test_another_vaes_cache_is_refused_before_any_step(cache, tmp_path):
    other = tiny_export(tmp_path / "other", seed=1)
    module = DiTModule(tiny_dit(), vae=str(other), text_max_length=16)
    trainer = Trainer(accelerator="cpu", max_steps=2, enable_progress_bar=False, logger=False,
                      default_root_dir=str(tmp_path), limit_val_batches=0)
    with pytest.raises(ValueError, match="latents were written by the VAE at"):
        trainer.fit(module, datamodule=datamodule(cache["out"]))
    assert trainer.global_step == 0


def test_bad_latent_members_are_counted_skips(cache, tmp_path):
    """A corrupt array, an array that does not match its json and a json without the shape: skipped, by reason."""
    with tarfile.open(cache["out"] / "shard-000000.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        seen = 0
        for m, data in members:
            if m.name.endswith(".latent.npy"):
                seen += 1
                if seen == 1:
                    data = b"\x93NUMPY garbage"
                elif seen == 2:  # a readable array of the wrong shape for its json
                    buf = io.BytesIO()
                    np.save(buf, np.zeros((4, 1, 2, 2), np.float16))
                    data = buf.getvalue()
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    skips = stages.Skips()
    records = list(stages.parse(stages.group_samples(stages.read_tar([str(bad)], skips, 2**30)), skips, None))
    assert len(records) == 6 and all(r.ext == "latent.npy" for r in records)
    bucketer = datamodule(bad).bucketer
    planned = list(stages.plan(records, bucketer, skips, random.Random(0), random_clip=False))
    items = stages.decode_batch(planned, stages.TimedDecoder(None, None), skips, fill=False)
    assert len(items) == 4 and skips.counts == {"decode_error": 2}
    assert all(f.dtype == np.float16 and f.ndim == 4 for _, f in items)
    # a latent sample whose json lacks the encoded shape is refused in parse
    raw = stages.RawSample("k", "u", {"latent.npy": members[0][1], "txt": b"a caption", "json": b"{}"})
    skips = stages.Skips()
    assert list(stages.parse([raw], skips, None)) == [] and skips.counts == {"bad_json": 1}
