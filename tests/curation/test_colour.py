"""Motion that only colour shows: a blue disc moving over an orange background of the same luma
(the clip that grayscale curation dropped as static), and its still mirror, through `videogen curate`."""

import json

import numpy as np

from data_recipes.curate import change
from data_recipes.curate.frames import decode_clip, encode_rgb, luma
from videogen.cli import main
from videogen.data.decode import make_decoder
from videogen.data.stages import Record
from videogen.data.writer import TarShardWriter

BLUE, ORANGE = (76, 105, 207), (213, 66, 27)  # BT.601 luma 108 and 106


def disc_clip(key, speed, h=96, w=128, fps=24, seconds=4, noise=2.0, crf=23, seed=0):
    """A disc of radius 14 going back and forth at ``speed`` px/frame, camera noise, x264 at ``crf``."""
    rng = np.random.default_rng(seed)
    t = fps * seconds
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    span = w - 40
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        x = (speed * i) % (2 * span)
        cx = 20 + (x if x <= span else 2 * span - x)  # back and forth, no jump
        cover = np.clip(14.5 - np.hypot(xx - cx, yy - h / 2), 0, 1)[..., None]  # (h, w, 1) anti-aliased
        img = np.asarray(ORANGE, np.float64) + (np.asarray(BLUE, np.float64) - ORANGE) * cover
        frames[i] = np.clip(np.rint(img + rng.normal(0, noise, img.shape)), 0, 255)
    return {"__key__": key, "mp4": encode_rgb(frames, fps, crf), "txt": f"a blue disc, {key}",
            "json": {"width": w, "height": h, "num_frames": t, "fps": fps, "duration": float(seconds)}}


def test_luma_alone_cannot_see_the_disc_move():
    """The premise: between consecutive decoded frames almost no pixel moves by over 6 luma levels (the
    old frozen test: every pair frozen), while the colour test sees the disc's edges change."""
    s = disc_clip("moving", 2.0)
    m = s["json"]
    clip = decode_clip(Record("moving", "t.tar", "mp4", s["mp4"], "", m, 128, 96, m["num_frames"], 24), make_decoder(),
                       128, 512)
    gray = luma(clip.frames)
    luma_changed = (np.abs(np.diff(gray, axis=0)) > change.LUMA_CHANGED).mean(axis=(1, 2))
    assert luma_changed.max() < change.FROZEN_CHANGED
    assert change.changed_fractions(clip.frames).min() > 2 * change.FROZEN_CHANGED


def test_isoluminant_motion_is_kept_and_its_still_mirror_dropped(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    with TarShardWriter(src / "shard-000000.tar") as writer:
        writer.write(disc_clip("moving", 2.0))
        writer.write(disc_clip("still", 0.0, seed=1))
    assert main(["curate", "--data", str(src), "--out", str(out), "--workers", "1", "--no-progress",
                 "--no-histograms"]) == 0
    rep = json.loads((out / "curation.json").read_text())
    by_key = {s["key"]: s for s in rep["samples"]}
    assert set(by_key) == {"moving", "still"}  # neither is cut into scenes by the noise
    moving, still = by_key["moving"], by_key["still"]
    assert moving["kept"] and moving["reasons"] == []
    assert moving["scores"]["frozen_fraction"] == 0.0 and moving["scores"]["motion"] > 100 * 5e-5
    assert moving["scores"]["jitter"] < 0.015
    assert not still["kept"] and still["reasons"][0] == "motion:static"
    assert still["scores"]["still"] and still["scores"]["motion"] == 0.0
    assert rep["output"]["samples"] == 1
