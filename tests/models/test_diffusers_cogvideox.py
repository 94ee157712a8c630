"""CogVideoX's CogVideoXTransformer3DModel as the stage-3 network, trained with its own objective (v-prediction
on its 1000 integer timesteps, SNR shift, zero terminal SNR) from tiny random parts: LoRA trains only the adapters
and lowers the loss, a full finetune updates the base, the LoRA export loads into diffusers' CogVideoXPipeline,
whose DDIM (trailing) samples match ours from the same weights, prompt, noise and steps."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.optim import AdamW

from models.pretrained_parts import (
    PROMPT, assert_full_finetune_moves_the_base, assert_lora_trains_only_adapters, fixed_loss, latent_batch,
    pixels_ours_and_pipelines, tiny_cogvideox, tiny_cogvideox_vae, tiny_t5_encoder, train_steps,
)
from conftest import tiny_export
from videogen.models.dit.diffusers_adapters import CogVideoXTransformer
from videogen.modules.dit import DiTModule
from videogen.modules.lr_schedule import WarmupCosine


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvideox")
    return {"rotary": str(tiny_cogvideox(root / "rotary")), "sincos": str(tiny_cogvideox(root / "sincos", rotary=False)),
            "t5": str(tiny_t5_encoder(root / "t5")), "vae": str(tiny_export(root / "vae"))}


def cog_module(parts, kind="rotary", **net) -> DiTModule:
    torch.manual_seed(0)
    return DiTModule(CogVideoXTransformer(parts[kind], **net), vae=parts["vae"], text_encoder=parts["t5"],
                     text_max_length=8, caption_dropout=0.0, process="ddpm_discrete", snr_shift_scale=3.0,
                     shift_base_tokens=None, timestep_spacing="trailing", ema_decay=None,
                     optimizer=partial(AdamW, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0),
                     lr_scheduler=partial(WarmupCosine, warmup=0))


def test_lora_steps_change_only_adapters_and_lower_the_loss(parts):
    module = cog_module(parts, lora_rank=4)
    module.optimizer = partial(AdamW, lr=5e-2, betas=(0.9, 0.99), weight_decay=0.0)
    assert_lora_trains_only_adapters(module, latent_batch(), gain=0.98)


def test_full_finetune_step_updates_the_base_weights(parts):
    assert_full_finetune_moves_the_base(cog_module(parts, kind="sincos"))


def test_training_target_is_cogvideox_v_on_integer_timesteps(parts):
    """x_t and v from the scheduler's own alphas_cumprod at the integer timestep the network is given."""
    from diffusers import CogVideoXDDIMScheduler

    module = cog_module(parts, lora_rank=2)
    seen = {}
    module.dit.transformer.register_forward_pre_hook(
        lambda mod, args, kw: seen.update(t=kw["timestep"].clone(), x=kw["hidden_states"].clone()), with_kwargs=True)
    fixed_loss(module, latent_batch())
    u = torch.sigmoid(torch.randn(2, generator=torch.Generator().manual_seed(0)))
    k = torch.round(u.double() * 1000).long() - 1
    assert torch.equal(seen["t"], k) and seen["t"].dtype == torch.long
    abar = CogVideoXDDIMScheduler(snr_shift_scale=3.0, rescale_betas_zero_snr=True).alphas_cumprod[k].float()
    g = torch.Generator().manual_seed(0)
    torch.randn(2, generator=g)  # the timesteps' draw
    noise = torch.randn(2, 4, 3, 8, 12, generator=g)
    from videogen.encoding import normalize_latents

    z = normalize_latents(latent_batch()["latent"], module.vae_export.stats)
    expect = abar.sqrt().view(-1, 1, 1, 1, 1) * z + (1 - abar).sqrt().view(-1, 1, 1, 1, 1) * noise
    assert torch.allclose(seen["x"].transpose(1, 2), expect, atol=1e-5)


