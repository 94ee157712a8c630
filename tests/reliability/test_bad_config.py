"""Bad configuration through the real CLI: each is one line naming the key or file and what is
expected, exit status 2, before any training step (no step is recorded, no checkpoint written)."""

import pytest

from reliability_helpers import fit_config, make_shards, tiny_dit_model, tiny_vae_model
from videogen.cli import main


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("cfg") / "shards", n=2, shards=1)


def fit_error(tmp_path, capsys, model, shards, *overrides, **data):
    record = tmp_path / "steps.jsonl"
    cfg = fit_config(tmp_path / "c.yaml", tmp_path / "run", shards, model, 2, every=1, record=record, **data)
    try:
        status = main(["fit", "--config", str(cfg), *overrides])
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert not record.exists() and not (tmp_path / "run" / "ckpt").exists()  # nothing ran
    return err


def line_with(text: str, *needles: str) -> str:
    lines = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert lines, f"no single line holds {needles}:\n{text[-2000:]}"
    return lines[0]


def test_unknown_key(tmp_path, capsys, shards):
    err = fit_error(tmp_path, capsys, tiny_vae_model(), shards, "--model.init_args.learning_rate=0.1")
    line_with(err, "learning_rate")


def test_wrong_type(tmp_path, capsys, shards):
    err = fit_error(tmp_path, capsys, tiny_vae_model(), shards, "--model.init_args.max_bad_steps=many")
    line_with(err, "max_bad_steps", "many")


def test_impossible_value_in_a_constructor(tmp_path, capsys, shards):
    err = fit_error(tmp_path, capsys, tiny_vae_model(), shards,
                    "--model.init_args.vae.init_args.temporal_compression=3")
    line_with(err, "videogen: error:", "temporal_compression=3", "use 1, 2 or 4")


def test_frames_that_do_not_match_the_vae_temporal_compression(tmp_path, capsys, shards):
    err = fit_error(tmp_path, capsys, tiny_vae_model(), shards,
                    bucketer={"batch_size": 2, "buckets": [{"num_frames": 8, "height": 32, "width": 48}]})
    line_with(err, "videogen: error:", "data.init_args.bucketer.buckets[0] (8x32x48)", "num_frames=8 is not 1 + k*4",
              "use 5 or 9")


def test_sizes_not_divisible_by_the_vae_compression_times_the_dit_patch(tmp_path, capsys, shards, vae_export):
    # 36 is fine for the VAE (x4) but not for its latents cut into 2x2 patches (x8)
    err = fit_error(tmp_path, capsys, tiny_dit_model(vae_export), shards,
                    bucketer={"batch_size": 2, "buckets": [{"num_frames": 9, "height": 36, "width": 48}]})
    line_with(err, "videogen: error:", "data.init_args.bucketer.buckets[0] (9x36x48)", "height=36 is not a multiple of 8",
              "patch_size=(1, 2, 2)")


def test_a_typed_token_shape_that_is_not_the_dits_is_refused(tmp_path, capsys, shards, vae_export):
    """The tiny VAE (4x4x4) under a 1x2x2 patch makes tokens of 4x8x8 pixels: a config typing 4x16x16 (a
    token budget would size its batches 4x too large) is refused at setup in one line, before any step."""
    err = fit_error(tmp_path, capsys, tiny_dit_model(vae_export), shards, "--data.init_args.bucketer.token_budget=400",
                    "--data.init_args.bucketer.token_shape=[4, 16, 16]")
    line_with(err, "videogen: error:", "data.init_args.bucketer.token_shape=[4, 16, 16]", "makes tokens of [4, 8, 8]",
              "leave token_shape out")


