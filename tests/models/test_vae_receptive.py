"""The VAE's receptive radius read off the architecture, the exact default tile overlap it gives,
and the memory plan (chunks, then tiles) picked from a budget."""

from __future__ import annotations

import pytest
import torch

from videogen.models.vae import VideoAutoencoder
from videogen.models.vae.receptive import (
    activation_bytes,
    decoder_radius,
    default_tile_overlap,
    encoder_radius,
    plan_tiles,
)

QUICKSTART = dict(latent_channels=8, base_channels=16, channel_mult=(1, 2), temporal_compression=2,
                  spatial_compression=4, patch_size=2, patch_size_t=2)  # configs/vae/quickstart.yaml
WIDE = dict(latent_channels=4, base_channels=4, channel_mult=(1, 2, 2), spatial_compression=8)


def perturbed(**kw) -> VideoAutoencoder:
    torch.manual_seed(0)
    vae = VideoAutoencoder(**kw).double().eval()
    with torch.no_grad():  # away from the repeat-init, so every tap carries gradient
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vae


def reach(grad: torch.Tensor, lo_px: int, hi_px: int, per_px: int) -> int:
    """Farthest pixel with gradient beyond [lo_px, hi_px] (a footprint), in units of ``per_px`` pixels."""
    cols = (grad.abs().sum((0, 1, 2)) > 0).nonzero()[:, 0]
    return max(lo_px - cols.min().item() * per_px, cols.max().item() * per_px + per_px - 1 - hi_px)


@pytest.mark.parametrize("cfg", [QUICKSTART, WIDE], ids=["quickstart", "sc8-3-levels"])
def test_receptive_radius_bounds_a_gradient_probe_tightly(cfg):
    vae = perturbed(**cfg)
    sc, n = vae.spatial_compression, 24
    z = torch.randn(1, vae.latent_channels, 1, n, n, dtype=torch.double, requires_grad=True)
    out = vae.decode(z)
    c = out.shape[-1] // 2
    out[0, :, 0, c, c].sum().backward()
    dec = reach(z.grad[0], c, c, sc)  # output pixels
    x = torch.randn(1, 3, 1, n * sc, n * sc, dtype=torch.double, requires_grad=True)
    h = vae.encoder(x)
    cl = h.shape[-1] // 2
    h[0, :, 0, cl, cl].sum().backward()
    enc = reach(x.grad[0], cl * sc, cl * sc + sc - 1, 1)
    assert decoder_radius(vae) - sc <= dec <= decoder_radius(vae)  # measured 31 of 31; 72 of 75
    assert encoder_radius(vae) - sc <= enc <= encoder_radius(vae)  # 28 of 29; 62 of 62


def test_tiled_equals_untiled_with_the_default_overlap():
    vae = perturbed(**QUICKSTART).float()
    ov, sc = default_tile_overlap(vae), vae.spatial_compression
    assert ov % sc == 0 and ov >= 2 * decoder_radius(vae) + 1
    tile = (2 * ov + sc, 2 * ov + 2 * sc)
    size = (2 * tile[0] - ov // 2) // sc * sc, (2 * tile[1] + sc) // sc * sc  # 2 x 3 tiles, uneven overlaps
    x = torch.rand(1, 3, 1 + vae.temporal_compression, *size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).mean
        z_tiled = vae.encode(x, tile=tile).mean
        v = vae.decode(z)
        v_tiled = vae.decode(z, tile=tile)
        v_small = vae.decode(z, tile=tile, tile_overlap=2 * sc)
    assert z_tiled.shape == z.shape and v_tiled.shape == v.shape
    torch.testing.assert_close(z_tiled, z, atol=1e-4, rtol=0)  # everywhere, not just the interior
    torch.testing.assert_close(v_tiled, v, atol=1e-4, rtol=0)
    assert (v_small - v).abs().max() > 1e-2  # the old 2-sc overlap seams: the test can fail


def test_activation_estimate_scales_with_pixels_and_frames():
    vae = VideoAutoencoder(**QUICKSTART)
    one = activation_bytes(vae, 16, 256, 256)
    assert activation_bytes(vae, 32, 256, 256) == pytest.approx(2 * one, rel=0.01)
    assert activation_bytes(vae, 16, 512, 256) == pytest.approx(2 * one, rel=0.01)
    assert activation_bytes(vae, 16, 256, 256, bytes_per_element=2) == pytest.approx(one / 2, rel=0.01)


def test_plan_chunks_time_first_then_tiles_within_the_budget():
    vae = VideoAutoencoder(**QUICKSTART)
    tc, sc = vae.temporal_compression, vae.spatial_compression
    whole = plan_tiles(vae, 33, 64, 64, budget_bytes=10**12)
    assert whole.chunk_frames is None and whole.tile is None
    budget = 5 * 10**8
    plan = plan_tiles(vae, 133, 720, 1280, budget_bytes=budget)
    assert plan.chunk_frames is not None and plan.chunk_frames % tc == 0
    assert plan.tile is not None and all(s % sc == 0 for s in plan.tile) and min(plan.tile) > plan.tile_overlap
    assert activation_bytes(vae, plan.chunk_frames, *plan.tile) <= budget
    assert plan.chunk_frames == 4 * tc  # time went down to its floor before tiles shrank
    roomy = plan_tiles(vae, 133, 720, 1280, budget_bytes=8 * budget)
    assert roomy.tile is None or roomy.tile[0] * roomy.tile[1] > plan.tile[0] * plan.tile[1]
