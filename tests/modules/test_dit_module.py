"""DiTModule on real shards through a real Trainer, with a (tiny, random) VAE export and the real
MiniLM text encoder; export; `videogen sample` writes playable mp4s in text, image and extend modes."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.optim import AdamW

from conftest import make_png, tiny_dit, tiny_export
from videogen.callbacks.export import StageExport
from videogen.cli import main
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.data.decode import PyAVDecoder
from videogen.models.dit import DiT
from videogen.modules.dit import DiTModule
from videogen.pretrained import load_export


def datamodule(shards):
    return VideoDataModule(str(shards), val_shards=str(shards),
                           bucketer=Bucketer([Bucket(9, 32, 48), Bucket(9, 32, 32)], batch_size=2),
                           loader=LoaderOptions(num_workers=0, shuffle_buffer=4, val_batches=1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few real training steps and the export they produce (shared by the tests below)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import clip_sample, write_tar

    tmp = tmp_path_factory.mktemp("dit")
    shards = tmp / "shards"
    shards.mkdir()
    write_tar(shards / "shard-000000.tar", [clip_sample(f"k{i}", 96 if i % 2 else 64, 64, 9, seed=i) for i in range(8)])
    vae_dir = tiny_export(tmp / "vae")
    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(vae_dir), text_max_length=16, cond_prob=0.5, ema_decay=0.9,
                       val_prompts=["a red square moving right"], val_shape=(9, 32, 48), val_steps=2,
                       optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0))
    trainer = Trainer(accelerator="cpu", max_steps=6, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(tmp), val_check_interval=6, check_val_every_n_epoch=None,
                      limit_val_batches=1,
                      num_sanity_val_steps=0, callbacks=[ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True),
                                                         StageExport(str(tmp / "export"))])
    trainer.fit(module, datamodule=datamodule(shards))
    return {"tmp": tmp, "module": module, "trainer": trainer, "vae": vae_dir, "shards": shards}


def test_training_logs_loss_per_bucket_and_timestep_range(trained):
    logged = trained["trainer"].logged_metrics
    assert torch.isfinite(logged["train/loss"]) and "val/loss" in logged
    assert any(k.startswith("train/loss_bucket/9x32x") for k in logged)
    assert any(k.startswith("train/loss_t/") for k in logged)
    assert not any(k.startswith("text_encoder") or "vae." in k for k in trained["module"].state_dict())


def test_export_records_vae_and_text_encoder(trained):
    exported = load_export(trained["tmp"] / "export", expect=DiT)
    stats = exported.stats
    assert stats["vae"]["weights_sha256"] == json.loads((trained["vae"] / "manifest.json").read_text())["weights_sha256"]
    assert stats["frame_conditioning"] and stats["latent_channels"] == 4 and stats["text_max_length"] == 16
    assert not any(p.requires_grad for p in trained["module"].ema.parameters())  # DDP: no unused trainable params
    ema = trained["module"].ema.module.state_dict()
    assert all(torch.equal(ema[k], v) for k, v in exported.module.state_dict().items())
    ckpt = torch.load(trained["tmp"] / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["videogen"]["stage"] == "dit" and not any(k.startswith("vae") for k in ckpt["state_dict"])


def test_conditioned_frames_do_not_count_in_the_loss(trained):
    module = trained["module"]
    batch = next(iter(datamodule(trained["shards"]).train_dataloader()))
    batch["video"] = batch["video"].float() / 127.5 - 1
    import random

    module.hparams.cond_prob = 1.0
    try:
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        loss, _ = module.diffusion_loss(module.dit, batch, g(), random.Random(3))
        mask = module._cond_mask(torch.zeros(2, 4, 3, 8, 12), random.Random(3))
    finally:
        module.hparams.cond_prob = 0.5
    assert torch.isfinite(loss).all() and mask.shape == (2, 1, 3, 8, 12) and mask.sum() > 0


def test_text_layer_is_exported_and_sampling_encodes_prompts_with_it(trained, tmp_path):
    """A DiT trained on the text encoder's penultimate hidden state (``text_layer: -2``) records it in its
    export; ``videogen sample``'s loader builds the encoder with it; a hostile value is refused, not used."""
    import shutil

    from videogen.pipelines.video import load_trained_dit

    module = trained["module"]
    assert "text_layer" not in module.export_stats()  # the default, -1, is not recorded: old exports read the same
    module.hparams.text_layer = -2
    try:
        assert module.export_stats()["text_layer"] == -2
    finally:
        module.hparams.text_layer = -1
    export = tmp_path / "export"
    shutil.copytree(trained["tmp"] / "export", export)
    assert load_trained_dit(str(export)).text_encoder.layer == -1
    stats = json.loads((export / "stats.json").read_text())
    for value, ok in ((-2, True), ("-2; import os", False), (99, False)):
        (export / "stats.json").write_text(json.dumps({**stats, "text_layer": value}))
        if ok:
            assert load_trained_dit(str(export)).text_encoder.layer == -2
        else:
            with pytest.raises(ValueError, match="layer="):
                load_trained_dit(str(export))