def test_an_unset_token_shape_is_the_dits():
    """Left unset, the bucketer's token shape is the DiT stage's (VAE compression x patch), so a token budget
    sizes batches by the model's real tokens; a VAE stage (no DiT tokens) leaves it as it is."""
    from types import SimpleNamespace

    from videogen.callbacks.config_check import check_token_shape
    from videogen.data import Bucket, Bucketer, VideoDataModule

    from videogen.models.latent_grid import LatentGrid

    dit = SimpleNamespace(dit=SimpleNamespace(patch_size=(1, 2, 2)), latent_grid=LatentGrid(4, 8, (1, 2, 2), source="vae"))
    dm = VideoDataModule("unused", bucketer=Bucketer([Bucket(9, 64, 64)], token_budget=100))
    with pytest.raises(ValueError, match="needs the token shape"):
        dm.bucketer.batch_size_of(dm.bucketer.buckets[0])
    check_token_shape(dit, dm)
    assert dm.bucketer.token_shape == (4, 16, 16) and dm.bucketer.batch_size_of(dm.bucketer.buckets[0]) == 100 // 48
    vae = SimpleNamespace(latent_grid=LatentGrid(4, 8))
    unset = VideoDataModule("unused", bucketer=Bucketer([Bucket(9, 64, 64)], token_budget=100))
    check_token_shape(vae, unset)
    assert unset.bucketer.token_shape is None


def test_missing_checkpoint_path(tmp_path, capsys, shards):
    err = fit_error(tmp_path, capsys, tiny_vae_model(), shards, f"--ckpt_path={tmp_path / 'nope.ckpt'}")
    line_with(err, "videogen: error:", f"ckpt_path={tmp_path / 'nope.ckpt'}", "no such checkpoint file")


def test_missing_vae_export_for_the_dit(tmp_path, capsys, shards):
    err = fit_error(tmp_path, capsys, tiny_dit_model(tmp_path / "no-vae"), shards)
    line_with(err, "videogen: error:", str(tmp_path / "no-vae"), "no such export folder or checkpoint")


def test_missing_shards(tmp_path, capsys, shards):
    err = fit_error(tmp_path, capsys, tiny_vae_model(), shards, f"--data.init_args.train_shards={tmp_path / 'none'}")
    line_with(err, "videogen: error:", "data.init_args.train_shards", str(tmp_path / "none"))


def test_latent_cache_written_by_another_vae(tmp_path, capsys, shards, vae_export):
    """(The identity check itself: tests/test_encode.py::test_stale_cache_is_refused.) Through `videogen fit`
    the DiT refuses, at setup, a cache that another VAE wrote, naming both; no step runs."""
    from conftest import tiny_export
    from videogen.pipelines.encode import encode

    other = tiny_export(tmp_path / "other-vae", seed=1)
    cache = encode(str(other), str(shards), tmp_path / "cache", max_area=32 * 48, max_frames=9, num_workers=0,
                   accelerator="cpu", devices=1, progress=False)
    err = fit_error(tmp_path, capsys, tiny_dit_model(vae_export), cache)
    line_with(err, "videogen: error:", "latents were written by the VAE at", "other-vae", "re-run `videogen encode")


def test_a_vae_that_needs_longer_frame_steps_refuses_buckets_between_them():
    """CogVideoX's decoder takes 1 + 8k frames (an odd latent count) although it compresses time 4x: its
    stats' frame_multiple, not the compression, decides which bucket lengths pass the setup check."""
    from types import SimpleNamespace

    import pytest

    from videogen.callbacks.config_check import check_shapes
    from videogen.data.buckets import Bucket
    from videogen.errors import ConfigError
    from videogen.models.latent_grid import LatentGrid

    assert LatentGrid(4, 8, (1, 2, 2)).problem(13, 64, 64) is None
    grid = LatentGrid.from_stats({"temporal_compression": 4, "spatial_compression": 8, "frame_multiple": 8},
                                 (1, 2, 2), "cogvideox-vae")
    assert grid.problem(13, 64, 64) == "num_frames=13 is not 1 + k*8 (use 9 or 17)"
    module = SimpleNamespace(latent_grid=grid)
    ok = SimpleNamespace(bucketer=SimpleNamespace(buckets=[Bucket(17, 64, 64)]))
    check_shapes(module, ok)
    bad = SimpleNamespace(bucketer=SimpleNamespace(buckets=[Bucket(17, 64, 64), Bucket(13, 64, 64)]))
    with pytest.raises(ConfigError, match=r"buckets\[1\] .*num_frames=13 is not 1 \+ k\*8 \(use 9 or 17\)"):
        check_shapes(module, bad)
