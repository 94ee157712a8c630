"""Each curation step on real encoded clips: cut positions, motion and jitter, black frames,
letterbox bars, perceptual hashes; scorers (a tiny real CLIP, class paths, the skip notice)."""

import dataclasses
import logging

import numpy as np
import pytest

from curation_fixtures import make_tiny_clip
from data_recipes.curate import dedup, motion, quality, scene
from data_recipes.curate.frames import decode_clip, encode_rgb
from data_recipes.curate.scorers import ClipScore, build_scorers, load_scorer
from data_recipes.curate.testset import _second_scene, _shake, _spec
from data_recipes.synthetic import render_frames
from videogen.data.decode import make_decoder
from videogen.data.stages import Record


def clip_of(frames, fps, crf=18):
    data = encode_rgb(frames, fps, crf)
    t, h, w = frames.shape[:3]
    return decode_clip(Record("k", "test.tar", "mp4", data, "c", {}, w // 2 * 2, h // 2 * 2, t, fps), make_decoder(),
                       128, 512)


@pytest.fixture(scope="module")
def spec():
    return _spec(0, 50, 0)


@pytest.mark.parametrize("cut", [9, 14, 20])
def test_a_hard_cut_is_found_within_two_frames(spec, cut):
    other = _second_scene(spec, np.random.default_rng(cut))
    frames = np.concatenate([render_frames(spec)[:cut], render_frames(other)])
    c = clip_of(frames, spec.fps)
    cuts = scene.detect_cuts(scene.cut_scores(c.frames), 0.15, 4.0)
    ranges = scene.scene_ranges(c.num_frames, c.indices, cuts)
    assert len(ranges) == 2 and abs(ranges[1][0] - cut) <= 2 and ranges[-1][1] == len(frames)
    assert scene.detect_cuts(scene.cut_scores(clip_of(render_frames(spec), spec.fps).frames), 0.15, 4.0) == []


def test_motion_separates_static_moving_and_shaking(spec):
    still = clip_of(render_frames(dataclasses.replace(spec, end=spec.start)), spec.fps)
    moving = clip_of(render_frames(spec), spec.fps)
    shaky = clip_of(_shake(render_frames(spec), np.random.default_rng(0)), spec.fps)
    m = {name: motion.motion_scores(c.frames, c.indices, c.fps) for name, c in
         [("still", still), ("moving", moving), ("shaky", shaky)]}
    assert m["still"]["motion"] < 5e-5 < m["moving"]["motion"]
    assert m["moving"]["jitter"] < 0.015 < m["shaky"]["jitter"]
    # at another frame rate the same clip's motion per second scales with it
    fast = clip_of(render_frames(spec), spec.fps * 2)
    assert motion.motion_scores(fast.frames, fast.indices, fast.fps)["motion"] == pytest.approx(
        2 * m["moving"]["motion"], rel=0.05)


def test_quality_black_frozen_and_letterbox(spec):
    t, h, w = spec.num_frames, spec.height, spec.width
    black = clip_of(np.zeros((t, h, w, 3), np.uint8), spec.fps)
    q = quality.quality_scores(black.frames, len(black.media), black.width, black.height, black.duration)
    assert q["black_fraction"] == 1.0 and q["brightness"] < 0.02 and q["letterbox"] is None and q["still"]
    frames = render_frames(spec)
    half_frozen = np.concatenate([frames[: t // 2], np.repeat(frames[t // 2: t // 2 + 1], t - t // 2, axis=0)])
    c = clip_of(half_frozen, spec.fps)
    q = quality.quality_scores(c.frames, len(c.media), c.width, c.height, c.duration)
    assert 0.4 < q["frozen_fraction"] < 0.6 and not q["still"] and q["black_fraction"] == 0
    boxed = np.pad(frames, ((0, 0), (10, 10), (0, 0), (0, 0)))
    c = clip_of(boxed, spec.fps)
    q = quality.quality_scores(c.frames, len(c.media), c.width, c.height, c.duration)
    assert q["letterbox"] == [10, 10, 0, 0]
    pillar = np.pad(frames, ((0, 0), (0, 0), (8, 12), (0, 0)))
    c = clip_of(pillar, spec.fps)
    assert quality.quality_scores(c.frames, len(c.media), c.width, c.height, c.duration)["letterbox"] == [0, 0, 8, 12]
    q = quality.quality_scores(clip_of(frames, spec.fps).frames, 1000, w, h, 2.0)
    assert q["letterbox"] is None and q["bitrate_kbps"] == 4.0 and q["sharpness"] > 0


def test_hashes_link_copies_and_reencodes_only(spec):
    import cv2

    frames = render_frames(spec)
    small = np.stack([cv2.resize(f, (spec.width * 3 // 4 // 2 * 2, spec.height * 3 // 4 // 2 * 2),
                                 interpolation=cv2.INTER_AREA) for f in frames])
    other = render_frames(_second_scene(spec, np.random.default_rng(1)))
    sigs = [dedup.signatures(clip_of(f, spec.fps, crf).frames) for f, crf in
            [(frames, 18), (frames, 18), (small, 32), (other, 18)]]
    assert sigs[0] == sigs[1]
    pairs = dedup.linked_pairs([s["phash"] for s in sigs], 40, [s["colour_layout"] for s in sigs], 6.0)
    # the exact copy is linked to its first clip at once; the re-encode to the distinct signature it is near
    assert [(int(i), int(j)) for i, j, _ in pairs] == [(0, 1), (0, 2)] and pairs[0, 2] == 0
    assert pairs[1, 2] == dedup.distance(sigs[0]["phash"], sigs[2]["phash"]) <= 40
    assert dedup.groups(4, pairs) == [[0, 1, 2]]
    colours = dedup.colour_rows([sigs[0]["colour_layout"], sigs[3]["colour_layout"]]).astype(int)
    assert dedup.distance(sigs[0]["phash"], sigs[3]["phash"]) > 40 or np.abs(colours[0] - colours[1]).mean() > 6


def test_clip_scorer_runs_a_local_model(tmp_path, spec):
    folder = make_tiny_clip(tmp_path / "clip")
    scorer = load_scorer(f"data_recipes.curate.scorers.ClipScore={folder}")
    frames = clip_of(render_frames(spec), spec.fps).frames
    a = scorer.score(frames, "a red circle", {})
    assert -1.0 <= a <= 1.0 and a == scorer.score(frames, "a red circle", {})
    assert scorer.score(frames, "a red circle", {"captions": {"long": "something else entirely"}}) != a


def test_scorer_specs_and_the_skip_notice(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ClipScore(str(tmp_path))
    with pytest.raises(ValueError, match="has no name attribute or score"):
        load_scorer("collections.OrderedDict")
    with pytest.raises(ValueError, match="cannot import"):
        load_scorer("no_such_module.Scorer")
    with pytest.raises(ValueError, match="give a class path"):
        load_scorer("Scorer")
    with caplog.at_level(logging.WARNING, logger="videogen.curate"):
        assert build_scorers(None, ()) == []
    assert [r.getMessage() for r in caplog.records] == [
        "curate: clip_score skipped: no clip_model given (--clip-model DIR, a local Hugging Face CLIP folder)"]
