"""Training and sampling agree (issue 14): the same "no caption", given frames on the training path at
every sampler step, given frames encoded as training encodes them, and the diffusion process chosen in
the config, recorded in the export and used by `videogen sample`."""

import argparse
import json
import random
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch.optim import AdamW

from conftest import clip_sample, tiny_export, write_tar
from videogen.callbacks.export import StageExport
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.diffusion import make_process, sampling_timesteps, timestep_shift
from videogen.encoding import encode_latents, load_vae, normalize_latents
from videogen.models.dit import DiT
from videogen.modules.dit import DiTModule
from videogen.text_encoding import NULL_CAPTION
from videogen.pipelines.video import (conditioning_from_video, connect_frames, fit_end_latent, frame_mask, generate,
                                      generate_latents)


def tiny_dit(**kw):
    return DiT(**{"in_channels": 4, "hidden_size": 32, "depth": 1, "num_heads": 2, "text_dim": 384,
                  "frame_conditioning": True, **kw})


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("vae") / "vae")


def record_inputs(dit):
    """Every forward's (x, t, text, text_mask) of ``dit``, appended to the returned list."""
    seen = []
    dit.register_forward_pre_hook(lambda mod, args, kwargs: seen.append([a.detach().clone() for a in args[:4]]),
                                  with_kwargs=True)
    return seen


def test_caption_dropout_and_the_guided_null_branch_feed_the_dit_the_same_no_caption(vae_dir):
    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(vae_dir), text_max_length=16, caption_dropout=1.0, ema_decay=None)
    seen = record_inputs(module.dit)
    batch = {"latent": torch.randn(2, 4, 3, 8, 8), "caption": ["a red square", "a blue circle"], "meta": [{}, {}]}
    with torch.no_grad():
        module.diffusion_loss(module.dit, batch, torch.Generator().manual_seed(0), random.Random(0))
    _, _, train_text, train_mask = seen[-1]
    module.sample(["a green triangle moving up"], 9, 32, 32, steps=1, cfg=4.0)
    _, _, text, mask = seen[-1]  # the doubled batch: [prompt, null]
    assert text.shape[0] == 2
    for row in range(2):  # both dropped training captions are bitwise the sampler's null branch
        assert torch.equal(train_text[row], text[1]) and torch.equal(train_mask[row], mask[1])
    assert mask[1].sum() > 0  # the encoded empty string: real [CLS] [SEP] tokens, not an all-masked row
    assert not torch.equal(text[0], text[1])
    # what the guided sampler's null is: the encoded NULL_CAPTION
    tokens, m = module.text_encoder([NULL_CAPTION])
    assert torch.equal(tokens[0], text[1]) and torch.equal(m[0], mask[1])


