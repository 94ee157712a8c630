"""VAEModule through a real Lightning Trainer on real shards: losses, NaN skips, GAN schedule,
exact resume with both optimizers, export folders, video logging."""

import itertools
import json
import math
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.optim import AdamW

from videogen.callbacks.export import StageExport
from videogen.commands.export import export_checkpoint
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.models.vae import PatchDiscriminator3D, VideoAutoencoder
from videogen.modules.lr_schedule import WarmupCosine
from videogen.evaluation.reconstruction import psnr, ssim
from videogen.modules.vae import VAEModule
from videogen.pretrained import load_export


def tiny_vae():
    return VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                            spatial_compression=4, patch_size=2, patch_size_t=2)


def datamodule(shards, **kw):
    return VideoDataModule(str(shards), val_shards=str(shards),
                           bucketer=Bucketer([Bucket(9, 32, 48), Bucket(9, 32, 32)], batch_size=2),
                           loader=LoaderOptions(num_workers=0, shuffle_buffer=4, val_batches=2), **kw)


def trainer(tmp_path, steps, **kw):
    kw.setdefault("logger", False)
    return Trainer(accelerator="cpu", max_steps=steps, enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=str(tmp_path), limit_val_batches=0, **kw)


def test_metrics_known_values():
    x = torch.zeros(1, 3, 1, 16, 16)
    assert psnr(x, x + 0.2).item() == pytest.approx(-10 * math.log10(0.01), rel=1e-4)  # (0.2 / 2)^2 = 0.01
    noise = torch.empty_like(x).uniform_(-1, 1)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-4) and ssim(x, noise).item() < 0.5


def test_training_lowers_loss_and_measures_latent_stats(tmp_path, clip_shards):
    torch.manual_seed(0)
    module = VAEModule(tiny_vae(), optimizer=partial(AdamW, lr=3e-3, betas=(0.5, 0.9), weight_decay=0.0),
                       lr_scheduler=partial(WarmupCosine, warmup=1))
    t = trainer(tmp_path, 30)
    t.fit(module, datamodule=datamodule(clip_shards))
    logged = t.logged_metrics
    assert torch.isfinite(logged["train/loss"]) and logged["train/psnr"] > 12
    stats = module.latent_stats()
    assert stats["measured_batches"] == 30 and len(stats["latent_std"]) == 4
    assert all(s > 0 for s in stats["latent_std"]) and stats["spatial_compression"] == 4


def test_nan_loss_skips_the_step_and_too_many_stop_the_run(tmp_path, clip_shards):
    class Poisoned(VideoDataModule):
        def on_after_batch_transfer(self, batch, idx):
            batch = super().on_after_batch_transfer(batch, idx)
            if self.poison():
                batch["video"][0, 0, 0, 0, 0] = float("nan")
            return batch

    torch.manual_seed(0)
    module = VAEModule(tiny_vae(), max_bad_steps=3)
    dm = datamodule(clip_shards)
    dm.__class__ = Poisoned
    calls = iter([True, False, False, True, True, True, True])
    dm.poison = lambda: next(calls, True)
    before = {k: v.clone() for k, v in module.vae.state_dict().items()}
    with pytest.raises(FloatingPointError, match="3 non-finite losses in a row"):
        trainer(tmp_path, 20).fit(module, datamodule=dm)
    assert int(module.bad_steps) == 4  # 1 skipped, 2 good steps, then 3 in a row stop the run
    assert all(torch.isfinite(v).all() for v in module.vae.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in module.vae.state_dict().items())


def test_discriminator_starts_at_its_step(tmp_path, clip_shards):
    torch.manual_seed(0)
    module = VAEModule(tiny_vae(), discriminator=PatchDiscriminator3D(base_channels=8, num_layers=2), gan_start_step=3)
    d0 = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    trainer(tmp_path, 3).fit(module, datamodule=datamodule(clip_shards))
    assert all(torch.equal(d0[k], v) for k, v in module.discriminator.state_dict().items())  # not yet
    t = trainer(tmp_path, 5)
    t.fit(module, datamodule=datamodule(clip_shards))
    assert any(not torch.equal(d0[k], v) for k, v in module.discriminator.state_dict().items())
    assert "train/d" in t.logged_metrics and "train/g" in t.logged_metrics


