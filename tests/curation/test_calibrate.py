"""`videogen curate --calibrate`: per rule the threshold decide.py used, how many fail it, and PNG
strips of the pieces nearest the threshold on each side, drawn from the right clips."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from curation_fixtures import labelled  # noqa: F401  (fixture)
from data_recipes.curate import calibrate
from data_recipes.curate.decide import RULES
from data_recipes.curate.frames import decode_clip, spread
from videogen.cli import main
from videogen.data import stages
from videogen.data.decode import make_decoder


def analysis_frames(tar, key):
    skips, dec = stages.Skips(), make_decoder()
    for r in stages.parse(stages.group_samples(stages.read_tar([str(tar)], skips, 2**31)), skips, dec,
                          require_caption=False):
        if r.key == key:
            return decode_clip(r, dec, 128, 512).frames
    raise KeyError(key)


def test_calibration_shows_each_threshold_with_the_clips_either_side(labelled, tmp_path):
    src, labels = labelled
    out = tmp_path / "out"
    assert main(["curate", "--data", str(src), "--out", str(out), "--workers", "1", "--no-progress", "--no-histograms",
                 "--calibrate", "--static-motion", "0.01"]) == 0
    rep = json.loads((out / "curation.json").read_text())
    cal = rep["calibration"]
    by_key = {s["key"]: s for s in rep["samples"]}
    assert {"motion:static", "jitter:jittery", "black_fraction:black", "frozen_fraction:frozen"} <= set(cal)
    for name, item in cal.items():
        rule = next(r for r in RULES if f"{r.score}:{r.flag}" == name)
        assert item["threshold"] == rep["options"][rule.option]  # what decide.py judged with
        flagged = [s for s in rep["samples"] if s["scores"].get(rule.flag) is True]
        assert item["failing"] == len(flagged)  # ... and the pieces it flagged
        assert item["quantiles"]["0"] <= item["quantiles"]["0.5"] <= item["quantiles"]["1"]
        for side, examples in item["examples"].items():
            assert len(examples) == min(calibrate.EXAMPLES, item["failing"] if side == "drop"
                                        else item["pieces"] - item["failing"])
            for ex in examples:
                assert by_key[ex["key"]]["scores"][rule.flag] is (side == "drop")
                assert by_key[ex["key"]]["scores"][rule.score] == ex["value"]
    static = cal["motion:static"]
    assert static["threshold"] == 0.01 and static["failing"] > 3
    # the drop side nearest the threshold first: its values rise towards it, the keep side's rise from it
    drops = [ex["value"] for ex in static["examples"]["drop"]]
    keeps = [ex["value"] for ex in static["examples"]["keep"]]
    assert drops == sorted(drops, reverse=True) and max(drops) < 0.01 <= min(keeps) and keeps == sorted(keeps)
    # the PNGs are images of those clips: four of its analysis frames side by side, a caption under them
    for ex in static["examples"]["drop"] + static["examples"]["keep"]:
        png = out / ex["png"]
        assert png.is_file() and png.parent == out / "calibration" / "static"
        img = np.asarray(Image.open(png).convert("RGB"))
        shard = by_key[ex["key"]]["source"].split("/")[0]
        frames = analysis_frames(out / ".curate" / "scored" / shard, ex["key"])
        t, h, w = frames.shape[:3]
        assert img.shape == (h + calibrate.CAPTION, calibrate.FRAMES * w, 3)
        for n, i in enumerate(spread(t, calibrate.FRAMES)):
            assert np.array_equal(img[:h, n * w:(n + 1) * w], frames[i])
        assert (img[h:] < 128).any()  # the caption is written
    # a rerun that only judges again draws it again, for its own thresholds
    assert main(["curate", "--data", str(src), "--out", str(out), "--workers", "1", "--no-progress", "--no-histograms",
                 "--calibrate"]) == 0
    again = json.loads((out / "curation.json").read_text())["calibration"]["motion:static"]
    assert again["threshold"] == 5e-5 and again["failing"] < static["failing"]
    assert all((out / ex["png"]).is_file() for side in again["examples"].values() for ex in side)
    assert not any(p.name.startswith("drop-") and p.name not in {Path(ex["png"]).name for ex in
                   again["examples"]["drop"]} for p in (out / "calibration" / "static").iterdir())



