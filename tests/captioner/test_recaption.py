"""`videogen recaption`: every sample once, members byte for byte, resume, ranks, bad inputs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.conftest import make_mp4, write_tar
from videogen.pipelines.recaption import rank_and_world, recaption
from videogen.data.manifest import DatasetManifest


def members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def check_copy(src_folder: Path, out: Path, name: str = "recaption") -> int:
    """Every input member is in the output in the same order; only json differs, by the new caption."""
    total = 0
    for src in sorted(src_folder.glob("*.tar")):
        before, after = members(src), members(out / src.name)
        assert [n for n, _ in before] == [n for n, _ in after]
        for (n, a), (_, b) in zip(before, after):
            if n.endswith(".json"):
                old, new = json.loads(a), json.loads(b)
                caption = new["captions"].pop(name)
                assert isinstance(caption, str) and caption
                assert new == old  # nothing else in json changed
            else:
                assert a == b, n
        total += sum(n.endswith(".json") for n, _ in before)
    return total


def test_recaption_writes_every_sample_once_and_keeps_members(synthetic_set, captioner_export, tmp_path):
    src = synthetic_set / "train"
    out = tmp_path / "out"
    summary = recaption(str(captioner_export), str(src), out, batch_size=2, max_new_tokens=6, progress=False)
    assert summary["captions"] == 9 and summary["shards"] == 3 and summary["manifest"]
    assert check_copy(src, out) == 9
    m = DatasetManifest.load(out)
    assert m.num_samples == 9 and len(m.shards) == 3
    assert m.created_by["captions"]["recaption"]["weights_sha256"] == json.loads(
        (captioner_export / "manifest.json").read_text())["weights_sha256"]
    assert m.created_by["caption_words"]["count"] == 9
    assert m.shards[0].shapes  # shape histogram kept: the output trains as it is
    keys = [n for s in sorted(out.glob("*.tar")) for n, _ in members(s) if n.endswith(".json")]
    assert len(keys) == len(set(keys)) == 9


def test_output_passes_inspect(synthetic_set, captioner_export, tmp_path, capsys):
    from videogen.cli import main

    out = tmp_path / "out"
    assert main(["recaption", "--ckpt", str(captioner_export), "--data", str(synthetic_set / "val"), "--out", str(out),
                 "--max-new-tokens", "4", "--no-progress", "--sampling", "beam", "--num-beams", "2"]) == 0
    assert "captioned 3 clips in 1 shards" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 good samples, 0 bad" in text and "agrees" in text


def test_resume_after_interruption_skips_finished_shards(synthetic_set, captioner_export, tmp_path):
    src = synthetic_set / "train"
    out = tmp_path / "out"
    first = recaption(str(captioner_export), str(src), out, max_new_tokens=4, progress=False, stop_after_shards=1)
    assert first["shards"] == 1 and not first["manifest"] and not (out / "dataset.json").exists()
    done = sorted(out.glob("*.tar"))
    assert len(done) == 1
    stamp = done[0].stat().st_mtime_ns
    (out / "shard-000001.tar.tmp").write_bytes(b"half a shard from a killed run")
    second = recaption(str(captioner_export), str(src), out, max_new_tokens=4, progress=False)
    assert second["shards"] == 2 and second["captions"] == 6 and second["manifest"]
    assert done[0].stat().st_mtime_ns == stamp  # not written again
    assert not list(out.glob("*.tmp"))
    assert check_copy(src, out) == 9
    assert recaption(str(captioner_export), str(src), out, max_new_tokens=4, progress=False)["shards"] == 0


def test_two_ranks_split_shards_disjointly(synthetic_set, captioner_export, tmp_path, monkeypatch):
    src = synthetic_set / "train"
    out = tmp_path / "out"
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert rank_and_world() == (1, 2)
    r1 = recaption(str(captioner_export), str(src), out, max_new_tokens=4, progress=False)
    mine1 = {p.name for p in out.glob("*.tar")}
    assert r1["shards"] == 1 and not r1["manifest"]  # rank 0's shards are not done yet
    monkeypatch.setenv("SLURM_PROCID", "0")
    r0 = recaption(str(captioner_export), str(src), out, max_new_tokens=4, progress=False)
    mine0 = {p.name for p in out.glob("*.tar")} - mine1
    assert r0["shards"] == 2 and r0["manifest"]
    assert mine0.isdisjoint(mine1) and mine0 | mine1 == {p.name for p in src.glob("*.tar")}
    assert r0["captions"] + r1["captions"] == 9
    assert check_copy(src, out) == 9


def test_rank_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        rank_and_world(2, 2)


def test_corrupt_samples_are_copied_counted_and_reported(captioner_export, tmp_path, capsys):
    from videogen.cli import main

    src = tmp_path / "src"
    src.mkdir()
    good = {"__key__": "good", "mp4": make_mp4(64, 64, 9), "txt": "a red square",
            "json": {"width": 64, "height": 64, "num_frames": 9, "fps": 12, "duration": 0.75}}
    samples = [good, {"__key__": "broken", "mp4": b"\x00not a video at all" * 50, "txt": "broken",
                      "json": {"width": 64, "height": 64, "num_frames": 9, "fps": 12}},
               {"__key__": "badjson", "mp4": make_mp4(64, 64, 9, seed=3), "txt": "x", "json": "[1, 2"},
               {**good, "__key__": "nojson", "json": None}]
    del samples[3]["json"]
    write_tar(src / "shard-000000.tar", samples)
    out = tmp_path / "out"
    assert main(["recaption", "--ckpt", str(captioner_export), "--data", str(src), "--out", str(out),
                 "--max-new-tokens", "4", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "captioned 2 clips" in text and "'decode_error': 1" in text and "'bad_json': 1" in text
    before, after = members(src / "shard-000000.tar"), members(out / "shard-000000.tar")
    assert [n for n, _ in after] == [n for n, _ in before] + ["nojson.json"]  # a json is added where none was
    got = dict(after)
    assert got["broken.mp4"] == dict(before)["broken.mp4"] and got["broken.json"] == dict(before)["broken.json"]
    assert got["badjson.json"] == b"[1, 2"  # copied unchanged, not captioned
    assert "recaption" in json.loads(got["nojson.json"])["captions"]
    m = DatasetManifest.load(out)
    assert m.num_samples == 4
    assert sorted((s["reason"], s["count"]) for s in m.skipped) == [("bad_json", 1), ("decode_error", 1)]


def test_bad_arguments(synthetic_set, captioner_export, tmp_path, capsys):
    from videogen.cli import main

    assert main(["recaption", "--ckpt", str(tmp_path / "missing"), "--data", str(synthetic_set / "val"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no such captioner export folder or checkpoint" in capsys.readouterr().out
    assert main(["recaption", "--ckpt", str(captioner_export), "--data", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no such shard" in capsys.readouterr().out
    assert main(["recaption", "--ckpt", str(captioner_export), "--data", str(synthetic_set / "val"),
                 "--out", str(synthetic_set / "val")]) == 2
    assert "is the input folder" in capsys.readouterr().err
    vae_like = tmp_path / "notcap"
    from tests.test_configs import make_vae_export

    make_vae_export(vae_like, 4)
    assert main(["recaption", "--ckpt", str(vae_like), "--data", str(synthetic_set / "val"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "holds a VideoAutoencoder, expected a VideoCaptioner or a HFVisionCaptioner" in capsys.readouterr().err


def test_another_captioner_may_not_continue_a_folder(synthetic_set, captioner_export, tmp_path):
    import torch

    from videogen.models.captioner import captioner_tiny
    from videogen.modules.captioner import CaptionerModule
    from videogen.pretrained import save_export

    out = tmp_path / "out"
    recaption(str(captioner_export), str(synthetic_set / "train"), out, max_new_tokens=4, progress=False, stop_after_shards=1)
    torch.manual_seed(5)
    other = CaptionerModule(captioner_tiny())
    other_export = save_export(tmp_path / "other", other.captioner, other.export_stats())
    with pytest.raises(ValueError, match="by another captioner"):
        recaption(str(other_export), str(synthetic_set / "train"), out, max_new_tokens=4, progress=False)


def test_a_shard_cut_short_is_left_out_whole_and_the_rest_are_written(synthetic_set, captioner_export, tmp_path,
                                                                       capsys):
    """A shard that cannot be read to its end leaves no output shard (not half a one), no done record and
    no ``.tmp``; the other shards are written, and dataset.json waits until every input shard is done."""
    import shutil

    src = tmp_path / "src"
    src.mkdir()
    for shard in sorted((synthetic_set / "train").glob("*.tar"))[:2]:
        shutil.copy(shard, src / shard.name)
    cut = src / "shard-000001.tar"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # in the middle of a member
    out = tmp_path / "out"
    summary = recaption(str(captioner_export), str(src), out, batch_size=1, max_new_tokens=4, progress=False)
    assert summary["shards"] == 1 and summary["captions"] == 3
    assert summary["skipped"] == {"unreadable_shard": 1} and not summary["manifest"]
    assert "shard-000001.tar could not be read" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["shard-000000.tar"]
    assert sorted(p.name for p in (out / ".done").iterdir()) == ["shard-000000.tar.json"]
    before, after = members(src / "shard-000000.tar"), members(out / "shard-000000.tar")
    assert [n for n, _ in after] == [n for n, _ in before]
