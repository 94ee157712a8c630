"""The synthetic set (data_recipes/synthetic.py) and `videogen make-synthetic`."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_recipes.synthetic import FPS, GRADIENT, NUM_FRAMES, draw_spec, generate_sample, split_indices, write_synthetic
from videogen.cli import main as cli_main
from videogen.data.decode import decoder_for, make_decoder
from videogen.data.manifest import DatasetManifest, scan_shard
from videogen.evaluation.judge import judge_clip
from videogen.evaluation.synthetic_world import (BACKGROUND_STYLES, BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, SIZES,
                                                 SPEEDS, STILL)

SET_ARGS = dict(num_samples=10, seed=3, val_fraction=0.2, image_fraction=0.3, shard_size=4)


def read_shard(path: Path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes}, in tar order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def member_hashes(split_dir: Path) -> list[tuple[str, str, str]]:
    return [(shard.name, name, hashlib.sha256(data).hexdigest())
            for shard in sorted(split_dir.glob("*.tar"))
            for key, members in read_shard(shard).items() for name, data in sorted(members.items())]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, write_synthetic(out, **SET_ARGS)


@pytest.fixture(scope="module")
def clips():
    """72 video samples (seed 0) decoded back from their mp4 bytes."""
    decoder = make_decoder()
    out = []
    for index in range(72):
        sample = generate_sample(index, seed=0)
        meta = sample["json"]
        out.append((sample, decoder.decode(sample["mp4"], range(meta["num_frames"]))))
    return out


def test_manifest_counts_equal_shard_contents(tiny_set):
    out, summary = tiny_set
    assert (summary["train"]["samples"], summary["val"]["samples"]) == (8, 2)
    assert (summary["train"]["shards"], summary["val"]["shards"]) == (2, 1)
    keys = []
    for split in ("train", "val"):
        manifest = DatasetManifest.load(out / split)
        assert manifest.created_by["command"] == "make-synthetic"
        assert manifest.created_by["args"]["seed"] == 3
        for stats in manifest.shards:
            samples = read_shard(out / split / stats.name)
            assert stats.num_samples == len(samples) == scan_shard(out / split / stats.name).num_samples
            assert stats.size_bytes == (out / split / stats.name).stat().st_size
            keys += list(samples)
        assert manifest.num_samples == summary[split]["samples"]
    assert keys == [f"synth-{i:06d}" for i in range(10)]  # train 0-7, val 8-9, in order


def test_same_seed_same_bytes_other_seed_differs(tiny_set, tmp_path):
    out, _ = tiny_set
    again = write_synthetic(tmp_path / "again", **SET_ARGS)
    other = write_synthetic(tmp_path / "other", **{**SET_ARGS, "seed": 4})
    assert again["train"]["shards"] == other["train"]["shards"] == 2
    for split in ("train", "val"):
        ours = member_hashes(out / split)
        assert ours == member_hashes(tmp_path / "again" / split)
        for shard in sorted((out / split).glob("*.tar")):  # whole shards too (the writer stamps a fixed mtime)
            assert shard.read_bytes() == (tmp_path / "again" / split / shard.name).read_bytes()
        theirs = dict(((s, n), h) for s, n, h in member_hashes(tmp_path / "other" / split))
        media = [(s, n) for s, n, _ in ours if n.endswith(("mp4", "png"))]
        assert all(dict(((s, n), h) for s, n, h in ours)[k] != theirs.get(k) for k in media)
    # a sample is a function of (seed, index) alone, whatever set it was written in
    assert generate_sample(9, 3, 0.3)["json"] == json.loads(read_shard(out / "val" / "shard-000000.tar")
                                                            ["synth-000009"]["json"])


def test_decoded_media_match_json(tiny_set):
    out, _ = tiny_set
    decoder, exts = make_decoder(), Counter()
    for shard in sorted(out.glob("*/*.tar")):
        for key, members in read_shard(shard).items():
            meta = json.loads(members["json"])
            ext = "mp4" if "mp4" in members else "png"
            exts[ext] += 1
            frames = decoder_for(ext, decoder).decode(members[ext], range(meta["num_frames"]))
            assert frames.shape == (meta["num_frames"], meta["height"], meta["width"], 3), key
            info = decoder_for(ext, decoder).probe(members[ext])
            assert (info.num_frames, info.fps) == (meta["num_frames"], meta["fps"]), key
            assert meta["duration"] == pytest.approx(meta["num_frames"] / meta["fps"] if meta["fps"] else 0.0)
            assert meta["source"] == "synthetic" and members["txt"].decode() == "a {colour} {shape}".format(
                **meta["attributes"])
    assert exts["mp4"] > 0 and exts["png"] > 0  # image_fraction 0.3 gave both kinds


def test_attributes_match_the_captions():
    words = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS),
             "speed": list(SPEEDS), "size": list(SIZES), "background": list(BACKGROUNDS),
             "background_style": list(BACKGROUND_STYLES)}
    openings = set()
    for index in range(60):
        sample = generate_sample(index, seed=1, image_fraction=0.2)
        attrs, long = sample["json"]["attributes"], sample["json"]["captions"]["long"]
        found = {k: [w for w in names if re.search(rf"\b{w}\b", long)] for k, names in words.items()}
        for k, names in found.items():
            expected = [] if attrs[k] == STILL else [attrs[k]]
            assert names == expected, (k, attrs, long)
        assert long.count(".") >= 3, long
        openings.add(long.split()[1])
    assert len(openings) >= 3  # the wording varies


def test_judge_scores_decoded_clips(clips):
    hits, total = Counter(), len(clips)
    for sample, frames in clips:
        attrs, verdict = sample["json"]["attributes"], judge_clip(frames)
        for k in ("colour", "direction", "shape", "speed", "size", "background"):
            hits[k] += verdict[k] == attrs[k]
        assert verdict["area"] >= 0.10, (sample["__key__"], verdict["area"])  # objects are large
    print({k: f"{v}/{total}" for k, v in hits.items()})
    assert total >= 60
    assert hits["colour"] / total >= 0.98 and hits["direction"] / total >= 0.98
    assert hits["shape"] / total >= 0.90
    assert min(hits[k] for k in ("speed", "size", "background")) / total >= 0.90


def test_judge_on_a_still_image_and_on_an_empty_clip():
    sample = generate_sample(0, seed=5, image_fraction=1.0)
    assert "png" in sample and sample["json"]["num_frames"] == 1
    frames = decoder_for("png", make_decoder()).decode(sample["png"], [0])
    verdict, attrs = judge_clip(frames), sample["json"]["attributes"]
    assert (verdict["colour"], verdict["shape"], verdict["direction"]) == (attrs["colour"], attrs["shape"], STILL)
    empty = judge_clip(np.full((3, 64, 64, 3), 40, np.uint8))
    assert empty["colour"] is None and empty["shape"] is None and empty["area"] == 0.0
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        judge_clip(np.zeros((64, 64, 3), np.uint8))


def test_objects_fill_at_least_a_tenth_of_the_frame(clips):
    for sample, frames in clips:
        meta = sample["json"]
        bg = frames[:, :, :1].astype(float)  # (T, H, 1, 3): the object never touches the left column
        area = (np.linalg.norm(frames - bg, axis=-1) > 40).mean(axis=(1, 2))  # (T,)
        assert area.min() >= 0.10, (sample["__key__"], meta["attributes"], area.min())


def test_drawn_geometry_stays_in_range():
    seen = Counter()
    for index in range(300):
        spec = draw_spec(np.random.default_rng([7, index]))
        assert 64 <= spec.width <= 160 and 64 <= spec.height <= 160
        assert spec.width % 16 == 0 and spec.height % 16 == 0
        assert spec.num_frames in NUM_FRAMES and spec.fps in FPS
        half = spec.extent / 2
        for x, y in (spec.start, spec.end):  # the whole object is inside the frame at both ends
            assert half <= x <= spec.width - half and half <= y <= spec.height - half
        seen["landscape" if spec.width > spec.height else "portrait" if spec.height > spec.width else "square"] += 1
        seen[spec.direction] += 1
    assert all(seen[k] > 20 for k in ("landscape", "portrait", "square", *DIRECTIONS))


def test_palette_is_separated():
    names = list(COLOURS) + list(SHAPES) + list(DIRECTIONS)
    for bg_name, bg in BACKGROUNDS.items():
        assert not any(re.search(rf"\b{w}\b", bg_name) for w in names)
        for colour, rgb in COLOURS.items():
            if colour in bg.clashes:
                continue
            for scale in (1.0, *GRADIENT):
                shade = np.clip(np.multiply(bg.rgb, scale), 0, 255)
                assert np.linalg.norm(np.subtract(rgb, shade)) >= 120, (colour, bg_name, scale)
    assert all(any(c not in bg.clashes for bg in BACKGROUNDS.values()) for c in COLOURS)


def test_split_indices():
    assert split_indices(10, 0.1) == {"train": list(range(9)), "val": [9]}
    assert split_indices(3, 0.01)["val"] == [2]  # asked for val: at least one sample
    assert split_indices(1, 0.5) == {"train": [0], "val": []}  # never an empty train split
    assert split_indices(5, 0.0)["val"] == []


@pytest.mark.parametrize("bad, message", [
    ({"num_samples": 0}, "--num-samples"), ({"val_fraction": -0.1}, "--val-fraction"),
    ({"val_fraction": 1.0}, "--val-fraction"), ({"image_fraction": -0.5}, "--image-fraction"),
    ({"shard_size": 0}, "--shard-size"), ({"seed": -1}, "--seed"), ({"workers": 0}, "--workers")])
def test_bad_arguments_are_named(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_synthetic(tmp_path, **{**SET_ARGS, **bad})
    assert not any(tmp_path.iterdir())


def test_cli_writes_keeps_and_rewrites(tmp_path, capsys):
    argv = ["make-synthetic", "--out", str(tmp_path), "--num-samples", "3", "--seed", "1", "--no-progress"]
    assert cli_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"train: 2 samples in 1 shards \(\d+\.\ds\) -> .*train", lines[0])
    assert lines[1].startswith("val: 1 samples in 1 shards")
    first = member_hashes(tmp_path / "train")
    assert cli_main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli_main(argv[:-2] + ["2", "--no-progress"]) == 0  # another seed: rewritten
    assert member_hashes(tmp_path / "train") != first
    assert DatasetManifest.load(tmp_path / "train").created_by["args"]["seed"] == 2

    assert cli_main(["make-synthetic", "--out", str(tmp_path / "x"), "--num-samples", "0", "--seed", "0"]) == 2
    assert "--num-samples must be a whole number >= 1" in capsys.readouterr().err


def test_foreign_shards_are_not_overwritten(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "shard-000000.tar").write_bytes(b"not ours")
    with pytest.raises(ValueError, match="did not write"):
        write_synthetic(tmp_path, **SET_ARGS)
    assert (tmp_path / "train" / "shard-000000.tar").read_bytes() == b"not ours"


def test_an_interrupted_run_is_replaced(tiny_set, tmp_path):
    out, _ = tiny_set
    write_synthetic(tmp_path, **{**SET_ARGS, "shard_size": 2})  # 4 train shards ...
    (tmp_path / "train" / "dataset.json").unlink()  # ... as if killed before the manifest
    summary = write_synthetic(tmp_path, **SET_ARGS)
    assert summary["train"]["shards"] == 2 and sorted(p.name for p in (tmp_path / "train").glob("*.tar")) == [
        "shard-000000.tar", "shard-000001.tar"]
    assert member_hashes(tmp_path / "train") == member_hashes(out / "train")


def test_workers_write_the_same_shards(tiny_set, tmp_path):
    out, _ = tiny_set
    write_synthetic(tmp_path, **SET_ARGS, workers=2)
    for split in ("train", "val"):
        for shard in sorted((out / split).glob("*.tar")):
            assert shard.read_bytes() == (tmp_path / split / shard.name).read_bytes()
