"""Hostile shard sets (issue 16): decompression bombs, pixel bombs, decodes that run away, keys with
folders. Each goes through the public path a user meets it on (`videogen inspect`, the data module,
`videogen encode` / `recaption` / `curate`) and ends in a counted skip or a clear error, with memory
and threads bounded."""

from __future__ import annotations

import json
import tarfile
import threading
import time

import pytest

from hostile_shards_helpers import gzip_bomb, peak_rss_mib, png_bomb, raw_tar, sample_members
from reliability_helpers import clip_sample, make_mp4
from videogen.data import LoaderOptions, StreamOptions, VideoDataModule, stages
from videogen.data.buckets import Bucket, Bucketer

MIB = 2**20


def skips_of(dm) -> dict:
    """Every val batch of the module, and the skips its stream counted (val streams reset each pass)."""
    loader = dm.val_dataloader()
    batches = list(loader)
    return batches, dict(loader.skipped)


def test_a_gzip_bomb_named_tar_is_refused_by_inspect_without_inflating_it(tmp_path):
    """1000 MiB of zeros in a 1 MB gzip named .tar: on 99e149e `inspect` inflated it into one sample in
    memory (mode r|* and a per-member cap only); now a compressed stream is refused before it is read,
    and the peak memory of the inspect process stays that of inspecting the good shard alone."""
    good, bomb = tmp_path / "good", tmp_path / "bombed"
    for folder in (good, bomb):
        raw_tar(folder / "a.tar", [m for i in range(2) for m in sample_members(clip_sample(f"g{i}", 64, 64, 9))])
    inflated = gzip_bomb(bomb / "b.tar", [("k.txt", b"a caption"), ("k.mp4", 500 * MIB), ("k.webm", 500 * MIB)])
    assert (bomb / "b.tar").stat().st_size < 1.1 * MIB < inflated // 500
    status, base_rss, _ = peak_rss_mib(["inspect", str(good), "--json", "--no-progress"])
    assert status == 0
    began = time.perf_counter()
    status, bomb_rss, out = peak_rss_mib(["inspect", str(bomb), "--json", "--no-progress"])
    seconds = time.perf_counter() - began
    print(f"inspect peak RSS: {base_rss:.0f} MiB on 2 good clips, {bomb_rss:.0f} MiB with the "
          f"{inflated / MIB:.0f} MiB gzip bomb beside them ({seconds:.1f} s)")
    assert status == 0
    report = json.loads(out)
    assert report["num_samples"] == 2
    assert [(b["shard"], b["reason"]) for b in report["bad_samples"]] == [("b.tar", "compressed_shard")]
    assert bomb_rss < base_rss + 64 < base_rss + inflated / MIB / 10, (base_rss, bomb_rss)


def test_budgets_hold_on_compressed_shards_and_per_sample(tmp_path):
    """A compressed shard asked for is read, its inflated bytes held to the budgets; a sample of many
    members, each under the member budget, is refused as a whole (its members past the budget unread)."""
    folder = tmp_path / "s"
    good = [clip_sample(f"g{i}", 64, 64, 9, seed=i) for i in range(3)]
    many = {"__key__": "many", "txt": "x", **{ext: bytes(700_000) for ext in ("mp4", "webm", "mkv", "avi", "mov")}}
    raw_tar(folder / "plain.tar", [m for s in (good[0], many, good[1]) for m in sample_members(s)])
    raw_tar(folder / "packed.tar", sample_members(good[2]), mode="w:gz")
    gzip_bomb(folder / "bomb.tar", [("b.txt", b"x"), ("b.mp4", 64 * MIB), ("c.txt", b"y")])
    bucketer, limits = Bucketer([Bucket(9, 32, 32)], batch_size=1), dict(max_member_mb=1, max_sample_mb=2)
    dm = VideoDataModule(str(folder), val_shards=[str(folder / n) for n in ("bomb.tar", "packed.tar", "plain.tar")],
                         bucketer=bucketer, clips=StreamOptions(**limits),
                         loader=LoaderOptions(num_workers=0, val_batches=2))
    batches, skipped = skips_of(dm)
    assert [k for b in batches for k in b["key"]] == ["g0", "g1"]
    assert skipped == {"compressed_shard": 2, "sample_too_large": 1}, skipped
    dm = VideoDataModule(str(folder), val_shards=[str(folder / "bomb.tar"), str(folder / "packed.tar")],
                         bucketer=bucketer, clips=StreamOptions(compressed_shards=True, **limits),
                         loader=LoaderOptions(num_workers=0, val_batches=1))
    batches, skipped = skips_of(dm)
    assert [k for b in batches for k in b["key"]] == ["g2"]
    assert skipped == {"member_too_large": 1, "no_media": 1}, skipped
    # the reader itself: members past the sample budget are never read
    skips = stages.Skips(max_logged=0)
    members = list(stages.read_tar([str(folder / "plain.tar")], skips, stages.TarLimits(member_bytes=MIB,
                                                                                          sample_bytes=2 * MIB)))
    unread = [(name, refused) for _, name, data, refused in members if data is None]
    assert unread == [("many.mkv", "sample_too_large"), ("many.avi", "sample_too_large"),
                      ("many.mov", "sample_too_large")]


