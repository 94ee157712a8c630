"""A curated shard set is an ordinary dataset: VideoDataModule streams it (filtering by score when
asked, with the drops counted and epochs sized by what passes) and the real VAEModule trains on it
through a Lightning Trainer."""

from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch.optim import AdamW

from curation_fixtures import labelled  # noqa: F401  (fixture)
from data_recipes.curate import CurateOptions, curate
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.data.score_filter import FilterError
from videogen.models.vae import VideoAutoencoder
from videogen.modules.lr_schedule import WarmupCosine
from videogen.modules.vae import VAEModule

BUCKETS = [Bucket(9, 64, 96), Bucket(9, 96, 64), Bucket(9, 64, 64)]


@pytest.fixture(scope="module")
def curated(labelled, tmp_path_factory):
    """The labelled set curated twice: dropping (default) and keeping everything, flagged."""
    src, labels = labelled
    base = tmp_path_factory.mktemp("curated")
    dropped = curate(str(src), base / "dropped", CurateOptions(), progress=False, histograms=False)
    kept = curate(str(src), base / "all", CurateOptions(keep_all=True), progress=False, histograms=False)
    return base, dropped, kept, labels


def keys_of_one_epoch(dm):
    loader = dm.train_dataloader()
    keys = [k for batch in loader for k in batch["key"]]
    return keys, dict(loader.skipped)


def test_filter_at_load_time_drops_and_counts(curated):
    base, _, kept, _ = curated
    expr = "not static and not black and not jittery and not duplicate"
    passing = {s["key"] for s in kept["samples"] if s["kept"]
               and not any(s["scores"].get(f) for f in ("static", "black", "jittery", "duplicate"))}
    dm = VideoDataModule(str(base / "all"), bucketer=Bucketer(BUCKETS, batch_size=1),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=0), filter=expr)
    keys, skipped = keys_of_one_epoch(dm)
    assert len(keys) == len(passing)  # the epoch is sized by the samples that pass (manifest counts would say more)
    assert set(keys) == passing
    # every sample read and not passing is counted (the epoch ends at its last passing sample, so one that
    # comes after it in the shards is not read at all)
    assert set(skipped) == {"filtered_out"} and 0 < skipped["filtered_out"] <= kept["output"]["samples"] - len(passing)
    # the same set as curating with dropping
    dropped_keys = {s["key"] for s in curated[1]["samples"] if s["kept"]}
    assert passing == dropped_keys


def test_filter_errors_name_what_is_wrong(curated, labelled):
    base = curated[0]
    with pytest.raises(FilterError, match="column 9: expected a number"):
        VideoDataModule(str(base / "all"), bucketer=Bucketer(BUCKETS), filter="motion >")
    dm = VideoDataModule(str(base / "all"), bucketer=Bucketer(BUCKETS), loader=LoaderOptions(num_workers=0),
                         filter="motoin > 0.1")
    with pytest.raises(FilterError, match="unknown name 'motoin'.*duplicate.*motion"):
        dm.train_dataloader()
    raw = VideoDataModule(str(labelled[0]), bucketer=Bucketer(BUCKETS), loader=LoaderOptions(num_workers=0),
                          filter="motion > 0.1")
    with pytest.raises(FilterError, match="lists no curation scores: run `videogen curate`"):
        raw.train_dataloader()


def test_vae_trains_on_curated_shards(curated, tmp_path):
    base = curated[0]
    torch.manual_seed(0)
    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    module = VAEModule(vae, optimizer=partial(AdamW, lr=3e-3, betas=(0.5, 0.9), weight_decay=0.0),
                       lr_scheduler=partial(WarmupCosine, warmup=1))
    dm = VideoDataModule(str(base / "dropped"),
                         bucketer=Bucketer([Bucket(9, 32, 48), Bucket(9, 48, 32), Bucket(9, 32, 32)], batch_size=2),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=4))
    trainer = Trainer(accelerator="cpu", max_steps=6, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, enable_checkpointing=False, default_root_dir=str(tmp_path), limit_val_batches=0)
    before = [p.detach().clone() for p in vae.parameters()]
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 6
    assert torch.isfinite(trainer.logged_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.parameters()))