@pytest.mark.slow
def test_gan_run_resumes_exactly_with_both_optimizers_and_ema(tmp_path, clip_shards):
    def run(root, steps, ckpt=None, every=None):
        torch.manual_seed(0)
        module = VAEModule(tiny_vae(), discriminator=PatchDiscriminator3D(base_channels=8, num_layers=2),
                           gan_start_step=2, ema_decay=0.9)
        cbs = [ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=every, save_last=True)] if every else []
        t = trainer(root, steps, callbacks=cbs)
        t.fit(module, datamodule=datamodule(clip_shards), ckpt_path=ckpt)
        return module

    reference = run(tmp_path / "a", 8)
    run(tmp_path / "b", 4, every=4)
    ckpt = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)  # nothing pickled in it
    assert len(ckpt["optimizer_states"]) == 2 and ckpt["videogen"]["stage"] == "vae"
    resumed = run(tmp_path / "b", 8, ckpt=tmp_path / "b" / "ckpt" / "last.ckpt")
    for name in ("vae", "discriminator", "ema"):
        a, b = getattr(reference, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), name
    assert torch.allclose(reference.latent_mean, resumed.latent_mean, atol=1e-6)


def test_export_at_fit_end_and_from_checkpoint_agree(tmp_path, clip_shards):
    torch.manual_seed(0)
    module = VAEModule(tiny_vae(), ema_decay=0.5)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    logger = TensorBoardLogger(tmp_path, name="tb")
    t = Trainer(accelerator="cpu", max_steps=4, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=str(tmp_path), logger=logger, val_check_interval=4, limit_val_batches=1,
                num_sanity_val_steps=0, callbacks=[ckpt, StageExport(str(tmp_path / "export"))])
    t.fit(module, datamodule=datamodule(clip_shards))
    exported = load_export(tmp_path / "export", expect=VideoAutoencoder)
    stats = json.loads((tmp_path / "export" / "stats.json").read_text())
    assert stats["latent_channels"] == 4 and stats["temporal_compression"] == 4 and stats["measured_batches"] == 4
    ema = module.ema.module.state_dict()
    assert all(torch.equal(ema[k], v) for k, v in exported.module.state_dict().items())  # EMA weights exported
    again = export_checkpoint(tmp_path / "ckpt" / "last.ckpt", tmp_path / "export2")
    a = (tmp_path / "export" / "model.safetensors").read_bytes()
    assert a == (again / "model.safetensors").read_bytes()
    assert json.loads((again / "stats.json").read_text()) == stats
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    assert "val/reconstruction" in acc.Tags()["images"]  # the original | reconstruction video (a GIF summary)


def test_export_refuses_bad_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        export_checkpoint(tmp_path / "nope.ckpt", tmp_path / "out")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="no 'videogen' record"):
        export_checkpoint(tmp_path / "plain.ckpt", tmp_path / "out")


def test_bf16_mixed_precision_trains(tmp_path, clip_shards):
    torch.manual_seed(0)
    module = VAEModule(tiny_vae(), optimizer=partial(AdamW, lr=3e-3, betas=(0.5, 0.9), weight_decay=0.0),
                       lr_scheduler=partial(WarmupCosine, warmup=1))
    t = trainer(tmp_path, 4, precision="bf16-mixed")
    t.fit(module, datamodule=datamodule(clip_shards))
    assert torch.isfinite(t.logged_metrics["train/loss"]) and int(module.bad_steps) == 0
    assert all(p.dtype == torch.float32 for p in module.vae.parameters())  # master weights stay fp32


def test_exported_latent_stats_are_a_fresh_measurement_with_the_exported_weights(tmp_path, clip_shards):
    # no validation at the last step: StageExport measures at fit end with the EMA weights it exports
    torch.manual_seed(0)
    module = VAEModule(tiny_vae(), ema_decay=0.5,
                       optimizer=partial(AdamW, lr=3e-3, betas=(0.5, 0.9), weight_decay=0.0),
                       lr_scheduler=partial(WarmupCosine, warmup=1))
    t = trainer(tmp_path, 6, callbacks=[StageExport(str(tmp_path / "export"), stats_batches=2)])
    dm = datamodule(clip_shards)
    t.fit(module, datamodule=dm)
    stats = json.loads((tmp_path / "export" / "stats.json").read_text())
    assert stats["measured_with"] == "export weights" and stats["measured_step"] == 6
    exported = load_export(tmp_path / "export", expect=VideoAutoencoder).module.eval()
    z = []
    with torch.no_grad():
        for batch in itertools.islice(iter(dm.val_dataloader()), 2):  # the same clips, measured afresh
            z.append(exported.encode(batch["video"].float() / 127.5 - 1).mode().transpose(0, 1).flatten(1))
    z = torch.cat(z, 1).double()  # c (clips t h w)
    assert stats["measured_clips"] == 4
    assert stats["latent_mean"] == pytest.approx(z.mean(1).tolist(), abs=1e-5)
    assert stats["latent_std"] == pytest.approx(z.std(1, unbiased=False).tolist(), rel=1e-4)
    running = module.latent_mean.tolist()  # the online encoder's running mean: another network
    assert max(abs(a - b) for a, b in zip(running, stats["latent_mean"])) > 1e-3
