"""`videogen curate` end to end on real shards of real mp4s: what each step finds (the acceptance
check, small), the output loading as a dataset, resuming, shard groups, bad inputs, refusals."""

import json
import logging
import tarfile

import numpy as np
import pytest

from curation_fixtures import labelled, src  # noqa: F401  (fixtures)
from data_recipes.curate import CurateError, CurateOptions, curate
from data_recipes.curate.testset import KINDS, evaluate
from videogen.cli import main
from videogen.data.manifest import DatasetManifest
from videogen.data.writer import TarShardWriter


def clip_sample(key, width, height, frames, fps=12, seed=0):
    """A real H.264 clip of a square moving right (test helpers of tests/conftest.py are not imported here:
    another folder's conftest.py can take the `conftest` module name first in a full run)."""
    from data_recipes.curate.frames import encode_rgb

    rng = np.random.default_rng(seed)
    video = np.empty((frames, height, width, 3), np.uint8)
    video[:] = rng.integers(0, 80, size=3)
    side = max(8, min(width, height) // 3)
    for i in range(frames):
        x = int(i * (width - side) / max(1, frames - 1))
        video[i, height // 3: height // 3 + side, x: x + side] = (230, 40, 40)
    return {"__key__": key, "mp4": encode_rgb(video, fps), "txt": f"clip {key}",
            "json": {"width": width, "height": height, "num_frames": frames, "fps": fps, "duration": frames / fps}}


def write_tar(path, samples):
    with TarShardWriter(path) as writer:
        for sample in samples:
            writer.write(sample)


def run(src, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("histograms", False)
    options = kw.pop("options", CurateOptions())
    return curate(str(src), out, options, **kw)


def tar_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_each_kind_is_found_and_the_rest_kept(labelled, tmp_path):
    src, labels = labelled
    rep = run(src, tmp_path / "out")
    result = evaluate(rep, labels)
    for kind in KINDS:
        assert result[kind]["clips"] >= 1
        assert (result[kind]["precision"], result[kind]["recall"]) == (1.0, 1.0), (kind, result[kind])
    kept_sources = {s["source"].split("/")[1] for s in rep["samples"] if s["kept"]}
    kept_kinds = ("normal", "two_scene", "letterbox", "colour_motion")
    assert kept_sources == {k for k, v in labels.items() if v["kind"] in kept_kinds}
    # the two-scene clips: two pieces each, re-encoded, caption and json carried over
    out = DatasetManifest.load(tmp_path / "out")
    assert out.num_samples == rep["output"]["samples"] == sum(s["kept"] for s in rep["samples"])
    pieces = {}
    for tar in sorted((tmp_path / "out").glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(t.extractfile(m).read())
                    pieces[m.name[:-5]] = meta
    two = [k for k, v in labels.items() if v["kind"] == "two_scene"][0]
    s0, s1 = pieces[f"{two}_s0"], pieces[f"{two}_s1"]
    assert abs(s1["curation"]["scene"]["start_frame"] - labels[two]["cut"]) <= 2
    assert s0["num_frames"] + s1["num_frames"] == labels[two]["num_frames"]
    assert s0["captions"]["long"] and s0["attributes"] == s1["attributes"]  # the rest of the json carried over
    box = [k for k, v in labels.items() if v["kind"] == "letterbox"][0]
    assert [pieces[box]["width"], pieces[box]["height"]] == labels[box]["content"]  # bars cropped off
    assert all(not m["curation"]["duplicate"] and not m["curation"]["static"] for m in pieces.values())
    assert out.created_by["curation"]["scores"]["motion"] == "number"
    assert out.created_by["curation"]["scores"]["duplicate"] == "bool"
    count = {kind: sum(v["kind"] == kind for v in labels.values()) for kind in KINDS}
    assert rep["steps"]["motion"]["dropped"] == {"static": count["static"] + count["colour_static"],
                                                 "jittery": count["jittery"]}
    assert rep["steps"]["quality"]["dropped"] == {"black": count["black"]}  # black clips are static too: quality's
    assert rep["steps"]["dedup"]["dropped"] == {"duplicate": count["duplicate"]}
    assert rep["steps"]["scene-split"]["clips_split"] == count["two_scene"]


def test_keep_all_writes_every_sample_flagged_and_filters_select_later(labelled, tmp_path):
    src, labels = labelled
    rep = run(src, tmp_path / "all", options=CurateOptions(keep_all=True))
    assert rep["output"]["samples"] == rep["pieces"] == len(labels) + 1  # the two-scene clip became two
    # a filter at curate time: same scores, selection by expression
    good = [s for s in rep["samples"] if not s["reasons"]]
    cut = float(np.median([s["scores"]["motion"] for s in good]))
    rep2 = run(src, tmp_path / "moving", options=CurateOptions(filter=f"motion > {cut} and num_scenes == 1"))
    kept = {s["key"] for s in rep2["samples"] if s["kept"]}
    expected = {s["key"] for s in good if s["scores"]["motion"] > cut and s["scores"]["num_scenes"] == 1}
    assert kept == expected and 0 < len(kept) < len(good)
    assert rep2["steps"]["filter"] == {"in": len(good), "expression": f"motion > {cut} and num_scenes == 1",
                                       "dropped": {"false": len(good) - len(kept)}, "kept": len(kept)}


def test_histograms_and_report(labelled, tmp_path):
    src, _ = labelled
    rep = run(src, tmp_path / "out", histograms=True)
    saved = json.loads((tmp_path / "out" / "curation.json").read_text())
    assert saved["samples"] == rep["samples"] and saved["format"] == "videogen-curation/1"
    from PIL import Image

    for name in ("motion", "jitter", "sharpness", "black_fraction", "brightness"):
        assert f"{name}.png" in saved["histograms"]
        with Image.open(tmp_path / "out" / "histograms" / f"{name}.png") as img:
            assert img.width >= 400 and img.height >= 200
            assert len(set(img.convert("L").getdata())) > 2  # something was drawn


def test_pil_histograms_when_there_is_no_matplotlib(tmp_path):
    from PIL import Image

    from data_recipes.curate.report import histograms

    entries = [{"scores": {"motion": float(v), "duplicate": False}} for v in np.linspace(0, 0.1, 20)]
    names = histograms(tmp_path, entries, CurateOptions(), backend="pil")
    assert names == ["motion.png"]
    with Image.open(tmp_path / "motion.png") as img:
        px = np.asarray(img.convert("RGB"))
    assert (px == (70, 110, 200)).all(axis=-1).sum() > 500  # the bars
    assert ((px[..., 0] > 200) & (px[..., 1] < 50)).sum() > 50  # the red threshold line


class CountingScorer:
    """A real scorer: mean red of the frames; logs every call to a file, and fails while `boom` exists."""

    name = "redness"

    def __init__(self, folder):
        self.folder = folder

    def score(self, frames, caption, meta):
        if (self.folder / "boom").exists() and (self.folder / "calls").exists() and \
                len((self.folder / "calls").read_text().split()) >= 6:
            raise KeyboardInterrupt("simulated kill")
        with open(self.folder / "calls", "a") as f:
            f.write(caption.replace(" ", "_") + "\n")
        return round(float(frames[..., 0].mean()) / 255, 6)


def test_plugin_scorer_adds_a_score_and_resume_skips_done_shards(labelled, tmp_path):
    src, labels = labelled
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "boom").touch()
    scorer = CountingScorer(log_dir)
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of the second shard
        run(src, tmp_path / "out", scorers=[scorer])
    done = sorted(p.name for p in (tmp_path / "out" / ".curate" / "scored").glob("*.done.json"))
    assert done == ["shard-000000.done.json"]
    assert not list((tmp_path / "out").glob("*.tar"))  # nothing written before every shard is scored
    first_calls = len((log_dir / "calls").read_text().split())
    (log_dir / "boom").unlink()
    rep = run(src, tmp_path / "out", scorers=[scorer])
    calls = len((log_dir / "calls").read_text().split())
    shard0 = sum(1 for s in rep["samples"] if s["source"].startswith("shard-000000") and "redness" in s["scores"])
    assert calls - first_calls == rep["pieces"] - shard0  # shard 0 was not scored again
    assert rep["timing"]["shards_scored_now"] == rep["inputs"]["shards"] - 1
    assert all(isinstance(s["scores"]["redness"], float) for s in rep["samples"] if "phash" in s["scores"])
    assert DatasetManifest.load(tmp_path / "out").created_by["curation"]["scores"]["redness"] == "number"
    # the same as an uninterrupted run, with two worker processes
    ref = run(src, tmp_path / "ref", scorers=[CountingScorer(log_dir)], workers=2)
    assert tar_bytes(tmp_path / "out") == tar_bytes(tmp_path / "ref")
    assert rep["samples"] == ref["samples"]


def test_shard_groups_then_merge_equal_one_run(labelled, tmp_path):
    src, _ = labelled
    ref = run(src, tmp_path / "ref")
    out = tmp_path / "grouped"
    assert run(src, out, shard_index=1, num_shard_groups=2)["unscored"] == 2
    assert not (out / "dataset.json").exists()
    assert run(src, out, shard_index=0, num_shard_groups=2) == {"group_done": 0, "scored_now": 2, "unscored": 0}
    merged = run(src, out)
    assert merged["timing"]["shards_scored_now"] == 0
    assert merged["samples"] == ref["samples"] and tar_bytes(out) == tar_bytes(tmp_path / "ref")
    with pytest.raises(CurateError, match="--shard-index 2 is not in"):
        run(src, out, shard_index=2, num_shard_groups=2)


def test_thresholds_change_without_rescoring_but_scoring_options_are_refused(labelled, tmp_path):
    src, _ = labelled
    first = run(src, tmp_path / "out")
    looser = run(src, tmp_path / "out", options=CurateOptions(max_jitter=10.0))
    assert looser["timing"]["shards_scored_now"] == 0
    assert looser["output"]["samples"] == first["output"]["samples"] + 1  # the jittery clip is kept now
    with pytest.raises(CurateError, match="scored with other options .*analysis_side: 128 -> 64"):
        run(src, tmp_path / "out", options=CurateOptions(analysis_side=64))
    (tmp_path / "foreign").mkdir()
    write_tar(tmp_path / "foreign" / "x.tar", [clip_sample("a", 64, 64, 9)])
    with pytest.raises(CurateError, match="already holds shards"):
        run(src, tmp_path / "foreign")
    with pytest.raises(CurateError, match="no such shard"):
        run(tmp_path / "nothing-here.tar", tmp_path / "o2")


class FailsOn:
    """A scorer with a bug that shows on one caption."""

    name = "fragile"

    def __init__(self, caption):
        self.caption = caption

    def score(self, frames, caption, meta):
        if caption == self.caption:
            raise ValueError("no score for this one")
        return 1.0


def test_bad_inputs_are_counted_skips(src, tmp_path):
    folder, labels = src
    corrupt = clip_sample("corrupt", 96, 64, 9, seed=1)
    corrupt["mp4"] = corrupt["mp4"][: len(corrupt["mp4"]) // 2]
    empty = clip_sample("empty", 96, 64, 9)
    empty["mp4"] = b""
    bad_json = clip_sample("bad_json", 96, 64, 9)
    bad_json["json"] = b'{"width": 96,'
    write_tar(folder / "shard-000009.tar", [clip_sample("good", 96, 64, 13, seed=3), corrupt, empty, bad_json,
                                            clip_sample("scorer_fails", 96, 64, 13, seed=4)])
    (folder / "shard-000010.tar").write_bytes(b"this is not a tar file at all" * 40)
    rep = run(folder, tmp_path / "out", scorers=[FailsOn("clip scorer_fails")])
    assert rep["inputs"]["skipped_reasons"] == {"decode_error": 1, "empty_media": 1, "bad_json": 1, "not_a_tar": 1,
                                                "score_error": 1}
    manifest = DatasetManifest.load(tmp_path / "out")
    assert sorted(s["reason"] for s in manifest.skipped) == ["bad_json", "decode_error", "empty_media", "not_a_tar",
                                                             "score_error"]
    failed = next(s for s in manifest.skipped if s["reason"] == "score_error")
    assert failed["file"] == "shard-000009.tar/scorer_fails" and "ValueError: no score for this one" in failed["detail"]
    assert any(s["file"] == "shard-000009.tar/corrupt" for s in manifest.skipped)
    assert any(s["key"] == "good" and s["kept"] for s in rep["samples"])


def test_cli_curate_inspect_and_errors(labelled, tmp_path, capsys, caplog):
    src, _ = labelled
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="videogen.curate"):
        assert main(["curate", "--data", str(src), "--out", str(out), "--workers", "1", "--no-progress",
                     "--static-motion", "0.0001", "--no-histograms"]) == 0
    notices = [r for r in caplog.records if "clip_score skipped" in r.getMessage()]
    assert len(notices) == 1  # one notice for the run, not one per clip
    rep = json.loads((out / "curation.json").read_text())
    assert rep["options"]["static_motion"] == 0.0001
    capsys.readouterr()
    assert main(["inspect", str(out), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["curation"]["motion"]["count"] == report["num_samples"] == rep["output"]["samples"]
    assert report["curation"]["duplicate"] == {"count": report["num_samples"], "true": 0}
    assert main(["inspect", str(out), "--no-progress"]) == 0
    assert "curation scores" in capsys.readouterr().out
    assert main(["curate", "--data", str(src), "--out", str(tmp_path / "o2"), "--filter", "motion >> 1"]) == 2
    assert "column 9" in capsys.readouterr().err
    assert main(["curate", "--data", str(src), "--out", str(tmp_path / "o3"), "--steps", "motion,blur"]) == 2
    assert "unknown curation step 'blur'" in capsys.readouterr().err
    assert main(["curate", "--data", str(src), "--out", str(tmp_path / "o4"), "--filter", "motoin > 1",
                 "--no-progress"]) == 2
    assert "unknown name 'motoin'" in capsys.readouterr().err


def test_bad_options_are_clear_errors(labelled, tmp_path):
    src, _ = labelled
    with pytest.raises(ValueError, match="unknown curation step 'blur'"):
        CurateOptions(steps=("motion", "blur"))
    with pytest.raises(ValueError, match="no curation steps given"):
        CurateOptions(steps=())
    with pytest.raises(ValueError, match="min_scene_frames >= 1"):
        CurateOptions(min_scene_frames=0)
    with pytest.raises(ValueError, match="dedup_max_distance is in bits of a 256-bit hash"):
        CurateOptions(dedup_max_distance=300)
    with pytest.raises(CurateError, match="--workers must be >= 1"):
        run(src, tmp_path / "o", workers=0)
    with pytest.raises(CurateError, match="give both --shard-index and --num-shard-groups"):
        run(src, tmp_path / "o", shard_index=0)
    from videogen.errors import RefusedFile

    with pytest.raises(RefusedFile, match="is the input folder"):
        run(src, src)
    with pytest.raises(FileNotFoundError, match="clip_model .*no config.json"):
        run(src, tmp_path / "o", options=CurateOptions(clip_model=str(tmp_path)))
    assert not (tmp_path / "o").exists()  # refused before anything was written
