"""The loading code of the local-weights extractors, exercised with tiny random models saved to files:
an I3D-shaped net as TorchScript and an InceptionI3d state dict, a CLIP folder; the VAE's features;
the reference-statistics cache."""

import numpy as np
import pytest
import torch

from eval_clips import moving_square, static_clip
from eval_models import state_dict_i3d, tiny_clip, tiny_dino, torchscript_i3d
from videogen.data.stages import Skips
from videogen.evaluation.features import CLIPFeatures, I3DFeatures, ImageEncoderFeatures, cache_path
from videogen.evaluation.frechet import GaussianStats, frechet_distance
from videogen.evaluation.i3d import InceptionI3d
from videogen.evaluation.videos import fit_clip


def clips(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [fit_clip(moving_square(speed=int(rng.integers(1, 6)), colour=tuple(int(c) for c in rng.integers(60, 255, 3))),
                     9, 64, 96) for _ in range(n)]


def test_torchscript_i3d_loads_and_fvd_of_a_set_against_itself_is_zero(tmp_path):
    i3d = I3DFeatures(torchscript_i3d(tmp_path / "i3d.pt"))
    assert i3d.scripted and i3d.identity["extractor"] == "i3d"
    feats = i3d(clips())
    assert feats.shape == (6, 12) and np.isfinite(feats).all()
    assert abs(frechet_distance(GaussianStats.of(feats), GaussianStats.of(i3d(clips())))) < 1e-6
    assert frechet_distance(GaussianStats.of(feats), GaussianStats.of(i3d(clips(seed=1)))) > 0


def test_state_dict_i3d_loads_into_inception_i3d_with_its_width_and_classes(tmp_path):
    i3d = I3DFeatures(state_dict_i3d(tmp_path / "rgb.pt"))
    assert not i3d.scripted and isinstance(i3d.net, InceptionI3d)
    assert i3d.net.num_classes == 10 and i3d.net.width == pytest.approx(4 / 64)
    assert i3d(clips(2)).shape == (2, 10)


def test_bad_i3d_files_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        I3DFeatures(tmp_path / "missing.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an InceptionI3d state dict"):
        I3DFeatures(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="neither TorchScript nor a state dict"):
        I3DFeatures(tmp_path / "junk.pt")


def test_the_real_i3d_has_the_pytorch_i3d_parameter_names():
    names = InceptionI3d().state_dict()
    assert "Conv3d_1a_7x7.conv3d.weight" in names and "Mixed_5c.b3b.bn.running_var" in names
    assert names["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)


def test_clip_folder_loads_and_scores_alignment(tmp_path):
    clip = CLIPFeatures(tiny_clip(tmp_path / "clip"))
    video = fit_clip(moving_square(), 9, 64, 96)
    score = clip.alignment(video, "a red square moves right")
    assert -1.0 <= score <= 1.0
    subject, background = clip.frame_features(video)
    assert subject.shape == (9, 16) and background.shape[0] == 9
    assert clip.alignment(fit_clip(static_clip(), 9, 64, 96), "a red square") != pytest.approx(score)
    with pytest.raises(FileNotFoundError, match="not a CLIP model folder"):
        CLIPFeatures(tmp_path)


def test_image_encoder_folder_gives_subject_and_background_features(tmp_path):
    from videogen.evaluation import dims

    encoder = ImageEncoderFeatures(tiny_dino(tmp_path / "dino"))
    subject, background = encoder.frame_features(fit_clip(moving_square(), 9, 64, 96))
    assert subject.shape == (9, 32) and background.shape == (9, 16 * 32)
    still_subject, _ = encoder.frame_features(fit_clip(static_clip(), 9, 64, 96))
    assert abs(dims.consistency(still_subject) - 1.0) < 1e-6 and dims.consistency(subject) < 1.0
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        ImageEncoderFeatures(tmp_path)


def test_cache_key_follows_the_set_and_the_extractor(tmp_path, clip_shards):
    a = I3DFeatures(torchscript_i3d(tmp_path / "a.pt"))
    b = I3DFeatures(state_dict_i3d(tmp_path / "b.pt"))
    key = cache_path(tmp_path, str(clip_shards), a, {"shape": [9, 64, 96]})
    assert key == cache_path(tmp_path, str(clip_shards), a, {"shape": [9, 64, 96]})
    assert key != cache_path(tmp_path, str(clip_shards), b, {"shape": [9, 64, 96]})
    assert key != cache_path(tmp_path, str(clip_shards), a, {"shape": [9, 32, 32]})
    shard = sorted(clip_shards.glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes() + b"\0" * 1024)  # the set changed
    assert key != cache_path(tmp_path, str(clip_shards), a, {"shape": [9, 64, 96]})


def test_reference_statistics_are_cached_and_reused(tmp_path, clip_shards, monkeypatch):
    from videogen.evaluation import suite
    from videogen.evaluation.suite import Tools, reference_stats

    i3d = I3DFeatures(torchscript_i3d(tmp_path / "a.pt"))
    tools = Tools(i3d=i3d, reference=str(clip_shards), cache_dir=tmp_path / "cache", progress=False)
    first = reference_stats(tools, i3d, Skips(max_logged=0))
    assert first.count == 24 and len(list((tmp_path / "cache").glob("i3d-*.npz"))) == 1

    def no_reading(*a, **k):
        raise AssertionError("the reference set was read again")

    monkeypatch.setattr(suite, "iter_shard_videos", no_reading)
    again = reference_stats(Tools(i3d=i3d, reference=str(clip_shards), cache_dir=tmp_path / "cache", progress=False),
                            i3d, Skips(max_logged=0))
    assert np.array_equal(again.sigma, first.sigma)
    monkeypatch.undo()
    cached = next((tmp_path / "cache").glob("i3d-*.npz"))
    cached.write_bytes(b"damaged")  # a damaged cache file is computed again, not trusted
    fresh = reference_stats(Tools(i3d=i3d, reference=str(clip_shards), cache_dir=tmp_path / "cache", progress=False),
                            i3d, Skips(max_logged=0))
    assert np.allclose(fresh.sigma, first.sigma) and GaussianStats.load(cached).count == 24
