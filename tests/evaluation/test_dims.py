"""VBench-style per-video dimensions on constructed clips with known answers."""

import numpy as np

from eval_clips import moving_square, static_clip
from videogen.evaluation import dims


def test_a_static_clip_has_dynamic_degree_zero_and_a_moving_one_is_dynamic():
    still, moving = dims.motion(static_clip()), dims.motion(moving_square())
    assert still == (False, 0.0)
    assert moving[0] is True and moving[1] > 0.02  # ~5 px per frame over a 64 px short side
    assert dims.motion(static_clip(1)) is None


def test_a_flickering_clip_scores_worse_on_flicker():
    smooth = moving_square()
    flicker = smooth.copy()
    flicker[::2] = np.clip(flicker[::2].astype(int) + 50, 0, 255)  # brightness jumps every other frame
    assert dims.temporal_flicker(static_clip()) == 1.0
    assert dims.temporal_flicker(flicker) < dims.temporal_flicker(smooth) - 0.1


def test_shuffled_frames_score_worse_on_smoothness():
    clip = moving_square(frames=13, speed=4)
    order = np.array([0, 7, 2, 11, 4, 9, 6, 1, 8, 12, 10, 3, 5])
    smooth, shuffled = dims.motion_smoothness(clip), dims.motion_smoothness(clip[order])
    assert smooth > 0.995 and shuffled < smooth - 0.005
    # the flow-compensated interpolation beats a plain average of the neighbours on real motion
    plain = 1 - np.mean([np.abs((clip[t - 1].astype(float) + clip[t + 1]) / 2 - clip[t]).mean()
                         for t in range(1, 12, 2)]) / 255
    assert smooth > plain


def test_consistency_of_features():
    f = np.ones((5, 8))
    assert abs(dims.consistency(f) - 1.0) < 1e-12
    changing = np.eye(5, 8)  # every frame orthogonal to the others
    assert dims.consistency(changing) == 0.0
    assert dims.consistency(f[:1]) is None
