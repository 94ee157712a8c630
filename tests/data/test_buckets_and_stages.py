"""Small stages tested with lists: grouping, shuffling, shard splitting, bucket choice, packing."""

import random

import pytest

from videogen.data import stages
from videogen.data.buckets import Bucket, Bucketer, tokens
from videogen.data.shards import Split, expand_urls, split_member_name, split_shards, take_share


def test_split_member_name_keeps_folders_and_lowercases_ext():
    assert split_member_name("a/b/clip_01.MP4") == ("a/b/clip_01", "mp4")
    assert split_member_name("x.seg.json") == ("x", "seg.json")
    assert split_member_name("noext") == ("noext", "")


def test_group_samples_groups_consecutive_members_per_shard():
    members = [("s0", "a.mp4", b"1"), ("s0", "a.txt", b"t"), ("s0", "b.mp4", b"2"), ("s1", "b.mp4", b"3")]
    groups = list(stages.group_samples(members))
    assert [(g.url, g.key, sorted(g.members)) for g in groups] == [
        ("s0", "a", ["mp4", "txt"]), ("s0", "b", ["mp4"]), ("s1", "b", ["mp4"])]


def _tar(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_read_tar_json_txt_only_mode_leaves_media_unread_and_keeps_member_order(tmp_path):
    url = _tar(tmp_path / "s.tar", [("a.mp4", b"video"), ("a.json", b"{}"), ("a.TXT", b"cap"), ("b.Seg.JSON", b"[]")])
    skips = stages.Skips()
    a, b = stages.group_samples(stages.read_tar([url], skips, only=("json", "txt")))
    assert a.members == {"mp4": None, "json": b"{}", "txt": b"cap"} and a.refused is None
    assert a.order == [("mp4", None), ("json", b"{}"), ("TXT", b"cap")]  # suffixes exactly as written
    assert b.key == "b" and b.members == {"seg.json": None} and b.order == [("Seg.JSON", None)]
    assert not skips.counts


def test_scan_shard_without_probing_counts_samples_whose_media_it_never_read(tmp_path):
    from videogen.data.manifest import scan_shard

    meta = b'{"width": 64, "height": 48, "num_frames": 9, "fps": 8}'
    url = _tar(tmp_path / "s.tar", [("a.mp4", b"not read"), ("a.json", meta), ("a.txt", b"two words"),
                                     ("b.json", meta)])  # b has no media: not a sample
    stats = scan_shard(url, probe_missing=False)
    assert stats.num_samples == 1 and dict(stats.shapes) == {"64x48/9@8": 1} and stats.caption_words == [1, 2, 2]


def test_read_tar_strict_raises_where_the_stream_counts(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x1f\x8b" + b"\0" * 1024)  # gzip magic under a .tar name
    skips = stages.Skips()
    assert list(stages.read_tar([str(bad)], skips)) == [] and dict(skips.counts) == {"compressed_shard": 1}
    from videogen.data.tar_reader import ShardRefused

    with pytest.raises(ShardRefused, match="gzip-compressed stream, not a plain tar"):
        list(stages.read_tar([str(bad)], None, strict=True))


def test_shuffle_is_a_seeded_permutation():
    items = list(range(100))
    a = list(stages.shuffle(items, 10, random.Random(1)))
    b = list(stages.shuffle(items, 10, random.Random(1)))
    c = list(stages.shuffle(items, 10, random.Random(2)))
    assert a == b and a != c and sorted(a) == items and a != items
    assert list(stages.shuffle(items, 0, random.Random(1))) == items


@pytest.mark.parametrize("num_shards", [1, 3, 8])
def test_split_shards_whole_mode_gives_each_shard_to_exactly_one_consumer(num_shards):
    urls = [f"s{i}" for i in range(num_shards)]
    splits = [split_shards(urls, rank, 2, worker, 2, whole=True) for rank in range(2) for worker in range(2)]
    assert all(s.every == 1 for s in splits)  # never a share of a shard
    assert sorted(u for s in splits for u in s.urls) == urls
    assert [list(s.urls) for s in splits][:2] == [urls[0::4], urls[1::4]]  # round robin, rank-major
    assert split_shards(urls, 1, 3, whole=True).urls == tuple(urls[1::3])  # recaption: one worker per rank


@pytest.mark.parametrize("num_shards", [1, 3, 8, 13])
def test_split_shards_covers_every_sample_exactly_once(num_shards):
    urls = [f"s{i}" for i in range(num_shards)]
    samples = [(u, j) for u in urls for j in range(5)]
    seen = []
    for rank in range(2):
        for worker in range(2):
            split = split_shards(urls, rank, 2, worker, 2)
            mine = [s for s in samples if s[0] in split.urls]
            seen += list(take_share(mine, split))
    assert sorted(seen) == sorted(samples)


def test_split_shards_whole_shards_when_enough():
    split = split_shards([f"s{i}" for i in range(8)], rank=1, world_size=2, worker=1, num_workers=2)
    assert split == Split(("s3", "s7"))


def test_expand_urls_folder_glob_brace_and_missing(tmp_path):
    for i in range(3):
        (tmp_path / f"shard-{i:06d}.tar").write_bytes(b"")
    folder = expand_urls(str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in folder] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert expand_urls(str(tmp_path / "*.tar")) == folder
    assert expand_urls(str(tmp_path / "shard-{000000..000001}.tar")) == folder[:2]
    assert expand_urls("pipe:cat x.tar") == ["pipe:cat x.tar"]
    with pytest.raises(FileNotFoundError, match="no such shard"):
        expand_urls(str(tmp_path / "nope.tar"))
    with pytest.raises(FileNotFoundError, match="matches no shard"):
        expand_urls(str(tmp_path / "*.tgz"))


TABLE = [Bucket(1, 64, 64), Bucket(9, 64, 112), Bucket(17, 64, 112), Bucket(9, 112, 64), Bucket(9, 80, 80)]


@pytest.mark.parametrize("w,h,frames,expected", [
    (1280, 720, 100, "17x64x112"),   # landscape, long: the longest landscape bucket
    (1280, 720, 12, "9x64x112"),     # landscape, short: the bucket it can fill
    (720, 1280, 100, "9x112x64"),    # portrait
    (500, 480, 30, "9x80x80"),       # near square
    (640, 480, 1, "1x64x64"),        # an image: only 1-frame buckets fit
])
def test_bucket_choice(w, h, frames, expected):
    assert Bucketer(TABLE).target(w, h, frames).key == expected


def test_too_short_for_every_bucket_is_none():
    assert Bucketer([Bucket(9, 64, 64)]).target(64, 64, 8) is None


def test_place_reads_the_clip_at_its_stride_and_placed_counts_per_bucket():
    b = Bucketer([Bucket(9, 64, 64), Bucket(17, 64, 64)])
    assert b.place(64, 64, 17, 24.0).key == "17x64x64"  # every frame
    assert b.place(64, 64, 17, 24.0, frame_stride=2).key == "9x64x64"  # 9 frames at stride 2
    assert b.place(64, 64, 17, 24.0, target_fps=8.0) is None  # stride 3: 6 frames fit no bucket
    assert b.place(64, 64, 33, 24.0, target_fps=12.0).key == "17x64x64"  # stride 2: 17 frames
    shapes = {(64, 64, 17, 24.0): 5, (64, 64, 9, 24.0): 3, (64, 64, 4, 24.0): 2}
    assert b.placed(shapes, 1, None) == {"17x64x64": 5, "9x64x64": 3, "too_short": 2}
    assert b.placed(shapes, 2, None) == {"9x64x64": 5, "too_short": 5}
def test_token_budget_sets_batch_sizes_and_rejects_oversized_buckets():
    b = Bucketer([Bucket(9, 64, 112), Bucket(9, 64, 64, batch_size=7)], token_budget=400, token_shape=(4, 16, 16))
    assert tokens(9, 64, 112, (4, 16, 16)) == 3 * 4 * 7
    assert b.batch_size_of(b.buckets[0]) == 400 // 84 and b.batch_size_of(b.buckets[1]) == 7
    with pytest.raises(ValueError, match="more than token_budget"):
        Bucketer([Bucket(33, 256, 256)], token_budget=100, token_shape=(4, 16, 16))
    unset = Bucketer([Bucket(33, 256, 256)], token_budget=100)  # checked once a DiT stage gives the token shape
    with pytest.raises(ValueError, match="needs the token shape"):
        unset.batch_size_of(unset.buckets[0])


def test_expected_batches_counts_full_batches_per_rank():
    b = Bucketer([Bucket(9, 64, 112), Bucket(9, 64, 64)], batch_size=4)
    shapes = {(112, 64, 20, 12.0): 40, (64, 64, 20, 12.0): 9, (64, 64, 3, 12.0): 100}  # last: too short
    assert b.expected_batches(shapes, 1, None, world_size=1) == 10 + 2
    assert b.expected_batches(shapes, 1, None, world_size=2) == 5 + 1


def test_packing_targets_keep_aspect_and_packs_respect_budget():
    b = Bucketer(packing=True, token_budget=200, token_shape=(4, 16, 16), max_area=96 * 96, max_frames=17)
    t = b.target(1280, 720, 100)
    assert (t.height % 16, t.width % 16) == (0, 0) and t.height * t.width <= 96 * 96
    assert abs(t.width / t.height - 16 / 9) < 0.35 and t.num_frames == 17
    assert b.target(300, 300, 6).num_frames == 5  # 1 + 4k frames
    rng = random.Random(0)
    records = [stages.Record(f"k{i}", "u", "mp4", b"x", "c", {}, rng.choice([64, 96, 200]),
                             rng.choice([64, 128]), rng.randint(1, 40), 12.0) for i in range(60)]
    planned = list(stages.plan(records, b, stages.Skips(), rng))
    packs = list(stages.batch(planned, b))
    assert packs and all(sum(b.batch_tokens(p.target) for p in pack) <= 200 for pack in packs)
    sizes = {(p.target.num_frames, p.target.height, p.target.width) for pack in packs for p in pack}
    assert len(sizes) > 3  # variable sizes travel together


def test_plan_frame_indices_follow_stride_and_target_fps():
    b = Bucketer([Bucket(5, 64, 64)])
    r = stages.Record("k", "u", "mp4", b"x", "c", {}, 64, 64, 40, 24.0)
    (p,) = stages.plan([r], b, stages.Skips(), random.Random(0), target_fps=8.0, random_clip=False)
    assert p.stride == 3 and len(p.indices) == 5 and p.indices[1] - p.indices[0] == 3
    assert p.indices[0] == (40 - 13) // 2  # centred for validation
    skips = stages.Skips()
    assert list(stages.plan([r], Bucketer([Bucket(9, 64, 64)]), skips, random.Random(0), frame_stride=5)) == []
    assert skips.counts == {"too_short": 1}


@pytest.mark.parametrize("num_frames, stride, first", [(9, 1, 0), (25, 3, 0), (33, 4, 0), (21, 2, 2), (40, 4, 3)])
def test_span_clip_spreads_the_bucket_frames_over_the_whole_clip(num_frames, stride, first):
    b = Bucketer([Bucket(9, 64, 64)])
    r = stages.Record("k", "u", "mp4", b"x", "c", {}, 64, 64, num_frames, 12.0)
    (p,) = stages.plan([r], b, stages.Skips(), random.Random(0), span_clip=True, random_clip=False)
    assert p.stride == stride and len(p.indices) == 9 and p.indices[0] == first
    assert p.indices[-1] - p.indices[0] == 8 * stride <= num_frames - 1
    assert 8 * (stride + 1) > num_frames - 1  # the widest stride that fits
    (q,) = stages.plan([r], b, stages.Skips(), random.Random(0), span_clip=False, random_clip=False)
    assert q.stride == 1  # off: a window at the native frame rate


def test_cover_size_keeps_aspect_and_covers():
    assert stages.cover_size(1280, 720, 64, 64) == (64, 114)
    assert stages.cover_size(720, 1280, 64, 112) == (199, 112)
