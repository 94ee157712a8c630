"""``LatentGrid``: the latent-grid arithmetic of every stage, in one place."""

from videogen.models.latent_grid import LatentGrid


def test_shapes_frames_and_tokens():
    grid = LatentGrid(4, 8, (1, 2, 2))
    assert grid.latent_shape(17, 64, 96) == (5, 8, 12)
    assert grid.latent_frames(1) == 1 and grid.latent_frames(16) == 4  # causal: the first frame alone
    assert grid.frames_for(5) == 17 and grid.frames_for(1) == 1
    assert grid.usable_frames(20) == 17 and grid.usable_frames(17) == 17
    assert LatentGrid(4, 8, frame_multiple=8).usable_frames(15) == 9  # CogVideoX: an odd latent count
    assert grid.token_shape == (4, 16, 16)
    assert grid.tokens(17, 64, 96) == 5 * 4 * 6
    assert grid.latent_tokens(5, 9, 12) == 5 * 4 * 6  # whole patches only
    assert LatentGrid(4, 8, (2, 2, 2)).tokens(17, 64, 96) == 2 * 4 * 6


def test_from_stats_and_of_a_vae():
    stats = {"temporal_compression": 4, "spatial_compression": 8, "latent_channels": 16}
    grid = LatentGrid.from_stats(stats, [1, 2, 2], "the VAE at x")
    assert grid == LatentGrid(4, 8, (1, 2, 2)) and grid.frame_multiple == 4 and grid.source == "the VAE at x"
    assert LatentGrid.from_stats({**stats, "frame_multiple": 8}).frame_multiple == 8

    class Vae:
        temporal_compression, spatial_compression, frame_multiple = 4, 16, 8

    vae_grid = LatentGrid.of_vae(Vae())
    assert (vae_grid.patch, vae_grid.frame_multiple, vae_grid.token_shape) == ((1, 1, 1), 8, (4, 16, 16))


def test_problem_names_what_is_wrong_and_what_would_work():
    grid = LatentGrid(4, 8, (2, 2, 2))
    assert grid.problem(13, 64, 64) is None  # 4 latent frames: 2 patches
    assert grid.problem(12, 64, 64) == "num_frames=12 is not 1 + k*4 (use 9 or 13)"
    assert grid.problem(9, 64, 64) == "num_frames=9 gives 3 latent frames, not a multiple of the patch's 2"
    assert grid.problem(13, 40, 64) == "height=40 is not a multiple of 16 (use 32 or 48)"
    assert grid.problem(13, 64, 8) == "width=8 is not a multiple of 16 (use 16 or 16)"
    assert LatentGrid(4, 8, frame_multiple=8).problem(13, 64, 64) == "num_frames=13 is not 1 + k*8 (use 9 or 17)"