def test_packed_batch_loss_equals_each_clip_alone(trained):
    """A packed batch (clips of different sizes in one token row) gives each clip the loss it gets alone."""
    import random

    from videogen.diffusion import logit_normal, shift_timesteps, timestep_shift
    from videogen.encoding import encode_latents, normalize_latents

    module = trained["module"]
    g = torch.Generator().manual_seed(5)
    videos = [torch.rand(3, 9, 32, 48, generator=g) * 2 - 1, torch.rand(3, 5, 32, 32, generator=g) * 2 - 1]
    batch = {"video": videos, "caption": ["a red square moving right", "a blue circle"], "meta": [{}, {}]}
    h = module.hparams
    saved = h.cond_prob, h.caption_dropout
    h.cond_prob, h.caption_dropout = 0.0, 0.0
    try:
        with torch.no_grad():
            per_clip, t = module.diffusion_loss(module.dit, batch, torch.Generator().manual_seed(0), random.Random(0))
            # the same draws, clip by clip, through the padded (one clip per row) path
            g = torch.Generator().manual_seed(0)
            z = [normalize_latents(encode_latents(module.vae, v[None]), module.vae_export.stats) for v in videos]
            temporal = torch.tensor([x.shape[2] for x in z])
            spatial = torch.tensor([(x.shape[3] // 2) * (x.shape[4] // 2) for x in z])
            want_t = shift_timesteps(logit_normal(2, h.timestep_mean, h.timestep_std, g, "cpu"),
                                     timestep_shift(temporal, spatial, h.shift_base_tokens, h.shift_max))
            text, mask = module.encode_text(batch["caption"])
            alone = []
            for i, x in enumerate(z):
                noise = torch.randn(x.shape, generator=g)
                pred = module.dit(module.process.add_noise(x, noise, want_t[i: i + 1]), want_t[i: i + 1], text[i: i + 1],
                                  mask[i: i + 1])
                alone.append((pred - (noise - x)).pow(2).mean())
        h.pad_packs_to = 400  # packs padded to a fixed token budget: ignored tokens, the same losses
        with torch.no_grad():
            padded, _ = module.diffusion_loss(module.dit, batch, torch.Generator().manual_seed(0), random.Random(0))
    finally:
        h.cond_prob, h.caption_dropout, h.pad_packs_to = *saved, None
    torch.testing.assert_close(t, want_t)
    torch.testing.assert_close(per_clip, torch.stack(alone), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded, per_clip, atol=1e-6, rtol=1e-5)
    assert per_clip.shape == (2,) and per_clip[0] != per_clip[1]


def test_packing_datamodule_trains(trained, tmp_path):
    """The loader's packing mode feeds the DiT mixed sizes in one step; the loss is finite and logged."""
    seen = []

    class Record(ModelCheckpoint):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(sorted({tuple(v.shape) for v in batch["video"]}))

    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(trained["vae"]), text_max_length=16, cond_prob=0.5, ema_decay=0.9)
    # the token shape is the DiT's (VAE 4x4x4 x patch 1x2x2): 9x32x48 clips are 72 tokens, 9x32x32 ones 48
    dm = VideoDataModule(str(trained["shards"]),
                         bucketer=Bucketer(packing=True, token_budget=160, max_area=48 * 32, max_frames=9,
                                           size_multiple=16, frame_multiple=4),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=4))
    trainer = Trainer(accelerator="cpu", max_steps=3, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(tmp_path), limit_val_batches=0, callbacks=[Record()])
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 3 and torch.isfinite(trainer.logged_metrics["train/loss"])
    assert "train/loss_bucket/packed" in trainer.logged_metrics
    assert any(len(shapes) > 1 for shapes in seen), seen  # a step held clips of different sizes
    assert dm.bucketer.token_shape == (4, 8, 8)


def test_bf16_mixed_with_a_fused_optimizer_clips_and_trains(trained, tmp_path):
    """The quickstart DiT's pairing (``bf16-mixed``, ``fused: true`` AdamW, ``gradient_clip_val``), which
    Lightning alone refuses at the first step: clipped to the bound, weights moved, the loss finite."""
    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(trained["vae"]), text_max_length=16, cond_prob=0.5, ema_decay=0.9,
                       optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0, fused=True))
    start = {k: v.clone() for k, v in module.dit.state_dict().items()}
    norms = []
    clip = module.configure_gradient_clipping

    def record(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norms.append(torch.nn.utils.get_total_norm([p.grad for p in module.dit.parameters() if p.grad is not None]))

    module.configure_gradient_clipping = record
    trainer = Trainer(accelerator="cpu", max_steps=2, precision="bf16-mixed", gradient_clip_val=1e-3,
                      enable_progress_bar=False, enable_model_summary=False, logger=False,
                      default_root_dir=str(tmp_path), limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule(trained["shards"]))
    assert trainer.global_step == 2 and torch.isfinite(trainer.logged_metrics["train/loss"])
    assert [n.item() for n in norms] == pytest.approx([1e-3, 1e-3], rel=1e-3)
    assert any(not torch.equal(start[k], v) for k, v in module.dit.state_dict().items())


@pytest.mark.parametrize("mode", ["text", "image", "extend", "connect"])
def test_sample_writes_playable_mp4(trained, tmp_path, mode):
    out = tmp_path / f"{mode}.mp4"
    args = ["sample", "--ckpt", str(trained["tmp"] / "export"), "--prompt", "a red square moving right",
            "--out", str(out), "--num-frames", "9", "--height", "32", "--width", "48", "--steps", "3"]
    if mode == "text":
        args += ["--shift", "2.5"]  # a fixed shift instead of the export's
    if mode == "image":
        (tmp_path / "first.png").write_bytes(make_png(60, 40))
        args += ["--image", str(tmp_path / "first.png")]
    elif mode in ("extend", "connect"):
        from conftest import make_mp4

        (tmp_path / "clip.mp4").write_bytes(make_mp4(96, 64, 9))
        args += ["--video", str(tmp_path / "clip.mp4"), "--mode", mode]
    assert main(args) == 0
    info = PyAVDecoder().probe(out.read_bytes())
    assert (info.width, info.height, info.num_frames) == (48, 32, 9)
    if mode == "image":  # the first frame is the given image's (kept whatever the noise); the others are sampled
        other = tmp_path / "seed1.mp4"
        assert main([*args[:args.index("--out") + 1], str(other), *args[args.index("--out") + 2:], "--seed", "1"]) == 0
        frames = [PyAVDecoder().decode(f.read_bytes(), list(range(9))).astype(np.float32) for f in (out, other)]
        assert frames[0].shape == (9, 32, 48, 3)
        first, rest = (np.abs(frames[0][i] - frames[1][i]).mean() for i in (slice(0, 1), slice(1, None)))
        assert first < 2.0 and rest > 4 * first + 1.0, (first, rest)


def test_sample_refuses_a_changed_vae(trained, tmp_path, capsys):
    import shutil

    export = tmp_path / "export"
    shutil.copytree(trained["tmp"] / "export", export)
    stats = json.loads((export / "stats.json").read_text())
    other = tiny_export(tmp_path / "other", seed=5)
    stats["vae"]["source"] = str(other)
    (export / "stats.json").write_text(json.dumps(stats))
    assert main(["sample", "--ckpt", str(export), "--prompt", "x", "--out", str(tmp_path / "o.mp4"),
                 "--height", "32", "--width", "48", "--steps", "1"]) == 2
    printed = capsys.readouterr().out
    was, now = stats["vae"]["weights_sha256"][:12], json.loads((other / "manifest.json").read_text())["weights_sha256"][:12]
    assert was != now
    assert (f"videogen sample: the DiT at {export} was trained with the VAE at {other} (weights sha256 {was}), but this "
            f"run uses the VAE at {other} ({now}): restore that VAE (or give it with --vae), or train the DiT "
            "again") in printed, printed
    assert not (tmp_path / "o.mp4").exists()


def test_dit_channels_must_match_the_vae(tmp_path):
    vae_dir = tiny_export(tmp_path / "vae")
    with pytest.raises(ValueError, match="in_channels=8 but the VAE"):
        DiTModule(tiny_dit(in_channels=8), vae=str(vae_dir))


@pytest.mark.slow
def test_resume_mid_run_matches_an_uninterrupted_run(trained, tmp_path):
    def run(root, steps, ckpt=None, every=None):
        torch.manual_seed(0)
        module = DiTModule(tiny_dit(), vae=str(trained["vae"]), text_max_length=16, cond_prob=0.5, ema_decay=0.9)
        cbs = [ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=every, save_last=True)] if every else []
        t = Trainer(accelerator="cpu", max_steps=steps, enable_progress_bar=False, enable_model_summary=False,
                    logger=False, default_root_dir=str(root), limit_val_batches=0, callbacks=cbs)
        t.fit(module, datamodule=datamodule(trained["shards"]), ckpt_path=ckpt)
        return module

    reference = run(tmp_path / "a", 6)
    run(tmp_path / "b", 3, every=3)
    resumed = run(tmp_path / "b", 6, ckpt=tmp_path / "b" / "ckpt" / "last.ckpt")
    for name in ("dit", "ema"):
        a, b = getattr(reference, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), name