def test_text_length_must_be_the_models_and_the_sampler_must_be_ddim(parts):
    net = CogVideoXTransformer(parts["sincos"])
    with pytest.raises(ValueError, match="exactly max_text_seq_length=8 text tokens.*text_max_length: 8"):
        net(torch.randn(1, 4, 3, 8, 12), torch.rand(1), torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.bool))
    from videogen.pipelines.video import generate_latents

    stats = {"temporal_compression": 4, "spatial_compression": 4, "latent_channels": 4}
    with pytest.raises(ValueError, match="--sampler euler does not sample the ddpm_discrete process: use ddim"):
        generate_latents(net, stats, torch.randn(1, 8, 32), torch.ones(1, 8, dtype=torch.bool), num_frames=9,
                         height=32, width=48, steps=2, cfg=1.0, process="ddpm_discrete", sampler="euler")


def test_lora_export_loads_into_cogvideox_pipeline_and_matches_our_ddim(parts, tmp_path):
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import AutoTokenizer, T5EncoderModel

    from videogen.models.text import FrozenTextEncoder
    from videogen.pretrained import save_export
    from videogen.text_encoding import NULL_CAPTION
    from videogen.pipelines.video import generate_latents, load_trained_dit, sampling_kwargs

    module = cog_module(parts, lora_rank=4, lora_alpha=8)
    module.optimizer = partial(AdamW, lr=5e-2, betas=(0.9, 0.99), weight_decay=0.0)
    train_steps(module, latent_batch(), 3)
    export = save_export(tmp_path / "export", module.dit, module.export_stats())
    assert (export / "pytorch_lora_weights.safetensors").is_file()

    pipe = CogVideoXPipeline(tokenizer=AutoTokenizer.from_pretrained(parts["t5"]),
                             text_encoder=T5EncoderModel.from_pretrained(parts["t5"]), vae=tiny_cogvideox_vae(),
                             transformer=CogVideoXTransformer3DModel.from_pretrained(parts["rotary"]),
                             scheduler=CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                                              timestep_spacing="trailing", snr_shift_scale=3.0,
                                                              clip_sample=False))
    noise = torch.randn(1, 4, 3, 8, 12, generator=torch.Generator().manual_seed(7))
    kw = dict(prompt=PROMPT, negative_prompt=NULL_CAPTION, height=64, width=96, num_frames=9, num_inference_steps=4,
              guidance_scale=5.0, max_sequence_length=8, output_type="latent")
    plain = pipe(latents=noise.transpose(1, 2).clone(), **kw).frames.transpose(1, 2)
    pipe.load_lora_weights(str(export))
    theirs = pipe(latents=noise.transpose(1, 2).clone(), **kw).frames.transpose(1, 2)

    trained = load_trained_dit(str(export))
    assert trained.text_encoder.attend_padding
    enc = FrozenTextEncoder(parts["t5"], 8, attend_padding=True)
    (text, mask), (null, null_mask) = enc([PROMPT]), enc([NULL_CAPTION])
    ours = generate_latents(trained.dit, trained.stats, text, mask, null, null_mask, num_frames=9, height=32, width=48,
                            steps=4, cfg=5.0, noise=noise, **sampling_kwargs(trained.stats))
    assert (theirs - plain).abs().max() > 1e-3
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    from videogen.cli import main  # the export samples from the command line, DDIM chosen from it

    assert main(["sample", "--ckpt", str(export), "--prompt", PROMPT, "--out", str(tmp_path / "out.mp4"),
                 "--num-frames", "9", "--height", "32", "--width", "48", "--steps", "4"]) == 0
    assert main(["sample", "--ckpt", str(export), "--prompt", PROMPT, "--out", str(tmp_path / "out.mp4"),
                 "--num-frames", "9", "--height", "32", "--width", "48", "--steps", "4", "--sampler", "euler"]) == 2


