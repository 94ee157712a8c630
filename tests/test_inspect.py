"""`videogen inspect`: every sample decoded, true counts and shapes, each bad sample named with its reason."""

import json
import tarfile

import pytest

from conftest import clip_sample, write_tar
from videogen.cli import main
from videogen.data import Bucketer, LoaderOptions, VideoDataModule
from videogen.data.inspection import frame_indices
from videogen.data.manifest import DatasetManifest


def inspect_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["inspect", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def member_ends(path) -> dict[str, int]:
    with tarfile.open(path) as tar:
        return {m.name: m.offset_data + m.size for m in tar.getmembers()}


def add_bad_shards(folder):
    """shard-000004: 1 good clip + 4 bad samples; shard-000005: 4 clips cut at half its bytes;
    shard-000006: 3 clips cut in the middle of the second clip's mp4."""
    corrupt = clip_sample("corrupt", 96, 64, 9, seed=1)
    corrupt["mp4"] = corrupt["mp4"][: len(corrupt["mp4"]) // 2]  # moov atom lost: cannot be opened
    empty = clip_sample("empty", 96, 64, 9)
    empty["mp4"] = b""
    no_txt = clip_sample("no_txt", 96, 64, 9)
    del no_txt["txt"]
    bad_json = clip_sample("bad_json", 96, 64, 9)
    bad_json["json"] = b'{"width": 96, "height":'
    write_tar(folder / "shard-000004.tar", [clip_sample("good", 96, 64, 9, seed=7), corrupt, empty, no_txt, bad_json])

    half = folder / "shard-000005.tar"
    write_tar(half, [clip_sample(f"h{i}", 96, 64, 9, seed=i) for i in range(4)])
    ends, data = member_ends(half), half.read_bytes()
    cut = len(data) // 2
    half.write_bytes(data[:cut])
    whole = [f"h{i}" for i in range(4) if all(ends[f"h{i}.{e}"] <= cut for e in ("mp4", "txt", "json"))]
    assert all(ends[f"h{i}.mp4"] > cut for i in range(4) if f"h{i}" not in whole)  # no half-read sample

    mid = folder / "shard-000006.tar"
    write_tar(mid, [clip_sample(f"m{i}", 96, 64, 9, seed=i) for i in range(3)])
    with tarfile.open(mid) as tar:
        m1 = tar.getmember("m1.mp4")
    mid.write_bytes(mid.read_bytes()[: m1.offset_data + m1.size // 2])
    return whole


def test_json_reports_true_shapes_counts_and_every_bad_sample(clip_shards, capsys):
    whole = add_bad_shards(clip_shards)
    m = DatasetManifest.load(clip_shards)
    m.skipped = [{"input": "raw/broken.mov", "reason": "decode_error"}]
    m.save(clip_shards)

    rep = inspect_json(capsys, clip_shards)
    good = 24 + 1 + len(whole) + 1  # clip_shards, 'good', the whole samples before each cut
    assert rep["num_samples"] == good and rep["num_shards"] == 7
    assert rep["resolutions"] == {"96x64": 12 + 1 + len(whole) + 1, "64x64": 12}
    assert rep["fps"] == {"12": good}
    # clip_shards: 9 + k % 5 frames at 12 fps, 1 s or more for k % 5 in (3, 4): 5 + 4 clips of 24;
    # the added clips have 9 frames (0.75 s)
    assert rep["durations"] == {"0-1s": good - 9, "1-2s": 9}
    assert rep["captions"] == {"count": good, "min_words": 2, "mean_words": 2.0, "max_words": 2}
    # every frame of every good clip was decoded
    frames_in_fixture = sum(9 + k % 5 for k in range(24))
    assert rep["frames_decoded"] == frames_in_fixture + 9 * (2 + len(whole))
    bad = {(b["shard"], b["key"], b["reason"]) for b in rep["bad_samples"]}
    assert bad == {
        ("shard-000004.tar", "corrupt", "decode_error"),
        ("shard-000004.tar", "empty", "empty_media"),
        ("shard-000004.tar", "no_txt", "missing_caption"),
        ("shard-000004.tar", "bad_json", "bad_json"),
        ("shard-000005.tar", "", "truncated_shard"),
        ("shard-000006.tar", "", "truncated_shard"),
    }
    assert rep["num_bad"] == 6 and rep["bad_reasons"]["truncated_shard"] == 2
    details = {(b["shard"], b["key"]): b["detail"] for b in rep["bad_samples"]}
    assert "could not open" in details[("shard-000004.tar", "corrupt")]
    assert "0 bytes" in details[("shard-000004.tar", "empty")]
    assert "unexpected end of data" in details[("shard-000006.tar", "")]
    # 4 samples of 5 tar blocks each: half the bytes ends exactly after h2.json, which tarfile reads as a
    # whole archive; only the missing end-of-archive block shows h3 was lost
    assert whole == ["h0", "h1", "h2"] and "no end-of-archive block" in details[("shard-000005.tar", "")]
    assert rep["skipped"] == [{"input": "raw/broken.mov", "reason": "decode_error"}]
    # the manifest lists shards 0-3 only: the three added ones are reported as disagreeing with it
    assert rep["manifest"]["num_samples"] == 24
    assert {x["shard"]: (x["manifest"], x["good"]) for x in rep["manifest"]["count_mismatches"]} == {
        "shard-000004.tar": (None, 1), "shard-000005.tar": (None, len(whole)), "shard-000006.tar": (None, 1)}

    capsys.readouterr()
    assert main(["inspect", str(clip_shards)]) == 0
    text = capsys.readouterr().out
    assert f"{good} good samples, 6 bad, in 7 shards" in text
    for line in ("shard-000004.tar  corrupt  decode_error", "shard-000004.tar  no_txt  missing_caption",
                 "shard-000004.tar  bad_json  bad_json", "shard-000005.tar  (whole shard)  truncated_shard",
                 "raw/broken.mov  decode_error", "DISAGREES"):
        assert line in text

    quick = inspect_json(capsys, clip_shards, "--frames", "2")  # first and last frame only
    assert quick["num_samples"] == good and quick["frames_decoded"] == 2 * good


def test_folder_without_manifest_probes_shapes_and_catches_wrong_json(tmp_path, capsys):
    folder = tmp_path / "foreign"
    folder.mkdir()
    write_tar(folder / "a.tar", [clip_sample("p0", 64, 96, 10, fps=8, meta=False),  # no json: probed
                                 clip_sample("p1", 112, 80, 25, fps=24, meta=False)])
    wrong = clip_sample("liar", 96, 64, 9)
    wrong["json"]["width"], wrong["json"]["height"] = 64, 64
    write_tar(folder / "b.tar", [wrong, clip_sample("ok", 96, 64, 9)])
    rep = inspect_json(capsys, folder)
    assert rep["manifest"] is None and rep["skipped"] == []
    assert rep["num_samples"] == 3 and rep["num_shards"] == 2
    assert rep["resolutions"] == {"64x96": 1, "112x80": 1, "96x64": 1}
    assert rep["shapes"] == {"64x96/10@8": 1, "112x80/25@24": 1, "96x64/9@12": 1}
    assert rep["durations"] == {"1-2s": 2, "0-1s": 1}  # 10/8 s, 25/24 s, 9/12 s
    [bad] = rep["bad_samples"]
    assert (bad["shard"], bad["key"], bad["reason"]) == ("b.tar", "liar", "meta_mismatch")
    assert "json says 64x64" in bad["detail"] and "96x64" in bad["detail"]
    capsys.readouterr()
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "manifest     none" in out and "b.tar  liar  meta_mismatch" in out


def test_buckets_counts_match_what_the_loader_fills(clip_shards, tmp_path, capsys):
    cfg = tmp_path / "buckets.yaml"
    cfg.write_text("batch_size: 4\nbuckets:\n"
                   "  - {num_frames: 13, height: 64, width: 96, batch_size: 2}\n"
                   "  - {num_frames: 9, height: 64, width: 96}\n"
                   "  - {num_frames: 9, height: 64, width: 64, batch_size: 5}\n")
    rep = inspect_json(capsys, clip_shards, "--buckets", cfg)["bucketing"]
    # landscape clips k = 0, 2, ..., 22 have 9 + k % 5 frames: k = 4 and 14 have 13 and fill the 13-frame bucket
    rows = {r["bucket"]: (r["samples"], r["batch_size"], r["full_batches"], r["left_over"]) for r in rep["buckets"]}
    assert rows == {"13x64x96": (2, 2, 1, 0), "9x64x96": (10, 4, 2, 2), "9x64x64": (12, 5, 2, 2)}
    assert rep["too_short"] == 0 and rep["full_batches"] == 5

    # a training config (data.init_args.bucketer); clips under 12 frames fit no bucket
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text("data:\n  class_path: videogen.data.VideoDataModule\n  init_args:\n    bucketer:\n"
                         "      batch_size: 3\n      buckets:\n        - {num_frames: 12, height: 64, width: 64}\n")
    rep = inspect_json(capsys, clip_shards, "--buckets", train_cfg)["bucketing"]
    assert rep["buckets"] == [{"bucket": "12x64x64", "samples": 9, "batch_size": 3, "full_batches": 3,
                               "left_over": 0}]
    assert rep["too_short"] == 15
    from videogen.data import Bucket
    dm = VideoDataModule(str(clip_shards), bucketer=Bucketer([Bucket(12, 64, 64)], batch_size=3),
                         loader=LoaderOptions(num_workers=0))
    assert len(dm.train_dataloader()) == rep["full_batches"]

    capsys.readouterr()
    assert main(["inspect", str(clip_shards), "--buckets", str(train_cfg)]) == 0
    assert "15 samples too short for every bucket" in capsys.readouterr().out


def test_buckets_reads_the_data_section_as_training_does(clip_shards, tmp_path, capsys):
    """omegaconf interpolation and --data.* overrides, as `videogen fit` applies them to the section."""
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model:\n  init_args:\n    frames: 12\n"
                   "data:\n  class_path: videogen.data.VideoDataModule\n  init_args:\n    bucketer:\n"
                   "      batch_size: 3\n      buckets:\n        - num_frames: ${model.init_args.frames}\n          height: 64\n"
                   "          width: 64\n")
    rep = inspect_json(capsys, clip_shards, "--buckets", cfg)["bucketing"]
    assert rep["buckets"][0]["bucket"] == "12x64x64" and rep["too_short"] == 15  # as the literal 12 above
    rep = inspect_json(capsys, clip_shards, "--buckets", cfg, "--data.clips.frame_stride=2")["bucketing"]
    assert rep["too_short"] == 24 and rep["full_batches"] == 0  # 9..13 frames at stride 2 give 5..7: none fit
    assert main(["inspect", str(clip_shards), "--buckets", str(cfg), "--data.bucketer.batch_size=0"]) == 2
    assert "train.yaml: its data section cannot be used" in capsys.readouterr().err
    assert main(["inspect", str(clip_shards), "--data.bucketer.batch_size=2"]) == 2
    assert "only --data.* overrides of the --buckets config" in capsys.readouterr().err


def test_buckets_of_a_token_budget_need_the_token_shape(clip_shards, tmp_path, capsys):
    """Training takes the token shape from the DiT; without a model it is given, or the report is refused."""
    cfg = tmp_path / "budget.yaml"
    cfg.write_text("buckets:\n  - {num_frames: 9, height: 64, width: 64}\ntoken_budget: 100\n")
    assert main(["inspect", str(clip_shards), "--buckets", str(cfg)]) == 2
    assert "give it, e.g. --data.init_args.bucketer.token_shape" in capsys.readouterr().err
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text("data:\n  init_args:\n    bucketer:\n      token_budget: 100\n      buckets:\n"
                         "        - {num_frames: 9, height: 64, width: 64}\n")
    rep = inspect_json(capsys, clip_shards, "--buckets", train_cfg, "--data.init_args.bucketer.token_shape=[4,16,16]")
    assert rep["bucketing"]["buckets"][0]["batch_size"] == 100 // (3 * 4 * 4)


def _npy(array) -> bytes:
    import io

    import numpy as np

    f = io.BytesIO()
    np.save(f, array)
    return f.getvalue()


def test_a_latent_cache_is_reported_by_latent_shape_not_as_decode_errors(tmp_path, capsys):
    import io

    import numpy as np

    from videogen.data.manifest import ShardStats

    meta = {"width": 16, "height": 16, "num_frames": 9, "fps": 8.0}
    z = _npy(np.zeros((4, 3, 2, 2), np.float16))  # 9 frames of 16x16 at 4x8x8 compression
    header = io.BytesIO()  # a header that claims 864 GB over the same 96 bytes of data
    np.lib.format.write_array_header_1_0(header, {"descr": "<f2", "fortran_order": False,
                                                  "shape": (4000, 3000, 2000, 9)})
    huge = header.getvalue() + z[128:]
    emb = _npy(np.ones((2, 8), np.float16))
    write_tar(tmp_path / "lat.tar", [
        {"__key__": "a", "latent.npy": z, "text.txt.npy": emb, "txt": "a red ball", "json": meta},
        {"__key__": "b", "latent.npy": z, "text.txt.npy": emb, "txt": "a blue cube", "json": meta},
        {"__key__": "hostile", "latent.npy": huge, "text.txt.npy": emb, "txt": "x", "json": meta},
        {"__key__": "liar", "latent.npy": z, "text.txt.npy": emb, "txt": "x", "json": {**meta, "width": 32}},
        {"__key__": "noemb", "latent.npy": z, "txt": "a caption", "json": meta},
    ])
    DatasetManifest(shards=[ShardStats(name="lat.tar", num_samples=5)],
                    created_by={"vae": {"weights_sha256": "ab"},
                                "text_encoder": {"source": "enc", "width": 8, "max_length": 4}}).save(tmp_path)
    rep = inspect_json(capsys, tmp_path)
    assert rep["num_samples"] == 2 and rep["latents"] == {"4x3x2x2": 2} and rep["text_embeddings"] == {"txt": 2}
    assert rep["resolutions"] == {"16x16": 2} and rep["frames_decoded"] == 0
    bad = {b["key"]: (b["reason"], b["detail"]) for b in rep["bad_samples"]}
    assert set(bad) == {"hostile", "liar", "noemb"} and "decode_error" not in rep["bad_reasons"]
    assert bad["hostile"][0] == "bad_latent" and "header claims shape (4000, 3000, 2000, 9)" in bad["hostile"][1]
    assert bad["liar"][0] == "bad_latent" and "does not match the encoded clip 9x16x32" in bad["liar"][1]
    assert bad["noemb"][0] == "missing_text_embedding"
    capsys.readouterr()
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "latents      4x3x2x2: 2" in out and "text embeddings per caption  txt: 2" in out


def test_errors_name_the_folder_or_file_and_exit_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2
    assert "has no *.tar shards" in capsys.readouterr().err
    write_tar(tmp_path / "s.tar", [clip_sample("a", 64, 64, 9)])
    cfg = tmp_path / "b.yaml"
    cfg.write_text("buckets:\n  - {frames: 9, height: 64, width: 64}\n")
    assert main(["inspect", str(tmp_path), "--buckets", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "b.yaml: buckets[0] has unknown keys ['frames']" in err and "num_frames" in err
    for text, message in [("data:\n  init_args:\n    packing: true\n", "b.yaml: needs a non-empty `buckets:` list"),
                          ("buckets:\n  - 3\n", "b.yaml: buckets[0] is 3"), ("- 1\n", "b.yaml: not a mapping"),
                          ("a: [\n", "b.yaml: not valid YAML")]:
        cfg.write_text(text)
        assert main(["inspect", str(tmp_path), "--buckets", str(cfg)]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("n, wanted, expected", [(9, 0, list(range(9))), (9, 2, [0, 8]), (9, 3, [0, 4, 8]),
                                                 (5, 9, [0, 1, 2, 3, 4]), (1, 2, [0]), (9, 1, [0])])
def test_frame_indices(n, wanted, expected):
    assert frame_indices(n, wanted) == expected