@pytest.mark.parametrize("process", ["rectified_flow", "ddpm"])
@pytest.mark.parametrize("mode,cfg", [("image", 1.0), ("extend", 4.0), ("connect", 4.0)])
def test_given_frames_are_where_training_puts_them_at_every_step(vae_dir, process, mode, cfg):
    """At each network call the given latents of x_t are exactly process.add_noise(cond, noise, t), the
    input training builds for them (DiTModule.diffusion_loss), and the output ends with them as given."""
    export = load_vae(vae_dir)
    torch.manual_seed(0)
    dit = tiny_dit().eval()
    seen = record_inputs(dit)
    video = torch.rand(2, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cond = conditioning_from_video(export.module, export.stats, video, mode, latent_frames=3, given=2)
    text, mask = torch.randn(2, 16, 384), torch.ones(2, 16, dtype=torch.bool)
    steps, seed = 4, 3
    finals = []
    generate(dit, export.module, export.stats, text, mask, text[:1] * 0, mask[:1], num_frames=9, height=32, width=32,
             steps=steps, cfg=cfg, seed=seed, process=process, cond=cond,
             callback=lambda i, t, x: finals.append(x.clone()))
    noise = torch.randn((2, 4, 3, 8, 8), generator=torch.Generator().manual_seed(seed))
    timesteps = sampling_timesteps(steps, shift=timestep_shift(3, 16, 256, 5.0))
    proc = make_process(process)
    given = cond.mask.bool().expand(noise.shape)
    assert len(seen) == steps
    for (x, t, _, _), t_want in zip(seen, timesteps[:-1]):
        x = x[:2]  # the conditional half of a guided batch (both halves get the same x)
        assert torch.equal(t[:2], t_want.expand(2))
        on_path = make_process(process).add_noise(cond.latents, noise, t[:2])
        assert torch.equal(x[given], on_path[given])
        if t_want < 1:  # the frames to generate have left the path of the given latents
            assert not torch.allclose(x[~given], on_path[~given])
    if process == "rectified_flow":  # a straight path: Euler with its own velocity ends on the given latents
        torch.testing.assert_close(finals[-1][given], cond.latents[given], atol=1e-5, rtol=0)
    assert proc.name == process


@pytest.mark.parametrize("mode,given", [("image", 1), ("extend", 2), ("extend-backward", 2), ("connect", 1)])
def test_given_latents_are_the_ones_training_encodes_from_the_clip(vae_dir, mode, given):
    """For a clip of the target length, every mode's given latents are bitwise the clip's own causally
    encoded latents at those positions: what DiTModule.latents gives training."""
    export = load_vae(vae_dir)
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    training = normalize_latents(encode_latents(export.module, video), export.stats)  # (1, C, 3, h, w)
    cond = conditioning_from_video(export.module, export.stats, video, mode, latent_frames=3, given=given)
    m = frame_mask(mode, 3, given)
    assert cond.mask[0, 0, :, 0, 0].tolist() == m.tolist()
    keep = m.bool()
    assert torch.equal(cond.latents[:, :, keep], training[:, :, keep])
    assert not cond.latents[:, :, ~keep].any()


def test_connect_from_two_frames_encodes_them_in_place(vae_dir):
    """Two single frames: the end frame is the last frame of a clip-length video (held), not a lone
    frame-0 latent, so its latent is the kind training gives at the last position."""
    export = load_vae(vae_dir)
    g = torch.Generator().manual_seed(3)
    start, end = torch.rand(1, 3, 1, 32, 32, generator=g) * 2 - 1, torch.rand(1, 3, 1, 32, 32, generator=g) * 2 - 1
    cond = connect_frames(export.module, export.stats, start, end, latent_frames=3)
    held = torch.cat([start, end.expand(-1, -1, 8, -1, -1)], dim=2)
    want = normalize_latents(encode_latents(export.module, held), export.stats)
    assert torch.equal(cond.latents[:, :, [0, 2]], want[:, :, [0, 2]])
    alone = normalize_latents(encode_latents(export.module, end), export.stats)  # the old, mismatched latent
    assert not torch.allclose(cond.latents[:, :, 2:], alone, atol=1e-3)


def test_connect_ends_on_the_given_frame_and_the_fit_touches_only_the_end(vae_dir):
    """The held-end latent decodes far from the end frame; fitting the last latent through the decoder brings
    the decoded last frame to it, leaves every frame decoded before the last latent bitwise alone and the VAE's
    weights trainable as they were; a chunked, tiled fit (the memory-bounded decode) equals a one-pass fit."""
    from videogen.encoding import decode_latents, denormalize_latents

    export = load_vae(vae_dir)
    vae, stats = export.module, export.stats
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # frames this random decoder can make: the last frames of clips it decodes
        start, end = vae.decode(torch.randn(2, 4, 3, 8, 8, generator=g)).clamp(-1, 1)[:, :, [0, -1]].split(1, dim=2)
    cond = connect_frames(vae, stats, start, end, latent_frames=3)
    assert torch.equal(cond.end_frame, end[:, :, 0])
    vae.decoder.requires_grad_(True)  # a VAE being trained: the fit leaves its flags as they were
    flags = [p.requires_grad for p in vae.parameters()]
    text, mask = torch.randn(2, 16, 384), torch.ones(2, 16, dtype=torch.bool)
    torch.manual_seed(0)
    dit = tiny_dit().eval()
    kw = dict(num_frames=9, height=32, width=32, steps=2, cfg=4.0, seed=0, cond=cond)
    held = generate(dit, vae, stats, text, mask, text[:1] * 0, mask[:1], fit_end_steps=0, **kw)
    fitted = generate(dit, vae, stats, text, mask, text[:1] * 0, mask[:1], fit_end_steps=200, **kw)
    err = lambda v: (v[:, :, -1] - end[:, :, 0]).pow(2).mean().item()  # noqa: E731
    assert err(fitted) < 0.7 * err(held)  # 0.084 vs 0.141 (a random decoder; the quickstart VAE: 25.88 -> 31.96 dB)
    tc = stats["temporal_compression"]
    assert torch.equal(fitted[:, :, :-tc], held[:, :, :-tc])  # causal: the frames before the last latent's
    assert [p.requires_grad for p in vae.parameters()] == flags and any(flags) and not all(flags)
    z = generate_latents(dit, stats, text, mask, text[:1] * 0, mask[:1], **kw)
    one_pass = fit_end_latent(vae, stats, z, cond.end_frame, steps=5)
    budget_of_one_tile = 1e-6  # a budget this small plans the smallest tiles
    tiled = fit_end_latent(vae, stats, z, cond.end_frame, steps=5, memory_budget_gb=budget_of_one_tile)
    torch.testing.assert_close(tiled, one_pass, atol=1e-3, rtol=0)
    assert torch.equal(one_pass[:, :, :-1], z[:, :, :-1])
    decoded = decode_latents(vae, denormalize_latents(one_pass, stats))
    assert decoded.shape == (2, 3, 9, 32, 32)


@pytest.mark.parametrize("process", ["rectified_flow", "ddpm"])
def test_process_is_trained_exported_and_sampled(tmp_path, vae_dir, process):
    from videogen.commands.sample import sample_videos
    from videogen.pretrained import load_stage

    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "shard-000000.tar", [clip_sample(f"k{i}", 64, 64, 9, seed=i) for i in range(4)])
    torch.manual_seed(0)
    module = DiTModule(tiny_dit(), vae=str(vae_dir), text_max_length=16, cond_prob=0.5, ema_decay=None,
                       process=process, optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0))
    dm = VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 32)], batch_size=2),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=4))
    trainer = Trainer(accelerator="cpu", max_steps=5, enable_progress_bar=False, enable_model_summary=False,
                      logger=False, default_root_dir=str(tmp_path), limit_val_batches=0, enable_checkpointing=False,
                      callbacks=[StageExport(str(tmp_path / "export"))])
    trainer.fit(module, datamodule=dm)
    assert torch.isfinite(trainer.logged_metrics["train/loss"])
    stats = json.loads((tmp_path / "export" / "stats.json").read_text())
    assert stats["process"] == process and stats["shift_max"] == 5.0 and stats["shift_base_tokens"] == 256
    args = argparse.Namespace(ckpt=str(tmp_path / "export"), num_frames=9, height=32, width=32, steps=3, cfg=3.0,
                              sampler="euler", seed=0, image=None, video=None, video_end=None, mode="extend",
                              given=1, strength=0.7, device="cpu", shift=None, fit_end_steps=50)
    videos = sample_videos(args, ["a red square moving right"])
    # the same as sampling with the recorded process by hand, and not the other process
    export = load_stage(str(tmp_path / "export"), expect=DiT)
    vae = load_vae(stats["vae"]["source"]).module
    text, mask = module.text_encoder(["a red square moving right"])
    null = module.text_encoder([NULL_CAPTION])
    kw = dict(num_frames=9, height=32, width=32, steps=3, cfg=3.0, seed=0)
    other = "ddpm" if process == "rectified_flow" else "rectified_flow"
    assert torch.equal(videos, generate(export.module, vae, stats, text, mask, *null, process=process, **kw))
    assert not torch.allclose(videos, generate(export.module, vae, stats, text, mask, *null, process=other, **kw))
    # --shift overrides the recorded shift
    args.shift = 3.0
    assert torch.equal(sample_videos(args, ["a red square moving right"]),
                       generate(export.module, vae, stats, text, mask, *null, process=process, shift=3.0, **kw))