def test_text_encoder_attending_padding_keeps_it_through_the_cache_and_reads_a_sibling_tokenizer(parts, tmp_path):
    """CogVideoX's text path: T5 over the padded caption without a mask, padding outputs kept (cached or not); a
    downloaded pipeline's text_encoder/ finds its tokenizer in the sibling tokenizer/."""
    import shutil

    from transformers import AutoTokenizer, T5EncoderModel

    from videogen.models.text import FrozenTextEncoder

    enc = FrozenTextEncoder(parts["t5"], 8, cache_size=4, attend_padding=True)
    first, mask = enc([PROMPT, "a blue circle"])
    again, _ = enc(["a blue circle", PROMPT])  # from the cache
    assert torch.equal(first[0], again[1]) and torch.equal(first[1], again[0])
    tok = AutoTokenizer.from_pretrained(parts["t5"])
    ids = tok([PROMPT], padding="max_length", max_length=8, truncation=True, return_tensors="pt").input_ids
    expect = T5EncoderModel.from_pretrained(parts["t5"])(ids)[0]  # what CogVideoXPipeline computes
    assert torch.allclose(first[:1], expect, atol=1e-6) and first[0, ~mask[0]].abs().min() > 0
    pipeline = tmp_path / "download"
    shutil.copytree(parts["t5"], pipeline / "text_encoder", ignore=shutil.ignore_patterns("tokenizer*", "special*"))
    tok.save_pretrained(pipeline / "tokenizer")
    assert not (pipeline / "text_encoder" / "tokenizer.json").exists()
    sibling = FrozenTextEncoder(str(pipeline / "text_encoder"), 8, attend_padding=True)
    assert torch.equal(sibling([PROMPT])[0], first[:1])


def test_image_to_video_cogvideox_refused(tmp_path):
    from diffusers import CogVideoXTransformer3DModel

    CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4,
                                time_embed_dim=8, text_embed_dim=32, num_layers=1, sample_width=12, sample_height=8,
                                sample_frames=9, patch_size=2, max_text_seq_length=8).save_pretrained(tmp_path / "i2v")
    with pytest.raises(ValueError, match="image-to-video.*only text-to-video CogVideoX trains here"):
        CogVideoXTransformer(str(tmp_path / "i2v"))


def test_cached_caption_embeddings_refused_for_a_text_path_that_reads_the_padding(parts):
    from videogen.errors import ConfigError

    module = cog_module(parts, lora_rank=2)
    assert module._decide_text_cache(None) is None  # auto: the live encoder
    module.hparams.text_embeddings = "cache"
    with pytest.raises(ConfigError, match="runs over the padded caption.*set text_embeddings: encoder"):
        module._decide_text_cache(None)


def test_videos_equal_cogvideox_pipelines_through_its_diffusers_vae(parts, tmp_path):
    """In pixels: a LoRA trained on a diffusers CogVideoX VAE folder's latents (its scaling_factor), exported;
    our generate() decodes through that VAE to the video CogVideoXPipeline (DDIM, trailing) decodes."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    vae = tiny_cogvideox_vae()
    vae.register_to_config(scaling_factor=0.7)
    vae.save_pretrained(tmp_path / "cog_vae")
    torch.manual_seed(0)
    module = DiTModule(CogVideoXTransformer(parts["rotary"], lora_rank=4, lora_alpha=8), vae=str(tmp_path / "cog_vae"),
                       text_encoder=parts["t5"], text_max_length=8, caption_dropout=0.0, process="ddpm_discrete",
                       snr_shift_scale=3.0, shift_base_tokens=None, timestep_spacing="trailing", ema_decay=None,
                       optimizer=partial(AdamW, lr=5e-2, betas=(0.9, 0.99), weight_decay=0.0),
                       lr_scheduler=partial(WarmupCosine, warmup=0))
    train_steps(module, latent_batch(), 2)
    noise = torch.randn(1, 4, 3, 8, 12, generator=torch.Generator().manual_seed(7))
    ours, theirs = pixels_ours_and_pipelines(
        module, tmp_path / "export", parts["t5"], CogVideoXPipeline,
        (CogVideoXTransformer3DModel, parts["rotary"]), (type(vae), tmp_path / "cog_vae"),
        CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                               timestep_spacing="trailing", snr_shift_scale=3.0, clip_sample=False),
        noise, noise.transpose(1, 2).clone(), height=64, width=96, cfg=5.0, prompt=PROMPT)
    assert ours.shape == (1, 3, 9, 64, 96)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
