"""``videogen make-shards`` on real mp4 files written here with PyAV (a few frames each)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest

import data_recipes.make_shards.write as ms
from data_recipes.make_shards import MakeShardsError, make_shards
from videogen.data.decode import ImageDecoder, PyAVDecoder
from videogen.data.manifest import DatasetManifest

TINY_SHARDS = 0.001  # MB: every sample gets a shard of its own


def write_mp4(path: Path, width: int, height: int, frames: int, fps: int = 8) -> None:
    """Frame i is a flat grey of level 5 * i mod 250 (so a decoded frame tells its index). Odd sizes are
    written as 4:4:4 (4:2:0 needs even sides); .webm as VP8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    webm = path.suffix == ".webm"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libvpx" if webm else "libx264", rate=fps)
        s.width, s.height = width, height
        s.pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
        s.options = {} if webm else {"preset": "ultrafast", "crf": "10"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((height, width, 3), (5 * i) % 250, np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    """{shard name: {member name: bytes}} for every finished shard."""
    shards = {}
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            shards[tar_path.name] = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return shards


def samples(out: Path) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} over all shards."""
    result: dict[str, dict[str, bytes]] = {}
    for members in read_shards(out).values():
        for name, data in members.items():
            key, ext = name.split(".", 1)
            result.setdefault(key, {})[ext] = data
    return result


@pytest.fixture
def acceptance(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_mp4(src / "hd" / "big.mp4", 1280, 720, 3)
    write_mp4(src / "mid.mp4", 640, 272, 4)
    write_mp4(src / "small" / "tiny.mp4", 176, 144, 5)
    (src / "hd" / "big.txt").write_text("a red car on a bridge", encoding="utf-8")
    (src / "mid.txt").write_text("ein Hund läuft über die Wiese", encoding="utf-8")
    (src / "small" / "tiny.txt").write_text("一只猫在睡觉 🐈", encoding="utf-8")
    (src / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (src / "corrupt.txt").write_text("never used", encoding="utf-8")
    (src / "empty.mp4").write_bytes(b"")
    (src / "notes.md").write_text("# not a video\n", encoding="utf-8")
    return src


EXPECTED = {"hd__big": (3, 720, 1280), "mid": (4, 272, 640), "small__tiny": (5, 144, 176)}


def test_acceptance_folder_gives_three_resolutions_and_lists_bad_files(acceptance, tmp_path, capsys):
    out = tmp_path / "out"
    manifest = make_shards(acceptance, out, shard_size_mb=TINY_SHARDS)

    saved = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert saved["resolutions"] == {"1280x720": 1, "640x272": 1, "176x144": 1}
    assert saved["num_samples"] == 3 and saved["num_shards"] == 3 == len(list(out.glob("*.tar")))
    assert {s["file"]: s["reason"] for s in saved["skipped"]} == {
        "corrupt.mp4": "unreadable", "empty.mp4": "empty file", "notes.md": "not media"}
    assert all(s["detail"] for s in saved["skipped"])
    assert DatasetManifest.load(out).to_dict()["resolutions"] == manifest.to_dict()["resolutions"]
    assert saved["created_by"]["command"] == "make-shards" and saved["created_by"]["files_seen"] == 10

    got = samples(out)
    assert set(got) == set(EXPECTED)
    for key, (frames, height, width) in EXPECTED.items():
        sample = got[key]
        assert set(sample) == {"mp4", "txt", "json"}
        meta = json.loads(sample["json"])
        source = meta["source"]
        assert sample["mp4"] == (acceptance / source).read_bytes()  # stored as it was, not re-encoded
        assert sample["txt"].decode("utf-8") == (acceptance / source).with_suffix(".txt").read_text("utf-8")
        assert (meta["width"], meta["height"], meta["num_frames"], meta["fps"], meta["codec"]) == (
            width, height, frames, 8.0, "h264")
        assert meta["duration"] == pytest.approx(frames / 8)
        video = PyAVDecoder().decode(sample["mp4"], list(range(frames)))
        assert video.shape == (frames, height, width, 3)

    report = capsys.readouterr().out
    assert "10 files seen, 3 samples written to 3 shards" in report
    assert "empty file 1, not media 1, unreadable 1" in report


def test_captions_from_jsonl_and_csv_in_any_unicode(tmp_path):
    src = tmp_path / "src"
    write_mp4(src / "clips" / "a.mp4", 64, 48, 3)
    write_mp4(src / "b.mp4", 64, 48, 3)
    write_mp4(src / "c.mp4", 64, 48, 3)
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(src / "photo.jpeg")
    (src / "b.txt").write_text("sidecar caption", encoding="utf-8")
    rows = [{"file": "clips/a.mp4", "caption": "  Ένα πουλί πετάει  "}, {"path": "photo.jpeg", "text": "رجل يمشي"},
            {"video": "b.mp4", "caption": "the file wins over the sidecar"}, {"file": "gone.mp4", "caption": "x"}]
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text('\ufefffile,caption\nclips/a.mp4,"  Ένα πουλί πετάει  "\nphoto.jpeg,"رجل يمشي"\n'
                        'b.mp4,"the file wins over the sidecar"\n', encoding="utf-8")

    for captions, out in [(jsonl, tmp_path / "j"), (csv_file, tmp_path / "c")]:
        manifest = make_shards(src, out, captions=captions, progress=False)
        got = {k: v["txt"].decode("utf-8") for k, v in samples(out).items()}
        assert got == {"clips__a": "Ένα πουλί πετάει", "photo": "رجل يمشي", "b": "the file wins over the sidecar"}
        assert [(s["file"], s["reason"]) for s in manifest.skipped] == [("c.mp4", "no caption")]
        photo = samples(out)["photo"]
        assert set(photo) == {"jpg", "txt", "json"}  # jpeg is stored under the one spelling "jpg"
        assert ImageDecoder().decode(photo["jpg"], [0]).shape == (1, 30, 40, 3)
        assert json.loads(photo["json"])["num_frames"] == 1

    kept = make_shards(src, tmp_path / "all", allow_missing_captions=True, progress=False)
    assert kept.num_samples == 4 and kept.skipped == []
    assert samples(tmp_path / "all")["c"]["txt"] == b""

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "b.mp4", "caption": "ok"}\n{"file": oops}\n', encoding="utf-8")
    with pytest.raises(MakeShardsError, match=r"bad.jsonl line 2: not valid JSON"):
        make_shards(src, tmp_path / "bad", captions=bad, progress=False)
    no_header = tmp_path / "bad.csv"
    no_header.write_text("name,words\nb.mp4,hello\n", encoding="utf-8")
    with pytest.raises(MakeShardsError, match=r"bad.csv: the csv header .* needs a 'file'"):
        make_shards(src, tmp_path / "bad2", captions=no_header, progress=False)


def test_filters_skip_with_reasons(tmp_path):
    src = tmp_path / "src"
    write_mp4(src / "small.mp4", 32, 48, 4)  # shorter side 32
    write_mp4(src / "short.mp4", 64, 64, 2)
    write_mp4(src / "long.mp4", 64, 64, 24)  # 3 s at 8 fps
    write_mp4(src / "ok.mp4", 64, 64, 8)  # 1 s
    for name in ("small", "short", "long", "ok"):
        (src / f"{name}.txt").write_text(name, encoding="utf-8")
    manifest = make_shards(src, tmp_path / "out", min_side=48, min_frames=3, max_duration=2.0, progress=False)
    assert {s["file"]: s["reason"] for s in manifest.skipped} == {
        "small.mp4": "too small", "short.mp4": "too few frames", "long.mp4": "too long"}
    assert set(samples(tmp_path / "out")) == {"ok"}


def test_clip_seconds_cuts_frame_accurate_h264_clips(tmp_path):
    src = tmp_path / "src"
    write_mp4(src / "six.mp4", 64, 48, 48, fps=8)  # 6 s
    write_mp4(src / "one.mp4", 64, 48, 8, fps=8)  # 1 s: shorter than a clip, kept as it is
    (src / "six.txt").write_text("six seconds", encoding="utf-8")
    (src / "one.txt").write_text("one second", encoding="utf-8")
    manifest = make_shards(src, tmp_path / "out", clip_seconds=2.0, progress=False)
    got = samples(tmp_path / "out")
    assert sorted(got) == ["one", "six-c000", "six-c001", "six-c002"]
    assert got["one"]["mp4"] == (src / "one.mp4").read_bytes()
    assert "clip" not in json.loads(got["one"]["json"])
    for k in range(3):
        clip = got[f"six-c{k:03d}"]
        meta = json.loads(clip["json"])
        assert meta["clip"] == [2.0 * k, 2.0 * (k + 1)]
        assert (meta["num_frames"], meta["duration"], meta["codec"], meta["source"]) == (16, 2.0, "h264", "six.mp4")
        assert clip["txt"] == b"six seconds"
        info = PyAVDecoder().probe(clip["mp4"])
        assert (info.width, info.height, info.num_frames, info.fps, info.codec) == (64, 48, 16, 8.0, "h264")
        frames = PyAVDecoder().decode(clip["mp4"], list(range(16)))
        # frame j of clip k is source frame 16k + j, grey level 5 * (16k + j)
        levels = frames.reshape(16, -1).mean(axis=1)
        np.testing.assert_allclose(levels, 5 * (16 * k + np.arange(16)), atol=2.0)
    assert manifest.to_dict()["resolutions"] == {"64x48": 4}


def test_clip_limit_is_max_duration_and_short_tail_is_dropped(tmp_path):
    src = tmp_path / "src"
    write_mp4(src / "five.mp4", 64, 48, 41, fps=8)  # 5.125 s: 2 clips of 16 frames + a 9-frame tail, kept
    write_mp4(src / "four.mp4", 64, 48, 36, fps=8)  # 4.5 s: 2 clips + a 4-frame tail (< half a clip), dropped
    write_mp4(src / "three.mp4", 64, 48, 24, fps=8)  # 3 s <= --max-duration 4: kept whole
    manifest = make_shards(src, tmp_path / "out", max_duration=4.0, clip_seconds=2.0,
                           allow_missing_captions=True, progress=False)
    got = samples(tmp_path / "out")
    assert sorted(got) == ["five-c000", "five-c001", "five-c002", "four-c000", "four-c001", "three"]
    tail = json.loads(got["five-c002"]["json"])
    assert (tail["num_frames"], tail["clip"]) == (9, [4.0, 5.125])
    assert PyAVDecoder().probe(got["five-c002"]["mp4"]).num_frames == 9
    assert manifest.skipped == []
    with pytest.raises(MakeShardsError, match="longer than --max-duration"):
        make_shards(src, tmp_path / "x", max_duration=1.0, clip_seconds=2.0, progress=False)


def test_clips_of_odd_sized_video_lose_one_pixel_and_say_so(tmp_path):
    src = tmp_path / "src"
    write_mp4(src / "odd.mp4", 65, 49, 16, fps=8)  # 2 s
    make_shards(src, tmp_path / "out", clip_seconds=1.0, allow_missing_captions=True, progress=False)
    got = samples(tmp_path / "out")
    assert sorted(got) == ["odd-c000", "odd-c001"]
    for clip in got.values():
        meta = json.loads(clip["json"])
        assert (meta["width"], meta["height"], meta["num_frames"]) == (64, 48, 8)
        assert PyAVDecoder().decode(clip["mp4"], list(range(8))).shape == (8, 48, 64, 3)


def test_two_workers_write_the_same_shards_as_one(acceptance, tmp_path):
    write_mp4(acceptance / "cut.mp4", 64, 48, 24, fps=8)
    (acceptance / "cut.txt").write_text("cut me", encoding="utf-8")
    kwargs = dict(clip_seconds=1.0, max_duration=1.0, shard_size_mb=0.004, progress=False)
    one = make_shards(acceptance, tmp_path / "w1", workers=1, **kwargs)
    two = make_shards(acceptance, tmp_path / "w2", workers=2, **kwargs)
    assert read_shards(tmp_path / "w1") == read_shards(tmp_path / "w2")
    assert len(one.shards) >= 3
    d1, d2 = one.to_dict(), two.to_dict()
    del d1["created_by"], d2["created_by"]
    assert d1 == d2


def test_resume_after_interruption_keeps_finished_shards(acceptance, tmp_path, monkeypatch):
    fresh = make_shards(acceptance, tmp_path / "fresh", shard_size_mb=TINY_SHARDS, progress=False)
    out = tmp_path / "out"
    real_write, calls = ms.write_shard, []

    def interrupted(src, out_dir, index, items):
        calls.append(index)
        if len(calls) == 2:  # the second shard dies half-written
            (Path(out_dir) / f"shard-{index:06d}.tar.tmp").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        return real_write(src, out_dir, index, items)

    monkeypatch.setattr(ms, "write_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_shards(acceptance, out, shard_size_mb=TINY_SHARDS, progress=False)
    assert [p.name for p in out.glob("*.tar")] == ["shard-000000.tar"] and not (out / "dataset.json").exists()
    first = (out / "shard-000000.tar").stat()

    monkeypatch.setattr(ms, "write_shard", real_write)
    os.utime(out / "shard-000000.tar", ns=(1, 1))  # a rewrite would change this
    resumed = make_shards(acceptance, out, shard_size_mb=TINY_SHARDS, progress=False)
    after = (out / "shard-000000.tar").stat()
    assert (after.st_ino, after.st_mtime_ns) == (first.st_ino, 1)
    assert not list(out.glob("*.tmp"))
    assert read_shards(out).keys() == read_shards(tmp_path / "fresh").keys()
    assert samples(out).keys() == samples(tmp_path / "fresh").keys()
    for key, members in samples(out).items():
        assert members == samples(tmp_path / "fresh")[key]
    a, b = resumed.to_dict(), fresh.to_dict()
    del a["created_by"], b["created_by"]
    assert a == b

    # a finished run rerun: nothing is rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    make_shards(acceptance, out, shard_size_mb=TINY_SHARDS, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == mtimes


def test_other_arguments_or_foreign_shards_in_out_are_refused(acceptance, tmp_path):
    out = tmp_path / "out"
    make_shards(acceptance, out, progress=False)
    with pytest.raises(MakeShardsError, match=r"other arguments \(min_side: 0 -> 200\)"):
        make_shards(acceptance, out, min_side=200, progress=False)
    write_mp4(acceptance / "new.mp4", 64, 48, 3)
    with pytest.raises(MakeShardsError, match="changed since"):
        make_shards(acceptance, out, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data-000.tar").write_bytes(b"")
    with pytest.raises(MakeShardsError, match="no plan for"):
        make_shards(acceptance, foreign, progress=False)


def test_keys_are_sanitised_and_unique(tmp_path):
    src = tmp_path / "src"
    for rel in ["a.b/c d.mp4", "a_b/c_d.mp4", "a_b__c_d.mp4", "a_b/c_d.webm", "视频/猫.mp4", "x-c000.mp4", "x.mp4"]:
        write_mp4(src / rel, 32, 32, 2 if rel != "x.mp4" else 16)
    manifest = make_shards(src, tmp_path / "out", clip_seconds=1.0, allow_missing_captions=True, progress=False)
    got = samples(tmp_path / "out")
    assert manifest.num_samples == len(got) == 8  # x.mp4 gives two clips
    assert all("." not in k and "/" not in k and k.isascii() and len(k) <= 90 for k in got)
    assert {json.loads(v["json"])["source"] for v in got.values()} == {
        "a.b/c d.mp4", "a_b/c_d.mp4", "a_b__c_d.mp4", "a_b/c_d.webm", "视频/猫.mp4", "x-c000.mp4", "x.mp4"}
    # the first path in sorted order keeps the plain key; later clashes get a hash of their path
    assert {"a_b__c_d", "x-c000"} <= set(got)
    assert json.loads(got["a_b__c_d"]["json"])["source"] == "a.b/c d.mp4"
    assert json.loads(got["x-c000"]["json"])["source"] == "x-c000.mp4"
    assert sum(k.startswith("a_b__c_d-") for k in got) == 3 and sum(k.startswith("x-") for k in got) == 3
    webm = [v for v in got.values() if json.loads(v["json"])["source"] == "a_b/c_d.webm"]
    assert set(webm[0]) == {"webm", "txt", "json"}


def test_cli_runs_the_recipe_and_reports_errors(acceptance, tmp_path, capsys):
    from videogen.cli import main

    out = tmp_path / "out"
    assert main(["make-shards", "--src", str(acceptance), "--out", str(out), "--workers", "1"]) == 0
    assert "3 samples written" in capsys.readouterr().out
    assert main(["make-shards", "--src", str(acceptance), "--out", str(out), "--min-side", "9", "--workers", "1"]) == 2
    assert "other arguments (min_side: 0 -> 9)" in capsys.readouterr().err


def test_shards_parse_cleanly_in_the_streaming_data_path(acceptance, tmp_path):
    from videogen.data.shards import expand_urls
    from videogen.data.stages import Skips, group_samples, parse, read_tar

    out = tmp_path / "out"
    make_shards(acceptance, out, shard_size_mb=TINY_SHARDS, progress=False)
    skips = Skips()
    records = list(parse(group_samples(read_tar(expand_urls(str(out)), skips, 1 << 30)), skips, PyAVDecoder()))
    assert skips.counts == {}
    assert {r.key: (r.num_frames, r.height, r.width) for r in records} == EXPECTED


def test_a_sample_that_fails_while_writing_is_skipped_not_fatal(tmp_path):
    src = tmp_path / "src"
    write_mp4(src / "good.mp4", 64, 48, 16)
    (src / "garbage.mp4").write_bytes(b"\0" * 500)  # e.g. overwritten after it was probed
    info = {"width": 64, "height": 48, "fps": 8.0, "num_frames": 16, "duration": 2.0, "codec": "h264"}
    good = {"source": "good.mp4", "size": (src / "good.mp4").stat().st_size, "caption": "ok", "info": info}
    items = [{**good, "key": "good-c000", "ext": "mp4", "clip": [0, 8]},
             {**good, "key": "good-c001", "ext": "mp4", "clip": [8, 16]},
             {**good, "key": "grown", "ext": "mp4", "size": 1},
             {"source": "garbage.mp4", "size": 500, "caption": "x", "info": info, "key": "garbage", "ext": "mp4",
              "clip": [0, 8]}]
    record = ms.write_shard(str(src), str(tmp_path / "out"), 0, items)
    assert record["stats"]["num_samples"] == 2 and sorted(samples(tmp_path / "out")) == ["good-c000", "good-c001"]
    assert [(s["file"], s["reason"]) for s in record["skipped"]] == [("good.mp4", "write failed"),
                                                                      ("garbage.mp4", "write failed")]
    assert "source changed since it was probed" in record["skipped"][0]["detail"]
    saved = json.loads((tmp_path / "out" / ".make-shards" / "shard-000000.done.json").read_text())
    assert saved == record


def test_inspect_reads_the_acceptance_set(acceptance, tmp_path, capsys):
    pytest.importorskip("videogen.commands.inspect")
    from videogen.cli import main

    out = tmp_path / "out"
    make_shards(acceptance, out, shard_size_mb=TINY_SHARDS, progress=False)
    assert main(["inspect", str(out), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["num_samples"], report["num_shards"]) == (3, 3)
    assert report["resolutions"] == {"1280x720": 1, "640x272": 1, "176x144": 1}
    assert report["bad_samples"] == []
    assert {s["file"]: s["reason"] for s in report["skipped"]} == {
        "corrupt.mp4": "unreadable", "empty.mp4": "empty file", "notes.md": "not media"}
