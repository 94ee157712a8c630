"""Throughput through real Trainer runs on real shards: the DiT's tokens and analytic FLOPs per
bucket, the VAE's FLOPs counted on each bucket's first step, logged to a CSV logger."""

import csv
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from conftest import tiny_export
from videogen.callbacks.throughput import Throughput, clip_shapes
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.models.dit import DiT
from videogen.models.vae import VideoAutoencoder
from videogen.modules.dit import DiTModule
from videogen.modules.lr_schedule import WarmupCosine
from videogen.modules.vae import VAEModule

PEAK = 1e12  # a stated peak: MFU on a CPU needs one


def fit(tmp_path, shards, module, steps=4):
    dm = VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 48), Bucket(9, 32, 32)], batch_size=2),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=0))
    cb = Throughput(peak_flops=PEAK)
    logger = CSVLogger(tmp_path, name="csv")
    Trainer(accelerator="cpu", max_steps=steps, logger=logger, log_every_n_steps=2, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[cb]).fit(module, datamodule=dm)
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    return cb, rows


def test_dit_tokens_and_analytic_mfu_per_bucket(tmp_path, clip_shards):
    torch.manual_seed(0)
    module = DiTModule(DiT(in_channels=4, hidden_size=32, depth=1, num_heads=2, text_dim=384),
                       vae=str(tiny_export(tmp_path / "vae")), text_max_length=16, ema_decay=None)
    cb, rows = fit(tmp_path, clip_shards, module)
    m = cb.last
    # 9x32x48 pixels -> latents 3x8x12 (VAE 4x4x4) -> 3x4x6 = 72 tokens (patch 1x2x2); 9x32x32 -> 48
    per_clip = {"9x32x48": 72, "9x32x32": 48}
    buckets = [b for b in per_clip if f"throughput/{b}/tokens_per_s" in m]
    assert buckets
    for b in buckets:
        tokens_per_step = m[f"throughput/{b}/tokens_per_s"] * m[f"throughput/{b}/step_s"]
        assert tokens_per_step == pytest.approx(2 * per_clip[b])  # batch of 2 clips
        flops = 3 * module.dit.forward_flops([per_clip[b]] * 2, 16)
        assert m[f"throughput/{b}/mfu"] * PEAK * m[f"throughput/{b}/step_s"] == pytest.approx(flops)
        assert m[f"throughput/{b}/clips_per_s"] * m[f"throughput/{b}/step_s"] == pytest.approx(2)
    assert 0 <= m["throughput/data_wait"] < 1 and m["throughput/tflops_per_s"] > 0
    logged = [r for r in rows if r.get("throughput/tokens_per_s")]
    assert len(logged) == 2 and all(float(r["throughput/mfu"]) > 0 for r in logged)  # steps 2 and 4


def test_vae_flops_counted_once_per_bucket(tmp_path, clip_shards):
    torch.manual_seed(0)
    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1,), temporal_compression=4,
                           spatial_compression=4, patch_size=4, patch_size_t=4)
    cb, rows = fit(tmp_path, clip_shards, VAEModule(vae, lr_scheduler=partial(WarmupCosine, warmup=1)))
    assert set(cb.flops_per_bucket) <= {"9x32x48", "9x32x32"} and cb.flops_per_bucket
    from torch.utils.flop_counter import FlopCounterMode

    for bucket, per_clip in cb.flops_per_bucket.items():
        t, h, w = (int(v) for v in bucket.split("x"))
        with FlopCounterMode(display=False) as counter:
            vae.encode(torch.zeros(1, 3, t, h, w)).mode()
        assert per_clip > 2 * counter.get_total_flops()  # encode + decode, forward and backward
    m = cb.last
    assert "throughput/tokens_per_s" not in m and m["throughput/megapixels_per_s"] > 0
    assert m["throughput/mfu"] > 0 and any(r.get("throughput/clips_per_s") for r in rows)


def test_clip_shapes_of_packed_and_bucket_batches():
    assert clip_shapes({"video": torch.zeros(3, 3, 9, 16, 24)}) == [(9, 16, 24)] * 3
    assert clip_shapes({"video": [torch.zeros(3, 5, 8, 8), torch.zeros(3, 9, 16, 8)]}) == [(5, 8, 8), (9, 16, 8)]
