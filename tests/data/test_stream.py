"""The stream end to end on real tar shards of real mp4 clips: round trip, epochs, exact resume."""

import hashlib

import pytest
import torch

from conftest import clip_sample, make_png, write_tar
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.data.manifest import DatasetManifest, scan_shard
from videogen.data.writer import ShardSequenceWriter

BUCKETS = [Bucket(9, 64, 96), Bucket(9, 64, 64)]


def batch_hash(b) -> str:
    h = hashlib.sha256()
    h.update("|".join(b["key"]).encode())
    h.update(b["video"].numpy().tobytes())
    return h.hexdigest()[:16]


def loader(folder, workers=2):
    return VideoDataModule(str(folder), bucketer=Bucketer(BUCKETS, batch_size=2),
                           loader=LoaderOptions(num_workers=workers, shuffle_buffer=8)).train_dataloader()


def test_round_trip_through_writer_keeps_pixels_captions_and_meta(tmp_path):
    samples = [clip_sample(f"k{i}", 96, 64, 9, seed=i) for i in range(4)]
    for s in samples:
        s["txt"] = f"ünïcødé caption {s['__key__']} 🎬"
    with ShardSequenceWriter(tmp_path, max_count=2) as w:
        for s in samples:
            w.write(s)
    DatasetManifest(shards=w.finished).save(tmp_path)
    assert [s.num_samples for s in w.finished] == [2, 2]
    dl = VideoDataModule(str(tmp_path), val_shards=str(tmp_path), bucketer=Bucketer([Bucket(9, 64, 96)], batch_size=2),
                         loader=LoaderOptions(num_workers=0)).val_dataloader()
    got = {k: (b["video"][i], b["caption"][i], b["meta"][i]) for b in dl for i, k in enumerate(b["key"])}
    assert sorted(got) == ["k0", "k1", "k2", "k3"]
    video, caption, meta = got["k1"]
    assert video.shape == (3, 9, 64, 96) and video.dtype == torch.uint8
    assert caption == "ünïcødé caption k1 🎬" and meta["num_frames"] == 9
    # the red square (230, 40, 40) moves right: frame 0 has it on the left, frame 8 on the right
    red = (video[0].float() - video[1].float()) > 120  # (T, H, W)
    cols = red.nonzero()[:, 2]
    first, last = red[0].nonzero()[:, 1].float().mean(), red[8].nonzero()[:, 1].float().mean()
    assert len(cols) > 0 and last - first > 30


def test_epoch_is_complete_unique_and_equal_length(clip_shards):
    dl = loader(clip_shards)
    assert len(dl) == 12 // 2 + 12 // 2  # 12 landscape + 12 square clips, batches of 2
    keys = [k for b in dl for k in b["key"]]
    assert len(keys) == 24 and len(set(keys)) == 24
    assert {b["bucket"] for b in dl} == {"9x64x96", "9x64x64"}


def test_epochs_differ_and_are_reproducible(clip_shards):
    a, b = loader(clip_shards), loader(clip_shards)
    ea1, ea2 = [batch_hash(x) for x in a], [batch_hash(x) for x in a]
    eb1 = [batch_hash(x) for x in b]
    assert ea1 == eb1 and ea1 != ea2 and a.epoch == 1  # the second epoch (0-based) just ended


def test_validation_batches_are_the_same_every_time(clip_shards):
    dm = VideoDataModule(str(clip_shards), val_shards=str(clip_shards), bucketer=Bucketer(BUCKETS, batch_size=2),
                         loader=LoaderOptions(num_workers=2))
    val = dm.val_dataloader()
    assert [batch_hash(b) for b in val] == [batch_hash(b) for b in val]


