"""LTX-Video's LTXVideoTransformer3DModel as the stage-3 network from tiny random parts: flow matching with its
resolution-dependent shift exp(mu), tokens packed as LTXPipeline packs them, T5 unmasked with the mask given to the
transformer; LoRA trains only the adapters and lowers the loss, a full step updates the base, and the LoRA export
loads into LTXPipeline, whose latents equal ours from the same weights, prompt, noise and steps."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.optim import AdamW

from models.pretrained_parts import (
    PROMPT, assert_full_finetune_moves_the_base, assert_lora_trains_only_adapters, latent_batch,
    pixels_ours_and_pipelines, tiny_ltx, tiny_ltx_vae, tiny_t5_encoder, train_steps,
)
from conftest import tiny_export
from videogen.models.dit.diffusers_adapters import LTXVideoTransformer
from videogen.modules.dit import DiTModule
from videogen.modules.lr_schedule import WarmupCosine

LTX_SHIFT = (1024, 4096, 0.95, 2.05)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx")
    return {"ltx": str(tiny_ltx(root / "ltx")), "t5": str(tiny_t5_encoder(root / "t5")),
            "vae": str(tiny_export(root / "vae"))}


def ltx_module(parts, **net) -> DiTModule:
    torch.manual_seed(0)
    return DiTModule(LTXVideoTransformer(parts["ltx"], vae_temporal_compression=4, vae_spatial_compression=4, **net),
                     vae=parts["vae"], text_encoder=parts["t5"], text_max_length=8, caption_dropout=0.0,
                     dynamic_shift=LTX_SHIFT, shift_terminal=0.1, ema_decay=None,
                     optimizer=partial(AdamW, lr=5e-2, betas=(0.9, 0.99), weight_decay=0.0),
                     lr_scheduler=partial(WarmupCosine, warmup=0))


def test_lora_steps_change_only_adapters_and_lower_the_loss(parts):
    module = ltx_module(parts, lora_rank=4)
    seen = {}
    module.dit.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    assert_lora_trains_only_adapters(module, latent_batch(), gain=0.98)
    tokens = 3 * 8 * 12  # the last forward's inputs (the loss at the fixed noise and timesteps)
    u = torch.sigmoid(torch.randn(2, generator=torch.Generator().manual_seed(0)))
    s = torch.exp(torch.tensor(tokens * (2.05 - 0.95) / 3072 + 0.95 - 1024 * (2.05 - 0.95) / 3072))
    assert torch.allclose(seen["timestep"], 1000 * s * u / (1 + (s - 1) * u))  # exp(mu) shift, timestep 1000 t
    assert seen["hidden_states"].shape == (2, tokens, 4) and seen["encoder_attention_mask"].dtype == torch.bool


def test_full_finetune_step_updates_the_base_weights(parts):
    assert_full_finetune_moves_the_base(ltx_module(parts))


def test_lora_export_loads_into_ltx_pipeline_and_matches_our_sampler(parts, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from transformers import AutoTokenizer, T5EncoderModel

    from videogen.models.text import FrozenTextEncoder
    from videogen.pretrained import save_export
    from videogen.text_encoding import NULL_CAPTION
    from videogen.pipelines.video import generate_latents, load_trained_dit, sampling_kwargs

    module = ltx_module(parts, lora_rank=4, lora_alpha=8)
    train_steps(module, latent_batch(), 3)
    export = save_export(tmp_path / "export", module.dit, module.export_stats())
    pipe = LTXPipeline(tokenizer=AutoTokenizer.from_pretrained(parts["t5"]),
                       text_encoder=T5EncoderModel.from_pretrained(parts["t5"]), vae=tiny_ltx_vae(),
                       transformer=LTXVideoTransformer3DModel.from_pretrained(parts["ltx"]),
                       scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95,
                                                                 max_shift=2.05, base_image_seq_len=1024,
                                                                 max_image_seq_len=4096, shift_terminal=0.1))
    noise = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    packed = noise.permute(0, 2, 3, 4, 1).flatten(1, 3)  # b c t h w -> b (t h w) c (patch 1)
    kw = dict(prompt=PROMPT, negative_prompt=NULL_CAPTION, height=32, width=32, num_frames=9, num_inference_steps=4,
              guidance_scale=3.0, max_sequence_length=8, output_type="latent")
    plain = pipe(latents=packed.clone(), **kw).frames
    pipe.load_lora_weights(str(export))
    theirs = pipe(latents=packed.clone(), **kw).frames.reshape(1, 3, 8, 8, 4).permute(0, 4, 1, 2, 3)

    trained = load_trained_dit(str(export))
    assert trained.text_encoder.attend_padding and trained.stats["dynamic_shift"] == list(LTX_SHIFT)
    enc = FrozenTextEncoder(parts["t5"], 8, attend_padding=True)
    (text, mask), (null, null_mask) = enc([PROMPT]), enc([NULL_CAPTION])
    ours = generate_latents(trained.dit, trained.stats, text, mask, null, null_mask, num_frames=9, height=32, width=32,
                            steps=4, cfg=3.0, noise=noise, **sampling_kwargs(trained.stats))
    assert (theirs - plain.reshape(1, 3, 8, 8, 4).permute(0, 4, 1, 2, 3)).abs().max() > 1e-3
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()


def test_videos_equal_ltx_pipelines_through_its_diffusers_vae(parts, tmp_path):
    """In pixels, through a diffusers LTX VAE folder (its latents_mean/std and scaling_factor)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    vae = tiny_ltx_vae()
    vae.register_buffer("latents_mean", torch.tensor([0.1, -0.2, 0.0, 0.3]), persistent=True)
    vae.register_buffer("latents_std", torch.tensor([1.0, 2.0, 0.5, 1.5]), persistent=True)
    vae.save_pretrained(tmp_path / "ltx_vae")
    module = ltx_module({**parts, "vae": str(tmp_path / "ltx_vae")}, lora_rank=4, lora_alpha=8)
    train_steps(module, latent_batch(), 2)
    noise = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    ours, theirs = pixels_ours_and_pipelines(
        module, tmp_path / "export", parts["t5"], LTXPipeline, (LTXVideoTransformer3DModel, parts["ltx"]),
        (type(vae), tmp_path / "ltx_vae"),
        FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                        base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1),
        noise, noise.permute(0, 2, 3, 4, 1).flatten(1, 3).clone(), height=32, width=32, cfg=3.0, prompt=PROMPT)
    assert ours.shape == (1, 3, 9, 32, 32)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
