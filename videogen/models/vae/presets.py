"""Size presets, one line each. Parameter counts are asserted in tests/models/test_vae.py."""

from __future__ import annotations

from videogen.models.vae.autoencoder import VideoAutoencoder


def vae_tiny() -> VideoAutoencoder:
    """CPU quickstart: 4x4x4 compression, 8 latent channels; 2x2x2 patchify, then 16 and 32 channels."""
    return VideoAutoencoder(latent_channels=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                            temporal_compression=4, spatial_compression=4, patch_size=2, patch_size_t=2)


def vae_base() -> VideoAutoencoder:
    """GPU preset: 4x8x8 compression, 16 latent channels."""
    return VideoAutoencoder(latent_channels=16, base_channels=128, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                            temporal_compression=4, spatial_compression=8)
