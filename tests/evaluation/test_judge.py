"""The synthetic judge inside `videogen evaluate` agrees with the ground truth on real synthetic clips
(made by `videogen make-synthetic`, decoded from their mp4s), whether the targets come from the json
attributes or are read back from the long captions."""

import pytest

from videogen.cli import main
from videogen.data.stages import Skips
from videogen.evaluation.judge import ATTRIBUTES, prompt_attributes
from videogen.evaluation.suite import Tools, evaluate
from videogen.evaluation.videos import read_shard_videos


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """60 clips (10% stills) decoded with their long and short captions."""
    out = tmp_path_factory.mktemp("synth")
    assert main(["make-synthetic", "--out", str(out), "--num-samples", "60", "--seed", "7",
                 "--val-fraction", "0", "--image-fraction", "0.1"]) == 0
    skips = Skips(max_logged=0)
    videos = {c: read_shard_videos(str(out / "train"), skips, caption=c) for c in ("long", "txt")}
    assert all(len(v) == 60 for v in videos.values()) and sum(skips.counts.values()) == 0
    return videos


@pytest.mark.slow
@pytest.mark.parametrize("source", ["attributes", "long", "txt"])
def test_judge_agrees_with_the_ground_truth(synthetic, source):
    import copy

    videos = copy.copy(synthetic["txt" if source == "txt" else "long"])
    videos = [copy.copy(v) for v in videos]
    truth = [dict(v.attributes) for v in videos]
    if source != "attributes":
        for v in videos:
            v.attributes = None  # the targets come from the prompt's words alone
    metrics, details = evaluate(videos, ["judge"], Tools(progress=False), Skips(max_logged=0))
    named = ("colour", "shape") if source == "txt" else ATTRIBUTES
    for a in named:
        assert metrics[f"judge_{a}"] >= 0.99, (a, metrics)
    assert metrics["judge_all"] >= 0.99
    if source == "txt":
        assert "judge_direction" not in metrics  # a short caption names no direction
    for v, want, row in zip(videos, truth, details["videos"]):
        assert all(row["judge"]["want"][a] == want[a] for a in row["judge"]["want"])


def test_prompt_attributes_reads_the_synthetic_vocabulary():
    assert prompt_attributes("A small white circle moves to the right across the frame. It stands out against a "
                             "uniform, solid brown background.") == {"size": "small", "colour": "white",
                                                                      "shape": "circle", "direction": "right"}
    assert prompt_attributes("a red square") == {"colour": "red", "shape": "square"}
    assert prompt_attributes("The image shows a large yellow circle.")["direction"] == "none"
    assert prompt_attributes("a cat playing piano") == {}
