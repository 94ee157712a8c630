"""The causal video VAE: shapes, causality, chunked == one pass, tiling, bottlenecks, presets."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from videogen.models.vae import (
    FSQ,
    CausalCache,
    CausalConv3d,
    DiagonalGaussian,
    VideoAutoencoder,
    vae_base,
    vae_tiny,
)
from videogen.models.vae.blocks import Upsample
from videogen.models.vae.tiling import blend_ramp, tiled_apply


def small_vae(**kw) -> VideoAutoencoder:
    torch.manual_seed(0)
    cfg = dict(latent_channels=4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
               temporal_compression=4, spatial_compression=4)
    return VideoAutoencoder(**(cfg | kw)).eval()


def video(t: int, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- causal conv -------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
def test_causal_conv_chunks_equal_one_pass_and_cache_stays_flat(stride):
    torch.manual_seed(0)
    conv = CausalConv3d(3, 5, 3, stride=(stride, 1, 1))
    x = torch.randn(1, 3, 17, 6, 6)
    full = conv(x)
    assert full.shape == (1, 5, 1 + 16 // stride, 6, 6)
    cache, outs, sizes = CausalCache(), [], []
    for a, b in [(0, 1), (1, 5), (5, 9), (9, 13), (13, 17)]:  # frame 0, then 4 at a time
        outs.append(conv(x[:, :, a:b], cache))
        sizes.append(cache.nbytes())
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=1e-6, rtol=0)
    assert len(set(sizes)) == 1  # (k_t - s) frames however long the clip
    assert sizes[0] == (3 - stride) * 3 * 6 * 6 * 4


def test_causal_conv_output_depends_on_past_only():
    torch.manual_seed(0)
    conv = CausalConv3d(2, 2, 3)
    x = torch.randn(1, 2, 8, 4, 4)
    y = x.clone()
    y[:, :, 5:] += 1.0
    torch.testing.assert_close(conv(x)[:, :, :5], conv(y)[:, :, :5])
    assert not torch.allclose(conv(x)[:, :, 5], conv(y)[:, :, 5])


# ---- shapes and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("tc", [1, 2, 4])
@pytest.mark.parametrize("sc", [4, 8, 16])
def test_shapes_for_every_compression(tc, sc):
    vae = small_vae(base_channels=4, temporal_compression=tc, spatial_compression=sc)
    x = video(1 + 2 * tc, 2 * sc, 3 * sc)
    with torch.no_grad():
        post = vae.encode(x)
        z = post.sample()
        assert z.shape == (1, 4, 3, 2, 3)
        assert vae.decode(z).shape == x.shape
    assert vae.num_frames(3) == 1 + 2 * tc


@pytest.mark.parametrize("patch, patch_t, sc, mult", [(2, 1, 8, (1, 2)), (2, 2, 4, (1, 2)), (4, 4, 4, (1,))])
def test_shapes_with_patchify(patch, patch_t, sc, mult):
    vae = small_vae(patch_size=patch, patch_size_t=patch_t, spatial_compression=sc, channel_mult=mult)
    x = video(9, 2 * sc, 2 * sc)
    with torch.no_grad():
        z = vae.encode(x).mode()
        assert z.shape == (1, 4, 3, 2, 2)
        assert vae.decode(z).shape == x.shape


def test_bad_frame_count_names_the_valid_counts():
    vae = small_vae()
    with pytest.raises(ValueError, match=r"1 \+ k\*4 frames \(1, 5, 9, 13.*T=8: trim the clip to 5 frames or pad it to 9"):
        vae.encode(video(8))


def test_bad_sizes_and_options_raise_clear_errors():
    vae = small_vae()
    with pytest.raises(ValueError, match="H and W divisible by 4, got H=18"):
        vae.encode(video(5, 18, 16))
    with pytest.raises(ValueError, match=r"unsqueeze\(2\)"):
        vae.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="chunk_frames=3 must be a positive multiple of temporal_compression=4"):
        vae.encode(video(9), chunk_frames=3)
    with pytest.raises(ValueError, match="multiples of the spatial compression 4"):
        vae.encode(video(5), tile=(8, 8), tile_overlap=2)
    with pytest.raises(ValueError, match=r"expected latents \(B, 4, t, h, w\)"):
        vae.decode(torch.zeros(1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="temporal_compression=3; use 1, 2 or 4"):
        VideoAutoencoder(temporal_compression=3)
    with pytest.raises(ValueError, match="set latent_channels to len\\(levels\\)"):
        VideoAutoencoder(latent_channels=4, bottleneck=FSQ(levels=(8, 5, 5)))
    with pytest.raises(ValueError, match="raise patch_size_t or lower patch_size"):
        VideoAutoencoder(temporal_compression=4, spatial_compression=4, patch_size=4)


# ---- causality, images, chunking ------------------------------------------------------------------


def test_latent_frame_k_ignores_frames_after_its_window():
    vae = small_vae()  # tc = 4: latent frame k sees frames 0 .. 4k
    x = video(17)
    y = x.clone()
    y[:, :, 9:] = video(8, seed=1)  # change frames 9..16
    with torch.no_grad():
        zx, zy = vae.encode(x).mode(), vae.encode(y).mode()
    torch.testing.assert_close(zx[:, :, :3], zy[:, :, :3], atol=0, rtol=0)  # latents 0, 1, 2 see frames <= 8
    assert (zx[:, :, 3] - zy[:, :, 3]).abs().max() > 1e-3


def test_decoded_frames_ignore_later_latents():
    vae = small_vae()
    z = torch.randn(1, 4, 4, 4, 4)
    z2 = z.clone()
    z2[:, :, 2:] += 1.0
    with torch.no_grad():
        a, b = vae.decode(z), vae.decode(z2)
    torch.testing.assert_close(a[:, :, :5], b[:, :, :5], atol=0, rtol=0)  # frames 0..4 come from latents 0, 1
    assert (a[:, :, 5] - b[:, :, 5]).abs().max() > 1e-4


@pytest.mark.parametrize("patch_t", [1, 2])
def test_image_is_a_one_frame_video(patch_t):
    vae = small_vae(patch_size_t=patch_t)
    x = video(9)
    with torch.no_grad():
        z_img = vae.encode(x[:, :, :1]).mode()
        z_vid = vae.encode(x).mode()
        assert z_img.shape == (1, 4, 1, 4, 4)
        torch.testing.assert_close(z_img, z_vid[:, :, :1], atol=1e-5, rtol=0)  # frame 0 encoded on its own
        img = vae.decode(z_img)
        assert img.shape == (1, 3, 1, 16, 16)
        torch.testing.assert_close(img, vae.decode(z_vid)[:, :, :1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("patch_t", [1, 2])
def test_chunked_encode_and_decode_equal_one_pass(patch_t):
    vae = small_vae(patch_size_t=patch_t)
    x = video(21)
    with torch.no_grad():
        h_full = vae.encode(x).mean
        for chunk in (4, 8):  # 1 + 4 + 4 ... and 1 + 8 + 8 + 4 frames
            torch.testing.assert_close(vae.encode(x, chunk_frames=chunk).mean, h_full, atol=1e-5, rtol=0)
        z = h_full
        v_full = vae.decode(z)
        for chunk in (1, 2, 4):
            torch.testing.assert_close(vae.decode(z, chunk_frames=chunk), v_full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tile", [None, (32, 32)])
def test_tail_decoder_continues_the_prefix_without_decoding_it_again(tile):
    """``tail_decoder(prefix)(z)`` is ``decode(cat(prefix, z))``'s frames after the prefix's, again on a second
    call (the caches the prefix left are copied, not consumed), with the gradient of the whole decode; the
    decoder runs on the prefix once, not per call."""
    vae, overlap = small_vae(), 16 if tile else None
    with torch.no_grad():
        z = vae.encode(video(13, 64, 64)).mean  # 4 latent frames
        whole = vae.decode(z, chunk_frames=1, tile=tile, tile_overlap=overlap)
    calls = []
    hook = vae.decoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[2]))
    decode_tail = vae.tail_decoder(z[:, :, :3], tile=tile, tile_overlap=overlap)
    tiles = 1 if tile is None else 9  # 3 x 3 tiles of 8 latent px, 4 overlapping
    assert calls == [1] * 3 * tiles  # the prefix, one latent frame per call
    last = z[:, :, 3:].clone().requires_grad_(True)
    for _ in range(2):
        tail = decode_tail(last)
        torch.testing.assert_close(tail, whole[:, :, 9:], atol=1e-5, rtol=0)
    assert calls[3 * tiles:] == [1] * 2 * tiles  # then only the last latent frame per call
    hook.remove()
    vae.requires_grad_(False)
    decode_tail(last).pow(2).mean().backward()
    through_whole = last.detach().clone().requires_grad_(True)
    vae.decode(torch.cat([z[:, :, :3], through_whole], dim=2), chunk_frames=1, tile=tile,
               tile_overlap=overlap)[:, :, 9:].pow(2).mean().backward()
    assert last.grad.abs().sum() > 0
    torch.testing.assert_close(last.grad, through_whole.grad, atol=1e-6, rtol=1e-4)  # the same gradient
    with pytest.raises(ValueError, match=r"latents \(1, 4, 1, 8, 8\) do not continue the prefix \(1, 4, 3, 16, 16\)"):
        decode_tail(z[:, :, 3:, :8, :8])


def test_chunk_cache_memory_is_flat_in_clip_length():
    vae = small_vae()
    sizes = []
    with torch.no_grad():
        for t in (9, 17, 33):
            cache = CausalCache()
            vae.encoder(video(1), cache)
            for a in range(1, t, 4):
                vae.encoder(video(4, seed=a), cache)
            sizes.append(cache.nbytes())
    assert sizes[0] == sizes[1] == sizes[2] > 0


# ---- spatial tiling -------------------------------------------------------------------------------


def test_tile_blending_is_exact_for_local_operations():
    x = torch.randn(1, 2, 3, 40, 52)  # 40 x 52: the last tiles are clamped, overlaps are uneven
    torch.testing.assert_close(tiled_apply(lambda p, i: 2 * p, x, (16, 16), 8, Fraction(1)), 2 * x)
    pool = torch.nn.AvgPool3d((1, 4, 4))
    torch.testing.assert_close(tiled_apply(lambda p, i: pool(p), x, (16, 16), 8, Fraction(1, 4)), pool(x))
    weights = blend_ramp(12, 8, ramp_in=True, ramp_out=True)
    torch.testing.assert_close(weights, torch.tensor([0, 0, 0.2, 0.4, 0.6, 0.8, 0.8, 0.6, 0.4, 0.2, 0, 0]))


def test_tiling_a_single_tile_is_exact():
    vae = small_vae()
    x = video(5, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(x, tile=(16, 16), tile_overlap=8).mean, vae.encode(x).mean,
                                   atol=0, rtol=0)


def test_tiling_is_exact_once_the_overlap_covers_the_receptive_field():
    # narrow receptive field (patchify 4, no ResBlocks): a quarter of a 64 px overlap covers it
    vae = small_vae(patch_size=4, channel_mult=(1,), num_res_blocks=0, temporal_compression=1)
    x = video(1, 192, 192)  # 2 x 2 tiles of 128 px
    with torch.no_grad():
        z = vae.encode(x).mean
        torch.testing.assert_close(vae.encode(x, tile=(128, 128), tile_overlap=64).mean, z, atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.decode(z, tile=(128, 128), tile_overlap=64), vae.decode(z), atol=1e-5,
                                   rtol=0)


def test_tiled_close_to_untiled_on_a_2x_larger_input():
    # receptive field ~ the tile size (random init): tiles differ near their borders; the blend bounds it
    vae = small_vae()
    x = video(5, 64, 64)  # 2x the 32 px tile per side
    with torch.no_grad():
        z = vae.encode(x).mean
        v = vae.decode(z)
        enc = vae.encode(x, tile=(32, 32), tile_overlap=16).mean
        dec = vae.decode(z, tile=(32, 32), tile_overlap=16)
        dec_less_overlap = vae.decode(z, tile=(32, 32), tile_overlap=8)
        both = vae.decode(z, chunk_frames=1, tile=(32, 32), tile_overlap=16)
    assert enc.shape == z.shape and dec.shape == v.shape
    rel = lambda a, b: ((a - b).abs().mean() / b.abs().mean()).item()  # noqa: E731
    assert rel(enc, z) < 0.30 and rel(dec, v) < 0.35  # measured 0.27 and 0.29
    assert rel(dec, v) < rel(dec_less_overlap, v)  # more overlap, closer (0.29 vs 0.41)
    torch.testing.assert_close(both, dec, atol=1e-5, rtol=0)  # chunking inside tiles stays exact


# ---- bottlenecks ----------------------------------------------------------------------------------


def test_diagonal_gaussian_posterior():
    h = torch.zeros(2, 8, 3, 4, 4)
    post = DiagonalGaussian()(h)
    torch.testing.assert_close(post.kl(), torch.zeros(2))
    assert post.mode().shape == (2, 4, 3, 4, 4)
    h[:, :4] = 1.0  # mean 1, var 1: KL = 0.5 per element
    post = DiagonalGaussian()(h)
    torch.testing.assert_close(post.kl(), torch.full((2,), 0.5 * 4 * 3 * 4 * 4))
    s = DiagonalGaussian()(torch.zeros(1, 2, 50, 50, 50)).sample(torch.Generator().manual_seed(0))
    assert abs(s.mean().item()) < 0.01 and abs(s.std().item() - 1) < 0.01


def test_fsq_quantises_to_the_grid_with_straight_through_gradient():
    fsq = FSQ(levels=(8, 5, 3))
    assert fsq.codebook_size == 120
    h = (torch.randn(2, 3, 2, 5, 5) * 3).requires_grad_()
    q = fsq(h)
    for c, n in enumerate((8, 5, 3)):
        values = q.codes[:, c].detach().unique()
        assert len(values) <= n
        grid = values * (n // 2)
        torch.testing.assert_close(grid, grid.round())
    assert q.indices.shape == (2, 2, 5, 5) and q.indices.max() < 120 and q.indices.min() >= 0
    torch.testing.assert_close(fsq.indices_to_codes(q.indices), q.codes.detach())
    torch.testing.assert_close(q.sample(), q.mode())
    torch.testing.assert_close(q.kl(), torch.zeros(2))
    q.codes.sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0  # gradient passes the rounding


def test_fsq_autoencoder_round_trip_shapes():
    vae = small_vae(latent_channels=3, bottleneck=FSQ(levels=(5, 5, 5)))
    x = video(5)
    rec, q = vae(x)
    assert rec.shape == x.shape and q.codes.shape == (1, 3, 2, 4, 4)
    rec.mean().backward()
    assert vae.encoder.conv_in.conv.weight.grad.abs().sum() > 0


# ---- blocks, training, presets ----------------------------------------------------------------------


def test_temporal_upsample_starts_as_frame_repeat():
    up = Upsample(4, 4, temporal=True)
    x = torch.randn(1, 4, 3, 2, 2)
    h = up.time_conv(x)  # (B, 2 C, t, h, w): both halves = x
    torch.testing.assert_close(h[:, 0::2], x)
    torch.testing.assert_close(h[:, 1::2], x)
    assert up(x).shape == (1, 4, 5, 4, 4)


def test_a_few_steps_fit_one_clip():
    vae = small_vae().train()
    ramp = torch.linspace(-1, 1, 8)
    x = torch.stack([ramp.view(1, 8, 1).expand(5, 8, 8), ramp.view(1, 1, 8).expand(5, 8, 8),
                     torch.linspace(-0.5, 0.5, 5).view(5, 1, 1).expand(5, 8, 8)])[None]  # (1, 3, 5, 8, 8)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        rec, post = vae(x, generator=torch.Generator().manual_seed(0))
        loss = (rec - x).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_last_layer_weight_is_the_decoders_output_conv():
    vae = small_vae()
    assert vae.last_layer_weight is vae.decoder.conv_out.conv.weight


def test_preset_parameter_counts():
    with torch.device("meta"):
        tiny, base = vae_tiny(), vae_base()
    assert sum(p.numel() for p in tiny.parameters()) == TINY_PARAMS
    assert sum(p.numel() for p in base.parameters()) == BASE_PARAMS
    assert (tiny.temporal_compression, tiny.spatial_compression, tiny.latent_channels) == (4, 4, 8)
    assert (base.temporal_compression, base.spatial_compression, base.latent_channels) == (4, 8, 16)


def test_tiny_preset_runs_on_a_quickstart_clip():
    vae = vae_tiny()
    x = video(9, 64, 64)
    rec, post = vae(x)
    assert rec.shape == x.shape and post.mean.shape == (1, 8, 3, 16, 16)


TINY_PARAMS = 353_912
BASE_PARAMS = 194_194_595
