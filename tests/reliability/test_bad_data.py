"""Bad data never stops training: each kind is skipped, counted by reason and logged with its shard
and key. tests/data/test_bad_inputs.py covers corrupt, truncated, zero-byte, wrong-type, huge media,
missing caption, malformed/non-object json, non-UTF-8 captions, .pth members, no media, `..` and
absolute member names, truncated shards and non-tar shards in the loader; here: the cases it does not
cover, and one real Trainer run over a shard set holding every kind at once."""

import io
import logging
import re
import tarfile
from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer

from reliability_helpers import clip_sample, make_mp4, make_png, write_tar
from videogen.data import Bucket, Bucketer, LoaderOptions, StreamOptions, VideoDataModule
from videogen.data import stages
from videogen.data.decode import make_decoder
from videogen.modules.lr_schedule import WarmupCosine

META = {"width": 64, "height": 64, "num_frames": 9, "fps": 12}
UNICODE = ["漢字かなカナ 한국어", "עברית ‏العربية‏ RTL", "e\u0301 combining, zero\u200bwidth, emoji 👩‍👩‍👧 🎥",
           "control \x07 bell and tab\tinside", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral plane"]


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def read(url: str, max_member_bytes: int = 1 << 20) -> tuple[list[str], stages.Skips]:
    skips = stages.Skips()
    records = stages.parse(stages.group_samples(stages.read_tar([url], skips, max_member_bytes)), skips,
                           make_decoder("auto"))
    return [r.key for r in records], skips


def test_pickle_like_members_are_refused_whatever_their_extension(tmp_path):
    mp4 = make_mp4(64, 64, 9)
    samples = [{"__key__": f"k{ext}", "mp4": mp4, "txt": "x", "json": META, ext: b"\x80\x04K\x01."}
               for ext in ("pyd", "pickle", "pkl", "pth", "pt", "ckpt")]
    keys, skips = read(write_tar(tmp_path / "p.tar", samples + [clip_sample("good", 64, 64, 9)]))
    assert keys == ["good"] and skips.counts == {"unsafe_member": 6}


def test_mislabelled_media_is_a_decode_error_at_decode_time(tmp_path):
    """An image named .mp4 and a video named .jpg pass the header checks and fail in the decoder."""
    png_as_mp4 = {"__key__": "png_as_mp4", "mp4": make_png(64, 64), "txt": "x", "json": META}
    mp4_as_jpg = {"__key__": "mp4_as_jpg", "jpg": make_mp4(64, 64, 9), "txt": "x", "json": {"width": 64, "height": 64}}
    write_tar(tmp_path / "m.tar", [png_as_mp4, mp4_as_jpg] + [clip_sample(f"g{i}", 64, 64, 9, seed=i) for i in range(2)])
    dm = VideoDataModule(str(tmp_path), val_shards=str(tmp_path),
                         bucketer=Bucketer([Bucket(9, 32, 32), Bucket(1, 32, 32)], batch_size=1),
                         loader=LoaderOptions(num_workers=0, val_batches=2))
    dl = dm.val_dataloader()
    assert sorted(k for b in dl for k in b["key"]) == ["g0", "g1"]
    assert dl.skipped["decode_error"] == 2


def test_links_and_special_members_are_never_followed(tmp_path):
    """A symlink or hard link named like media is not read (its target could be any file on the
    machine); the sample is left without media and skipped as no_media."""
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "sym.mp4", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add(tar, "sym.txt", b"a caption")
        add(tar, "hard.mp4", kind=tarfile.LNKTYPE, link="sym.txt")
        add(tar, "hard.txt", b"a caption")
        add(tar, "dir", kind=tarfile.DIRTYPE)
        add(tar, "fifo.mp4", kind=tarfile.FIFOTYPE)
        add(tar, "fifo.txt", b"a caption")
    keys, skips = read(str(path))
    assert keys == [] and skips.counts == {"no_media": 3}


def test_zero_byte_shard_and_a_shard_of_only_end_blocks(tmp_path):
    (tmp_path / "zero.tar").write_bytes(b"")
    (tmp_path / "empty.tar").write_bytes(b"\0" * 10240)  # a valid, empty tar
    _, skips = read(str(tmp_path / "zero.tar"))
    assert skips.counts == {"not_a_tar": 1}
    keys, skips = read(str(tmp_path / "empty.tar"))
    assert keys == [] and not skips.counts


@pytest.mark.parametrize("caption", UNICODE)
def test_any_unicode_caption_arrives_unchanged(tmp_path, caption):
    s = clip_sample("u", 64, 64, 9)
    s["txt"] = caption
    write_tar(tmp_path / "u.tar", [s])
    skips = stages.Skips()
    (record,) = stages.parse(stages.group_samples(stages.read_tar([str(tmp_path / "u.tar")], skips, 1 << 20)), skips,
                             make_decoder("auto"))
    assert record.caption == caption.strip()


def test_missing_json_is_read_from_the_container(tmp_path):
    write_tar(tmp_path / "nojson.tar", [clip_sample("n", 96, 64, 9, meta=False)])
    skips = stages.Skips()
    (r,) = stages.parse(stages.group_samples(stages.read_tar([str(tmp_path / "nojson.tar")], skips, 1 << 20)), skips,
                        make_decoder("auto"))
    assert (r.width, r.height, r.num_frames) == (96, 64, 9) and not skips.counts


def every_bad_kind(folder):
    """Good clips among every kind of bad sample and shard."""
    folder.mkdir(parents=True)
    mp4 = make_mp4(64, 64, 9)
    good = [clip_sample(f"good{i}", 64, 64, 9, seed=i) for i in range(6)]
    good[0]["txt"] = UNICODE[2]
    bad = [
        {"__key__": "corrupt", "mp4": b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8, "txt": "x", "json": META},
        {"__key__": "truncated", "mp4": mp4[: len(mp4) // 3], "txt": "x", "json": META},
        {"__key__": "empty", "mp4": b"", "txt": "x", "json": META},
        {"__key__": "wrongtype", "mp4": b"plain text, not a video", "txt": "x", "json": META},
        {"__key__": "mislabelled", "mp4": make_png(64, 64), "txt": "x", "json": META},
        {"__key__": "huge", "mp4": mp4 + b"\0" * 300_000, "txt": "x", "json": META},
        {"__key__": "nocaption", "mp4": mp4, "json": META},
        {"__key__": "badjson", "mp4": mp4, "txt": "x", "json": b"{not json"},
        {"__key__": "badutf8", "mp4": mp4, "txt": b"\xff\xfe", "json": META},
        {"__key__": "pickled", "mp4": mp4, "txt": "x", "json": META, "pickle": b"\x80\x04."},
        {"__key__": "nomedia", "txt": "only a caption"},
        {"__key__": "short", "mp4": make_mp4(64, 64, 3), "txt": "x", "json": {**META, "num_frames": 3}},
    ]
    write_tar(folder / "a.tar", good[:3] + bad + good[3:])
    with tarfile.open(folder / "b.tar", "w") as tar:
        add(tar, "../escape.mp4", mp4)
        add(tar, "/abs/path.mp4", mp4)
        add(tar, "link.mp4", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add(tar, "link.txt", b"x")
    whole = folder / "whole.tar"
    write_tar(whole, [clip_sample(f"t{i}", 64, 64, 9, seed=20 + i) for i in range(3)])
    (folder / "c.tar").write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    whole.unlink()
    (folder / "d.tar").write_bytes(b"<html>not a tar</html>" * 40)
    (folder / "e.tar").write_bytes(b"")
    return folder


def test_a_real_training_run_over_every_kind_of_bad_sample_finishes_and_logs_counts(tmp_path, caplog):
    from videogen.models.vae import VideoAutoencoder
    from videogen.modules.vae import VAEModule

    caplog.set_level(logging.WARNING, logger="videogen.data")
    shards = every_bad_kind(tmp_path / "shards")
    dm = VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 32)], batch_size=2),
                         clips=StreamOptions(max_member_mb=0.25), loader=LoaderOptions(num_workers=0, shuffle_buffer=4))
    torch.manual_seed(0)
    module = VAEModule(VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                                        spatial_compression=4, patch_size=2, patch_size_t=2),
                                        lr_scheduler=partial(WarmupCosine, warmup=1))
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == len(trainer.train_dataloader) > 0 and module.bad_steps == 0
    counts = trainer.train_dataloader.skipped
    expected = {"decode_error": 4, "member_too_large": 1, "empty_media": 1, "missing_caption": 1, "bad_json": 1,
                "bad_caption": 1, "unsafe_member": 1, "no_media": 2, "too_short": 1, "unsafe_member_name": 2,
                "truncated_shard": 1, "not_a_tar": 2}
    assert {k: counts[k] >= n for k, n in expected.items()} == {k: True for k in expected}, dict(counts)
    logged = trainer.logged_metrics  # data/skipped/<reason> (DataSkips, added by the stage module)
    assert {k: int(logged[f"data/skipped/{k}"]) for k in expected} == {k: counts[k] for k in expected}
    summary = [r.getMessage() for r in caplog.records if re.match(r"epoch 0: skipped \d+ samples", r.getMessage())]
    assert summary, caplog.text[-2000:]
    for reason in expected:  # every reason's count is in the log line
        assert re.search(rf"\b{reason}={counts[reason]}\b", summary[-1]), (reason, summary[-1])
    lines = caplog.text
    for key, shard in (("corrupt", "a.tar"), ("mislabelled", "a.tar"), ("../escape.mp4", "b.tar"), ("<shard>", "c.tar"),
                       ("<shard>", "d.tar"), ("pickled", "a.tar")):
        assert re.search(rf"skipped {re.escape(key)} in \S*{shard}", lines), (key, shard)
