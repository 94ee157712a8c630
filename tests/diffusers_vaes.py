"""Tiny random diffusers video VAEs for tests: small configs and ``save_vae`` (save_pretrained, safetensors)."""

import torch

WAN = dict(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
           latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 2.0, 0.5, 1.0])
COG = dict(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=4,
           sample_height=32, sample_width=32, scaling_factor=0.7)
LTX = dict(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
           layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5, decoder_inject_noise=(False,) * 5,
           upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, scaling_factor=0.9)
HUNYUAN = dict(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)


def save_vae(folder, cls_name, config, seed=0, edit=None):
    """A tiny random diffusers VAE written with save_pretrained (safetensors) to ``folder``."""
    torch.manual_seed(seed)
    import diffusers

    model = getattr(diffusers, cls_name)(**config)
    if edit is not None:
        edit(model)
    model.save_pretrained(folder)
    return folder