def test_an_image_pixel_bomb_is_refused_not_decoded(tmp_path, caplog):
    """A valid 13000x13000 PNG (169 MP) in 170 KB: Pillow's default limit lets it through (it warns
    under 179 MP); the loader refuses it from its header, at a limit set from the largest bucket."""
    png = png_bomb(13000, 13000)
    assert len(png) < 400_000
    folder = tmp_path / "s"
    samples = [{"__key__": "bomb", "png": png, "txt": "x", "json": {"width": 13000, "height": 13000}},
               {"__key__": "probed", "png": png, "txt": "x"},  # no json: its shape is probed from the header
               {"__key__": "ok", "png": png_bomb(96, 64), "txt": "x"}]
    raw_tar(folder / "a.tar", [m for s in samples for m in sample_members(s)])
    dm = VideoDataModule(str(folder), val_shards=str(folder / "a.tar"),
                         bucketer=Bucketer([Bucket(1, 64, 64)], batch_size=1),
                         loader=LoaderOptions(num_workers=0, val_batches=1))
    began = time.perf_counter()
    batches, skipped = skips_of(dm)
    assert time.perf_counter() - began < 10
    assert [k for b in batches for k in b["key"]] == ["ok"]
    assert skipped == {"decode_error": 2}, skipped
    refused = [r.getMessage() for r in caplog.records if "over the limit of 67108864 pixels" in r.getMessage()]
    assert [m.split()[1] for m in refused] == ["bomb", "probed"], caplog.text[-2000:]
    from videogen.data.decode import DecodeError, ImageDecoder, pixel_limit

    limit = pixel_limit(64 * 64)
    with pytest.raises(DecodeError, match="over the limit"):
        ImageDecoder(limit).probe(png)
    assert pixel_limit(4096 * 4096) > 13000 * 13000  # a bucket that large takes such an image


def test_twenty_timed_out_decodes_leave_no_more_live_decodes_than_the_bound(tmp_path):
    """On 99e149e each timed-out decode thread went on decoding: 20 timeouts, 20 live threads. Now a
    timed-out decode stops at its next chunk of frames, and at most 2 are ever left running."""
    mp4 = make_mp4(128, 128, 240, seed=1)
    raw_tar(tmp_path / "long.tar", sample_members({"__key__": "long", "mp4": mp4, "txt": "x"}))
    skips = stages.Skips(max_logged=0)
    from videogen.data.decode import make_decoder

    (record,) = stages.parse(stages.group_samples(stages.read_tar([str(tmp_path / "long.tar")], skips, 2**30)), skips,
                             make_decoder("decord"))
    import random

    bucketer = Bucketer([Bucket(240, 128, 128)], batch_size=1)
    (planned,) = stages.plan([record], bucketer, skips, random.Random(0), random_clip=False)
    decoder = stages.TimedDecoder(make_decoder("decord"), timeout_s=0.002)
    live = []
    for _ in range(20):
        assert stages.decode_batch([planned], decoder, skips) == []
        live.append(sum(t.name.startswith("videogen-decode") and t.is_alive() for t in threading.enumerate()))
    assert skips.counts["decode_timeout"] == 20
    assert max(live) <= 2, live
    assert decoder.max_abandoned == 2
    end = time.monotonic() + 10
    while decoder.abandoned() and time.monotonic() < end:
        time.sleep(0.01)
    assert decoder.abandoned() == 0
    full = stages.TimedDecoder(make_decoder("decord"), timeout_s=30)(planned)  # the clip itself is fine
    assert full.shape == (240, 128, 128, 3)


