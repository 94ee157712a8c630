"""Tiny randomly initialised diffusers transformers, a tiny UMT5/T5 encoder with its tokenizer and tiny
diffusers VAEs, saved with save_pretrained to a folder (no download): the parts the pretrained-transformer
tests assemble into videogen runs and into diffusers' own pipelines."""

from __future__ import annotations

import torch

from models.test_text_encoders import WORDS, tokenizer


def tiny_umt5(folder):
    """A UMT5 encoder (Wan's text encoder kind), width 32, with the WordLevel tokenizer."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    config = UMT5Config(vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    UMT5EncoderModel(config).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder


def tiny_t5_encoder(folder):
    """A T5 encoder (CogVideoX's and LTX's text encoder kind), width 32, with the WordLevel tokenizer."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(config).save_pretrained(folder)
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
                "text_encoder": str(tiny_umt5(root / "umt5")), "image_encoder": str(tiny_clip_vision(root))}
    if name == "WanTransformer":
        return {"dit.init_args.path": str(tiny_wan(root / "wan")), "text_encoder": str(tiny_umt5(root / "umt5"))}
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
