"""Tiny randomly initialised pretrained parts, saved with save_pretrained to a folder (no download): a WordLevel
tokenizer (the ``tokenizers`` package), whole T5 and CLIP folders and T5/UMT5 encoders with it, diffusers
transformers and VAEs; and the training and comparison helpers the text-encoder and pretrained-transformer tests
share (one home, so no test module imports another)."""

from __future__ import annotations

import random

import torch

PROMPT = "a red square moving left"
WORDS = ["<pad>", "</s>", "<unk>", "<s>", "a", "red", "blue", "square", "circle", "moving", "left", "right"]


def tokenizer(**special):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
                                   **special)


def tiny_t5(folder):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)  # a whole T5 folder, as shipped
    tokenizer().save_pretrained(folder)
    return folder


def tiny_clip(folder):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                                         pad_token_id=0, bos_token_id=3, eos_token_id=1),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=16, patch_size=8),
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)  # text + vision towers, as shipped
    tokenizer(bos_token="<s>").save_pretrained(folder)
    return folder


def tiny_t5_encoder(folder, umt5=False):
    """A T5 encoder (CogVideoX's and LTX's text encoder kind; ``umt5``: a UMT5 one, Wan's), width 32, with the
    WordLevel tokenizer."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(0)
    config = config_class(vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model_class(config).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder


def tiny_wan(folder, in_channels=4, image_dim=None, seed=0):
    """A 2-block WanTransformer3DModel on 4-channel latents and 32-wide text (t2v; i2v with image_dim)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    out = 4
    WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
                          out_channels=out, text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                          qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim,
                          added_kv_proj_dim=None if image_dim is None else 24,  # i2v: the image's own k/v, as Wan's
                          ).save_pretrained(folder)
    return folder


def tiny_wan_vae(z_dim=4):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=3, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True], latents_mean=[0.0] * z_dim,
                            latents_std=[1.0] * z_dim).eval()


def tiny_cogvideox(folder, rotary=True, seed=0):
    """A 1-block CogVideoXTransformer3DModel on 4-channel latents, 32-wide text of 8 tokens; rotary: the 5b kind
    (3D RoPE), else the 2b kind (sincos positional embeddings over text + video)."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                time_embed_dim=8, text_embed_dim=32, num_layers=1, sample_width=12, sample_height=8,
                                sample_frames=9, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=8,
                                use_rotary_positional_embeddings=rotary).save_pretrained(folder)
    return folder


def tiny_cogvideox_vae():
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                  up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                  latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                  temporal_compression_ratio=4).eval()


def tiny_clip_vision(folder):
    """A CLIP vision tower (image_encoder/) and its processor (image_processor/), as a Wan i2v download lays them."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=16, patch_size=8)).save_pretrained(folder / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(
        folder / "image_processor")
    return folder / "image_encoder"


def tiny_stand_ins(dit_class_path: str, root, image_to_video: bool = False) -> dict[str, str]:
    """Tiny local folders standing in for a shipped config's downloaded pretrained parts (tests/test_configs.py):
    the transformer of the adapter's family, its text encoder and (Wan i2v) its image encoder."""
    name = dit_class_path.rsplit(".", 1)[-1]
    if name == "WanTransformer" and image_to_video:
        return {"dit.init_args.path": str(tiny_wan(root / "wan", in_channels=12, image_dim=32)),
                "text_encoder": str(tiny_t5_encoder(root / "umt5", umt5=True)), "image_encoder": str(tiny_clip_vision(root))}
    if name == "WanTransformer":
        return {"dit.init_args.path": str(tiny_wan(root / "wan")),
                "text_encoder": str(tiny_t5_encoder(root / "umt5", umt5=True))}
    if name == "CogVideoXTransformer":
        return {"dit.init_args.path": str(tiny_cogvideox(root / "cogvideox")),
                "text_encoder": str(tiny_t5_encoder(root / "t5"))}
    raise ValueError(f"no tiny stand-in for {dit_class_path}")