# ---- keys with folders ------------------------------------------------------------------------------


def folder_key_shards(folder, n: int = 4):
    """WebDataset shards whose keys name folders (``clips/000i``), written as raw tars, with a manifest."""
    from videogen.data.manifest import DatasetManifest, scan_shard

    samples = [clip_sample(f"clips/{i:04d}", 64, 64, 9, seed=i) for i in range(n)]
    path = raw_tar(folder / "shard-000000.tar", [m for s in samples for m in sample_members(s)])
    DatasetManifest(shards=[scan_shard(path)]).save(folder)
    return folder


def names_in(path) -> list[str]:
    with tarfile.open(path) as tar:
        return [m.name for m in tar if m.isfile()]


def test_folder_keys_through_encode(tmp_path):
    import torch

    from videogen.cli import main
    from videogen.models.vae import VideoAutoencoder
    from videogen.pretrained import save_export

    src = folder_key_shards(tmp_path / "src")
    torch.manual_seed(0)
    net = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    vae = save_export(tmp_path / "vae", net, {"latent_channels": 4, "latent_mean": [0.0] * 4, "latent_std": [1.0] * 4,
                                              "temporal_compression": 4, "spatial_compression": 4})
    assert main(["encode", "--vae", str(vae), "--data", str(src), "--out", str(tmp_path / "lat"),
                 "--max-area", str(64 * 64), "--max-frames", "9", "--num-workers", "0", "--accelerator", "cpu",
                 "--devices", "1"]) == 0
    names = names_in(tmp_path / "lat" / "shard-000000.tar")
    assert sorted(n for n in names if n.endswith(".latent.npy")) == [f"clips/{i:04d}.latent.npy" for i in range(4)]


def test_folder_keys_through_recaption(tmp_path, captioner_export):
    from videogen.cli import main

    src = folder_key_shards(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["recaption", "--ckpt", str(captioner_export), "--data", str(src), "--out", str(out),
                 "--max-new-tokens", "4", "--no-progress", "--device", "cpu"]) == 0
    assert names_in(out / "shard-000000.tar") == names_in(src / "shard-000000.tar")
    with tarfile.open(out / "shard-000000.tar") as tar:
        meta = json.loads(tar.extractfile("clips/0002.json").read())
    assert isinstance(meta["captions"]["recaption"], str)


def test_folder_keys_through_curate_and_traversal_refused(tmp_path):
    from videogen.cli import main
    from videogen.data.writer import TarShardWriter

    src = folder_key_shards(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["curate", "--data", str(src), "--out", str(out), "--steps", "quality", "--workers", "1",
                 "--no-progress", "--no-histograms"]) == 0
    kept = [n for n in names_in(out / "shard-000000.tar") if n.endswith(".mp4")]
    assert kept and all(n.startswith("clips/") for n in kept), kept
    with TarShardWriter(tmp_path / "w.tar") as writer:
        writer.write({"__key__": "a/b/c", "txt": "nested folders are fine"})
        for key in ("../x", "/abs", "a/../b", "a//b", "a\\b", "a/b.c"):
            with pytest.raises(ValueError, match="bad sample key"):
                writer.write({"__key__": key, "txt": "x"})
    assert names_in(tmp_path / "w.tar") == ["a/b/c.txt"]