@pytest.mark.parametrize("workers,stop", [(0, 5), (2, 3), (2, 6), (3, 7), (2, 12)])
def test_resume_mid_epoch_gives_identical_batches(clip_shards, workers, stop):
    full = loader(clip_shards, workers)
    reference = [batch_hash(b) for b in full] + [batch_hash(b) for b in full]  # two epochs
    first = loader(clip_shards, workers)
    seen = []
    for b in first:
        seen.append(batch_hash(b))
        if len(seen) == stop:
            break
    state = first.state_dict()
    resumed = loader(clip_shards, workers)
    resumed.load_state_dict(state)
    rest = [batch_hash(b) for b in resumed]
    if stop == len(full):  # saved at the end of an epoch: the resumed run starts the next one
        assert rest == reference[stop:]
    else:
        assert seen + rest == reference[: len(full)]
        assert [batch_hash(b) for b in resumed] == reference[len(full):]


def test_resume_refuses_a_different_worker_count(clip_shards):
    state = loader(clip_shards, 2).state_dict()
    with pytest.raises(ValueError, match="num_workers=2"):
        loader(clip_shards, 3).load_state_dict(state)


def test_foreign_tarfile_shards_without_manifest_or_shape_metadata_load(tmp_path):
    """video2dataset/img2dataset layout: key.mp4 / key.txt / key.json written by plain tarfile."""
    samples = [clip_sample(f"{i:05d}", 96, 64, 10, seed=i, meta=False) for i in range(3)]
    for s in samples:
        s["json"] = {"url": "http://example.invalid/v.mp4", "status": "success"}  # no shape fields
    samples.append({"__key__": "00003", "jpg": make_png(64, 64), "txt": "an image"})
    write_tar(tmp_path / "00000.tar", samples)
    dm = VideoDataModule(str(tmp_path / "00000.tar"),
                         bucketer=Bucketer([Bucket(9, 64, 96), Bucket(1, 64, 64)], batch_size=1),
                         loader=LoaderOptions(num_workers=0))
    batches = list(dm.train_dataloader())
    shapes = sorted((b["key"][0], tuple(b["video"].shape)) for b in batches)
    assert shapes == [("00000", (1, 3, 9, 64, 96)), ("00001", (1, 3, 9, 64, 96)), ("00002", (1, 3, 9, 64, 96)),
                      ("00003", (1, 3, 1, 64, 64))]


def test_zero_batch_configuration_is_a_clear_error(clip_shards):
    with pytest.raises(ValueError, match="fill 0 batches"):
        VideoDataModule(str(clip_shards), bucketer=Bucketer([Bucket(33, 64, 64)]),
                        loader=LoaderOptions(num_workers=0)).train_dataloader()


def test_float_conversion_on_device(clip_shards):
    dm = VideoDataModule(str(clip_shards), bucketer=Bucketer(BUCKETS, batch_size=2),
                         loader=LoaderOptions(num_workers=0))
    b = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert b["video"].dtype == torch.float32 and -1.0 <= b["video"].min() and b["video"].max() <= 1.0


def test_manifest_matches_scan(clip_shards):
    m = DatasetManifest.load(clip_shards)
    assert m.num_samples == 24 and m.to_dict()["resolutions"] == {"64x64": 12, "96x64": 12}
    assert scan_shard(clip_shards / "shard-000000.tar").num_samples == 6


def test_http_shards_with_remote_manifest(clip_shards):
    """Shards served over HTTP (loopback): counts come from the dataset.json beside them."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clip_shards))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/shard-{{000000..000003}}.tar"
        dl = loader(url, workers=2)
        keys = [k for b in dl for k in b["key"]]
        assert len(dl) == 12 and len(keys) == 24 and len(set(keys)) == 24
        (clip_shards / "dataset.json").unlink()
        with pytest.raises(ValueError, match="dataset.json"):
            loader(url, workers=0)
    finally:
        server.shutdown()


def test_loader_workers_ignore_slurms_requeue_signal(clip_shards):
    """Worker processes must not run Lightning's SIGUSR1 handler (a stale checkpoint + a requeue)."""
    import signal

    from videogen.data.loader import _worker_signals

    dl = loader(clip_shards, workers=1)
    assert dl.worker_init_fn is _worker_signals  # every StatefulLoader's workers get it
    previous = signal.signal(signal.SIGUSR1, lambda *a: None)  # as Lightning installs in the main process
    try:
        _worker_signals(0)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert len(list(dl)) > 0  # workers start and stream with it
