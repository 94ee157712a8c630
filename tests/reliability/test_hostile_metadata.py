"""Hostile metadata (issue 16): json shape values that are Infinity, NaN, negative or absurd, through a
real training epoch and an exact resume; manifests of pipe: shards given explicitly; malformed
dataset.json files as one-line errors."""

from __future__ import annotations

import json
import logging
from functools import partial

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from hostile_shards_helpers import raw_tar, sample_members
from reliability_helpers import clip_sample, fit_config, make_shards, tiny_vae_model
from videogen.cli import main
from videogen.data import Bucketer, LoaderOptions, StreamOptions, VideoDataModule
from videogen.data.buckets import Bucket
from videogen.data.manifest import DatasetManifest, scan_shard
from videogen.modules.lr_schedule import WarmupCosine

HOSTILE = {"fps_inf": {"fps": float("inf")}, "width_inf": {"width": float("inf")},
           "frames_nan": {"num_frames": float("nan")}, "height_negative": {"height": -64},
           "width_huge": {"width": 10**9}, "duration_inf": {"duration": float("inf")},
           "fps_negative": {"fps": -12}, "frames_bool": {"num_frames": True}}


def hostile_shards(folder):
    """Two shards of good 64x64 clips, the first also holding one clip per hostile json value; no
    manifest (as a downloaded foreign set), so the data module scans them at setup."""
    folder.mkdir(parents=True)
    for s in range(2):
        samples = [clip_sample(f"s{s}g{i}", 64, 64, 9, seed=10 * s + i) for i in range(6)]
        if s == 0:
            for key, bad in HOSTILE.items():
                sample = clip_sample(key, 64, 64, 9, seed=99)
                sample["json"] = {**sample["json"], **bad}
                samples.insert(2, sample)
        raw_tar(folder / f"shard-{s:06d}.tar", [m for x in samples for m in sample_members(x)])
    assert "Infinity" in (folder / "shard-000000.tar").read_bytes().decode("latin-1")
    return folder


class KeyRecorder(Callback):
    def __init__(self):
        self.keys: list[list[str]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.keys.append(list(batch["key"]))


def fit(shards, root, max_steps, ckpt_path=None, every=None):
    from videogen.models.vae import VideoAutoencoder
    from videogen.modules.vae import VAEModule

    torch.manual_seed(0)
    dm = VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 32)], batch_size=2),
                         clips=StreamOptions(target_fps=12.0), loader=LoaderOptions(num_workers=0, shuffle_buffer=4),
                         filter="width > 0 and fps > 1")
    module = VAEModule(VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                                        spatial_compression=4, patch_size=2, patch_size_t=2),
                                        lr_scheduler=partial(WarmupCosine, warmup=1))
    recorder = KeyRecorder()
    callbacks = [recorder]
    if every:
        callbacks.append(ModelCheckpoint(dirpath=str(root / "ckpt"), filename="step{step}", every_n_train_steps=every,
                                         save_top_k=-1, auto_insert_metric_name=False))
    trainer = Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(root), limit_val_batches=0,
                      callbacks=callbacks)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, recorder.keys


def test_infinite_fps_and_width_through_training_epochs_and_an_exact_resume(tmp_path, caplog):
    """On 99e149e `"width": Infinity` crashed setup (the filter's epoch sizing) and `"fps": Infinity`
    crashed `plan` in a worker (OverflowError with target_fps), and a resume replayed the crash. Now
    each hostile record is a counted, logged `bad_meta` skip, every epoch, and a resume is exact."""
    caplog.set_level(logging.WARNING, logger="videogen.data")
    shards = hostile_shards(tmp_path / "shards")
    trainer, keys = fit(shards, tmp_path / "a", max_steps=6, every=4)
    assert len(trainer.train_dataloader) == 6 and trainer.global_step == 6  # the epoch: 12 good clips, batch 2
    assert trainer.train_dataloader.skipped == {"bad_meta": len(HOSTILE)}, trainer.train_dataloader.skipped
    assert not {k for step in keys for k in step} & set(HOSTILE)
    for key in HOSTILE:
        assert f"skipped {key} in" in caplog.text and "bad_meta" in caplog.text, key
    resumed, after = fit(shards, tmp_path / "b", max_steps=6, ckpt_path=str(tmp_path / "a" / "ckpt" / "step4.ckpt"))
    assert resumed.global_step == 6 and after == keys[4:]  # the same batches, no crash replayed
    assert resumed.train_dataloader.skipped == trainer.train_dataloader.skipped


