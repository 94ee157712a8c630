"""Every bad input is skipped, counted by reason and logged with shard and key; training goes on."""

import io
import logging
import tarfile

import pytest

from conftest import clip_sample, make_mp4, make_png, write_tar
from videogen.data import Bucket, Bucketer, LoaderOptions, StreamOptions, VideoDataModule
from videogen.data import stages
from videogen.data.decode import DecodeError


def raw_tar(path, members: list[tuple[str, bytes]]):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def bad_shards(tmp_path):
    good = [clip_sample(f"good{i}", 64, 64, 9, seed=i) for i in range(4)]
    good[0]["txt"] = "漢字 • émoji 🎥 • עברית"  # any Unicode caption is fine
    mp4 = make_mp4(64, 64, 9)
    meta = {"width": 64, "height": 64, "num_frames": 9, "fps": 12}
    bad = [
        {"__key__": "corrupt", "mp4": b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, "txt": "x", "json": meta},
        {"__key__": "truncated", "mp4": mp4[: len(mp4) // 3], "txt": "x", "json": meta},
        {"__key__": "empty", "mp4": b"", "txt": "x", "json": meta},
        {"__key__": "wrongtype", "mp4": b"this is a text file, not a video", "txt": "x", "json": meta},
        {"__key__": "nocaption", "mp4": mp4, "json": meta},
        {"__key__": "badjson", "mp4": mp4, "txt": "x", "json": b"{not json"},
        {"__key__": "listjson", "mp4": mp4, "txt": "x", "json": b"[1, 2]"},
        {"__key__": "badutf8", "mp4": mp4, "txt": b"\xff\xfe\xfa", "json": meta},
        {"__key__": "pickled", "mp4": mp4, "txt": "x", "json": meta, "pth": b"\x80\x04K\x01."},
        {"__key__": "nomedia", "txt": "only a caption"},
        {"__key__": "huge", "mp4": mp4 + b"\x00" * 300_000, "txt": "x", "json": meta},
    ]
    samples = good[:2] + bad + good[2:]
    write_tar(tmp_path / "a.tar", samples)
    raw_tar(tmp_path / "b.tar", [("../escape.mp4", mp4), ("/abs/path.mp4", mp4), ("ok.mp4", mp4), ("ok.txt", b"fine"),
                                 ("ok.json", b'{"width": 64, "height": 64, "num_frames": 9, "fps": 12}')])
    full = tmp_path / "full.tar"
    write_tar(full, [clip_sample(f"t{i}", 64, 64, 9, seed=10 + i) for i in range(3)])
    (tmp_path / "c.tar").write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])  # truncated shard
    full.unlink()
    (tmp_path / "d.tar").write_bytes(b"<html>not a tar at all</html>" * 50)
    return tmp_path


def test_bad_samples_are_skipped_counted_and_logged(bad_shards, caplog):
    caplog.set_level(logging.WARNING, logger="videogen.data")
    dm = VideoDataModule(str(bad_shards), val_shards=str(bad_shards),
                         bucketer=Bucketer([Bucket(9, 64, 64)], batch_size=1), clips=StreamOptions(max_member_mb=0.25),
                         loader=LoaderOptions(num_workers=0, shuffle_buffer=0, val_batches=7))
    dl = dm.val_dataloader()
    keys = [k for b in dl for k in b["key"]]
    assert set(keys) == {"good0", "good1", "good2", "good3", "ok", "t0", "t1"}  # t0, t1: before the cut
    counts = dl.skipped
    for reason in ("decode_error", "empty_media", "missing_caption", "bad_json", "bad_caption", "unsafe_member",
                   "no_media", "member_too_large", "unsafe_member_name", "truncated_shard", "not_a_tar"):
        assert counts[reason] >= 1, reason
    assert counts["decode_error"] >= 3  # corrupt, truncated, wrong type
    assert counts["bad_json"] == 2 and counts["unsafe_member_name"] == 2
    text = caplog.text
    assert "corrupt" in text and "a.tar" in text and "c.tar" in text and "truncated_shard" in text
    assert "skipped" in text and "epoch 0" in text  # the per-epoch summary


def test_unicode_caption_survives(bad_shards):
    dm = VideoDataModule(str(bad_shards / "a.tar"), val_shards=str(bad_shards / "a.tar"),
                         bucketer=Bucketer([Bucket(9, 64, 64)], batch_size=1),
                         loader=LoaderOptions(num_workers=0, val_batches=4))
    captions = {k: c for b in dm.val_dataloader() for k, c in zip(b["key"], b["caption"])}
    assert captions["good0"] == "漢字 • émoji 🎥 • עברית"


class SlowDecoder:
    name = "slow"

    def __init__(self, delay: float):
        self.delay = delay

    def probe(self, data):
        raise NotImplementedError

    def decode(self, data, indices, size=None, stop=None):
        import time

        import numpy as np

        time.sleep(self.delay)
        return np.zeros((len(indices), *size, 3), np.uint8)


def _planned(key: str) -> stages.Planned:
    from videogen.data.buckets import Target

    rec = stages.Record(key, "shard.tar", "mp4", b"x", "c", {}, 64, 64, 9, 12.0)
    return stages.Planned(rec, Target(9, 32, 32, "b"), list(range(9)), (0.5, 0.5), 1)


def test_decode_time_limit_skips_a_hanging_sample_and_fills_its_slot():
    skips = stages.Skips()
    fast = stages.TimedDecoder(SlowDecoder(0.0), timeout_s=2.0)
    out = stages.decode_batch([_planned("a"), _planned("b")], fast, skips)
    assert len(out) == 2 and out[0][1].shape == (9, 32, 32, 3) and not skips.counts
    slow = stages.TimedDecoder(SlowDecoder(3.0), timeout_s=0.2)
    assert stages.decode_batch([_planned("hang")], slow, skips) == []
    assert skips.counts == {"decode_timeout": 1}


def test_failed_sample_slot_is_filled_so_batch_shape_holds():
    class FailsOnB(SlowDecoder):
        def decode(self, data, indices, size=None):
            if data == b"bad":
                raise DecodeError("broken")
            return super().decode(data, indices, size)

    skips = stages.Skips()
    items = [_planned("a"), _planned("b"), _planned("c")]
    items[1].record.media = b"bad"
    out = stages.decode_batch(items, stages.TimedDecoder(FailsOnB(0.0), timeout_s=None), skips)
    assert [p.record.key for p, _ in out] == ["a", "c", "a"] and skips.counts == {"decode_error": 1}


def test_all_unusable_shards_fail_loudly_not_hang(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"garbage" * 100)
    dm = VideoDataModule(str(tmp_path), val_shards=str(tmp_path), bucketer=Bucketer([Bucket(1, 64, 64)]),
                         loader=LoaderOptions(num_workers=0, val_batches=1))
    with pytest.raises(RuntimeError, match="no usable sample"):
        list(dm.val_dataloader())


def test_images_are_one_frame_clips(tmp_path):
    write_tar(tmp_path / "img.tar", [{"__key__": f"i{k}", "png": make_png(80, 60), "txt": "an image",
                                      "json": {"width": 80, "height": 60}} for k in range(2)])
    dm = VideoDataModule(str(tmp_path), bucketer=Bucketer([Bucket(1, 48, 64), Bucket(9, 48, 64)], batch_size=2),
                         loader=LoaderOptions(num_workers=0))
    (b,) = list(dm.train_dataloader())
    assert b["video"].shape == (2, 3, 1, 48, 64) and b["bucket"] == "1x48x64"