def tiny_ltx(folder, seed=0):
    """A 1-block LTXVideoTransformer3DModel on 4-channel latents (patch 1), 32-wide text."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    LTXVideoTransformer3DModel(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
                               attention_head_dim=8, cross_attention_dim=16, num_layers=1,
                               caption_channels=32).save_pretrained(folder)
    return folder


def tiny_ltx_vae():
    """4x4x4 compression (the tiny VAE export's too), 4 latent channels."""
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(0)
    return AutoencoderKLLTXVideo(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                                 decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                 decoder_layers_per_block=(1, 1, 1, 1, 1),
                                 spatio_temporal_scaling=(True, True, False, False),
                                 decoder_spatio_temporal_scaling=(True, True, False, False),
                                 decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
                                 upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1, patch_size_t=1,
                                 encoder_causal=True, decoder_causal=False).eval()


def pixels_ours_and_pipelines(module, folder, t5, pipeline, transformer, vae, scheduler, noise, pipe_latents, *,
                              height, width, cfg, prompt):
    """The module's LoRA saved as an export (``folder``) and sampled to pixels by our ``generate`` from ``noise``,
    and by diffusers' own ``pipeline`` class (T5 ``t5``, ``transformer`` and ``vae`` as (class, folder), the
    ``scheduler``, the export's LoRA loaded) from the same noise in the pipeline's layout (``pipe_latents``):
    both (B, 3, 9, height, width) in [0, 1], 4 steps, guidance ``cfg``."""
    from transformers import AutoTokenizer, T5EncoderModel

    from videogen.models.text import FrozenTextEncoder
    from videogen.pretrained import save_export
    from videogen.text_encoding import NULL_CAPTION
    from videogen.pipelines.video import generate, load_trained_dit, sampling_kwargs

    export = save_export(folder, module.dit, module.export_stats())
    trained = load_trained_dit(str(export))
    enc = FrozenTextEncoder(t5, 8, attend_padding=True)
    (text, mask), (null, null_mask) = enc([prompt]), enc([NULL_CAPTION])
    ours = generate(trained.dit, trained.vae_export.module, trained.stats, text, mask, null, null_mask, num_frames=9,
                    height=height, width=width, steps=4, cfg=cfg, noise=noise, **sampling_kwargs(trained.stats))
    pipe = pipeline(tokenizer=AutoTokenizer.from_pretrained(t5), text_encoder=T5EncoderModel.from_pretrained(t5),
                    vae=vae[0].from_pretrained(vae[1]), transformer=transformer[0].from_pretrained(transformer[1]),
                    scheduler=scheduler)
    pipe.load_lora_weights(str(export))
    theirs = pipe(prompt=prompt, negative_prompt=NULL_CAPTION, height=height, width=width, num_frames=9,
                  num_inference_steps=4, guidance_scale=cfg, max_sequence_length=8, latents=pipe_latents,
                  output_type="pt").frames  # (B, T, 3, H, W) in [0, 1]
    return (ours + 1) / 2, theirs.permute(0, 2, 1, 3, 4)


def latent_batch():
    g = torch.Generator().manual_seed(1)
    return {"latent": torch.randn(2, 4, 3, 8, 12, generator=g), "caption": [PROMPT, "a blue circle"], "meta": [{}, {}]}


def fixed_loss(module, batch) -> torch.Tensor:
    """The loss of ``batch`` at the same noise and timesteps every call."""
    return module.diffusion_loss(module.dit, batch, torch.Generator().manual_seed(0), random.Random(0))[0].mean()


def train_steps(module, batch, steps: int) -> list[float]:
    opt = module.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(steps):
        loss = fixed_loss(module, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_lora_trains_only_adapters(module, batch, gain: float) -> None:
    """5 steps on ``batch`` each lower its fixed-noise loss, to below ``gain`` x the first; no base weight of the
    transformer moves; the module's own state (checkpoints, exports) is the adapters only."""
    base = {k: v.clone() for k, v in module.dit.transformer.named_parameters() if "lora_" not in k}
    before = fixed_loss(module, batch).item()
    losses = train_steps(module, batch, 5)
    after = fixed_loss(module, batch).item()
    assert all(b < a for a, b in zip(losses, losses[1:] + [after])) and after < before * gain, (losses, after)
    for k, v in module.dit.transformer.named_parameters():
        assert "lora_" in k or torch.equal(v, base[k]), f"base weight {k} changed"
    assert module.dit.state_dict() and all("lora_" in k for k in module.dit.state_dict())


def assert_full_finetune_moves_the_base(module) -> list[str]:
    """One step moves most of the transformer's weights; the names of those it moved."""
    base = {k: v.clone() for k, v in module.dit.transformer.named_parameters()}
    train_steps(module, latent_batch(), 1)
    changed = [k for k, v in module.dit.transformer.named_parameters() if not torch.equal(v, base[k])]
    assert len(changed) > len(base) // 2, changed
    return changed