def test_hostile_shape_values_are_bad_meta_in_the_reader_and_the_manifest_scan(tmp_path):
    from videogen.data import stages
    from videogen.data.decode import make_decoder

    shards = hostile_shards(tmp_path / "shards")
    skips = stages.Skips(max_logged=0, keep=True)
    records = list(stages.parse(stages.group_samples(stages.read_tar([str(shards / "shard-000000.tar")], skips)),
                                skips, make_decoder("auto")))
    assert len(records) == 6 and {r["key"]: r["reason"] for r in skips.records} == dict.fromkeys(HOSTILE, "bad_meta")
    assert scan_shard(shards / "shard-000000.tar").num_samples == 6  # the manifest counts what the stream keeps
    stats = DatasetManifest(shards=[scan_shard(p) for p in sorted(shards.glob("*.tar"))]).totals()
    assert sum(stats.shapes.values()) == stats.num_samples == 12 and "64x64/9@12" in stats.shapes
    # our writer, given such a record, counts it but keeps none of its shape claims
    from videogen.data.writer import TarShardWriter

    with TarShardWriter(tmp_path / "w.tar") as writer:
        for i, bad in enumerate(HOSTILE.values()):
            writer.write({"__key__": f"k{i}", "txt": "x", "json": {"width": 64, "height": 64, "num_frames": 9,
                                                                  "fps": 12, **bad}})
    assert writer.stats.num_samples == len(HOSTILE) and not writer.stats.shapes


# ---- manifests ----------------------------------------------------------------------------------------


def test_pipe_shards_with_an_explicit_manifest(tmp_path):
    """On 99e149e the manifest of `pipe:cat DIR/x.tar` was read by running `pipe:cat DIR/dataset.json`,
    a command made by cutting the user's at its last '/'. Now it is named (data.manifest) or refused."""
    from videogen.data.manifest import ManifestError

    shards = make_shards(tmp_path / "shards", n=4, shards=2)
    urls = [f"pipe:cat {p}" for p in sorted(shards.glob("*.tar"))]
    dm = VideoDataModule(urls, bucketer=Bucketer([Bucket(9, 32, 32)], batch_size=2),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=0),
                         manifest=f"pipe:cat {shards / 'dataset.json'}")
    loader = dm.train_dataloader()
    assert len(loader) == 4
    keys = sorted(k for b in loader for k in b["key"])
    assert len(keys) == 8 and len(set(keys)) == 8 and not loader.skipped
    with pytest.raises(ManifestError, match="data.manifest"):
        VideoDataModule(urls, bucketer=Bucketer([Bucket(9, 32, 32)], batch_size=2), loader=LoaderOptions(num_workers=0)).train_dataloader()
    dm = VideoDataModule(urls, bucketer=Bucketer([Bucket(9, 32, 32)]), loader=LoaderOptions(num_workers=0),
                         manifest=str(tmp_path / "nowhere.json"))
    with pytest.raises(ManifestError, match="nowhere.json: no dataset.json can be read there"):
        dm.train_dataloader()


MALFORMED = {
    "no_shards": {"format": "videogen-shards/1"},
    "shards_not_a_list": {"format": "videogen-shards/1", "shards": "shard-000000.tar"},
    "bad_count": {"format": "videogen-shards/1", "shards": [{"name": "a.tar", "num_samples": "many"}]},
    "bad_shape": {"format": "videogen-shards/1", "shards": [{"name": "a.tar", "shapes": {"64x64": 3}}]},
    "infinite_shape": {"format": "videogen-shards/1", "shards": [{"name": "a.tar", "shapes": {"64x64/9@inf": 3}}]},
    "entry_not_an_object": {"format": "videogen-shards/1", "shards": [7]},
    "created_by_a_list": {"format": "videogen-shards/1", "shards": [], "created_by": []},
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_manifest_is_one_clear_error(tmp_path, name):
    from videogen.data.manifest import ManifestError

    with pytest.raises(ManifestError) as e:
        DatasetManifest.from_text(json.dumps(MALFORMED[name]), "x/dataset.json")
    message = str(e.value)
    assert message.startswith("x/dataset.json: ") and "\n" not in message, message
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ManifestError, match="not valid JSON"):
        DatasetManifest.from_text(deep, "x/dataset.json")


def test_a_malformed_manifest_through_fit_and_inspect_is_one_line(tmp_path, capsys):
    shards = make_shards(tmp_path / "shards", n=2, shards=1)
    (shards / "dataset.json").write_text(json.dumps(MALFORMED["bad_shape"]))
    config = fit_config(tmp_path / "fit.yaml", tmp_path / "run", shards, tiny_vae_model(), max_steps=1)
    assert main(["fit", "-c", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("videogen: error: ") and "dataset.json: shard 'a.tar': shape '64x64'" in err[-1], err
    assert main(["inspect", str(shards), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("videogen inspect: error: ") and "dataset.json" in err[0], err


def test_shape_fields_that_are_not_numbers_are_probed_as_before(tmp_path):
    """Another tool's json with strings or floats where videogen writes ints is not a hostile claim: the
    container is probed (as on 99e149e), so such foreign shards keep loading."""
    from videogen.data import stages
    from videogen.data.decode import make_decoder

    sample = clip_sample("foreign", 96, 64, 9)
    sample["json"] = {"width": "96", "height": 64.0, "num_frames": "nine", "fps": "12", "duration": "0:00:00.75"}
    raw_tar(tmp_path / "f.tar", sample_members(sample))
    skips = stages.Skips(max_logged=0)
    (r,) = stages.parse(stages.group_samples(stages.read_tar([str(tmp_path / "f.tar")], skips)), skips,
                        make_decoder("auto"))
    assert (r.width, r.height, r.num_frames) == (96, 64, 9) and not skips.counts
    assert scan_shard(tmp_path / "f.tar").shapes == {"96x64/9@12": 1}
