"""``ConfigCheck`` asks each real stage module for its ``latent_grid``: the DiT (its VAE x patch), the VAE,
and the captioner when it reads VAE latents are checked; a captioner on pixels has no grid."""

from types import SimpleNamespace

import numpy as np
import pytest

from videogen.callbacks.config_check import check_shapes, check_token_shape
from videogen.data import Bucket, Bucketer, VideoDataModule
from videogen.errors import ConfigError
from videogen.models.latent_grid import LatentGrid


def setup_with(module, *buckets):
    dm = VideoDataModule("unused", bucketer=Bucketer(list(buckets), batch_size=2))
    check_shapes(module, dm)  # ConfigCheck.setup's checks, less the shard lookup
    check_token_shape(module, dm)
    return dm


def test_the_dit_stage_is_checked_through_its_grid(vae_export):
    from conftest import tiny_dit
    from videogen.modules.dit import DiTModule

    module = DiTModule(tiny_dit(), vae=str(vae_export), text_max_length=16, ema_decay=None)
    assert module.latent_grid == LatentGrid(4, 4, (1, 2, 2))  # the tiny VAE (4x4x4) x the DiT's 1x2x2 patch
    assert setup_with(module, Bucket(9, 32, 48)).bucketer.token_shape == (4, 8, 8)  # tokens of 4x8x8 pixels
    with pytest.raises(ConfigError, match=r"buckets\[0\] \(9x36x48\): height=36 is not a multiple of 8 \(use 32 or 40\), "
                                          r"as the VAE "
                                          r"at .* x DiT patch_size=\(1, 2, 2\) needs"):
        setup_with(module, Bucket(9, 36, 48))


def test_the_captioners_vae_is_checked_like_the_dits(vae_export):
    from videogen.models.captioner import VideoCaptioner, captioner_tiny
    from videogen.modules.captioner import CaptionerModule

    module = CaptionerModule(VideoCaptioner(dim=32, depth=1, heads=2, max_length=64, in_channels=4, channels=(8,),
                                            num_frames=3, grid=(2, 2)), vae=str(vae_export))
    assert module.latent_grid == LatentGrid(4, 4)
    setup_with(module, Bucket(9, 32, 48))
    with pytest.raises(ConfigError, match=r"buckets\[1\] \(8x32x48\): num_frames=8 is not 1 \+ k\*4 \(use 5 or 9\), "
                                          r"as the captioner's VAE at .* needs"):
        setup_with(module, Bucket(9, 32, 48), Bucket(8, 32, 48))
    pixels = CaptionerModule(captioner_tiny())
    assert pixels.latent_grid is None
    setup_with(pixels, Bucket(8, 30, 50))  # pixels go in as they are: nothing to check


def test_a_stage_without_a_grid_is_refused_not_left_unchecked():
    """Before, the check looked for ``module.vae_export``: a stage that renamed it went unchecked in silence."""
    from videogen.callbacks.throughput import dit_tokens

    old_style = SimpleNamespace(dit=SimpleNamespace(patch_size=(1, 2, 2), forward_flops=None),
                                vae_export=SimpleNamespace(stats={"temporal_compression": 4, "spatial_compression": 4}))
    with pytest.raises(AttributeError, match="latent_grid"):
        setup_with(old_style, Bucket(9, 36, 48))
    with pytest.raises(AttributeError, match="latent_grid"):
        dit_tokens(old_style, {"latent": [np.zeros((4, 3, 8, 12))]})
    assert dit_tokens(SimpleNamespace(dit=old_style.dit, latent_grid=LatentGrid(4, 4, (1, 2, 2))),
                      {"latent": [np.zeros((4, 3, 8, 12))]}) == [3 * 4 * 6]


def test_the_vae_stage_is_checked_through_its_grid():
    from videogen.models.vae import VideoAutoencoder
    from videogen.modules.vae import VAEModule

    module = VAEModule(VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1,), temporal_compression=4,
                                        spatial_compression=4, patch_size=4, patch_size_t=4))
    assert module.latent_grid == LatentGrid(4, 4)
    dm = setup_with(module, Bucket(9, 32, 48))
    assert dm.bucketer.token_shape is None  # tokens are the DiT's
    with pytest.raises(ConfigError, match=r"width=50 is not a multiple of 4 \(use 48 or 52\), as VideoAutoencoder"):
        setup_with(module, Bucket(9, 32, 50))
