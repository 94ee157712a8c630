"""Fuzzing the shard reader, `plan`, decoding and `videogen inspect` with random bytes and random tar
layouts, plain, compressed (asked for or not) and nested: they end (no hang) with only the stream's
counted skips or a clear error, never a crash.

Each run draws a seed, printed with the test's output; replay a failure with
``VIDEOGEN_FUZZ_SEED=<seed> pytest tests/reliability/test_fuzz.py``."""

import bz2
import gzip
import io
import json
import lzma
import os
import random
import tarfile
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, seed, settings, strategies as st

from reliability_helpers import make_mp4, make_png
from videogen.cli import main
from videogen.data import stages
from videogen.data.buckets import Bucket, Bucketer
from videogen.data.decode import make_decoder

REASONS = {"unreadable_shard", "unsafe_member_name", "truncated_shard", "not_a_tar", "unsafe_member",
           "member_too_large", "sample_too_large", "shard_too_large", "compressed_shard", "no_media", "empty_media",
           "bad_caption", "missing_caption", "bad_json", "bad_meta", "decode_error", "decode_timeout", "too_short",
           "meta_mismatch"}
MP4 = make_mp4(32, 32, 5)
PNG = make_png(24, 16)
SEED = int(os.environ.get("VIDEOGEN_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
FUZZ = settings(max_examples=100, deadline=timedelta(seconds=20), database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
BUCKETER = Bucketer([Bucket(1, 16, 16), Bucket(5, 16, 16), Bucket(3, 16, 32)], batch_size=2)


@pytest.fixture(autouse=True)
def print_seed():
    print(f"fuzz seed {SEED}: replay with VIDEOGEN_FUZZ_SEED={SEED}")

names = st.one_of(
    st.sampled_from(["k0", "k1", "a.b", "", ".", "..", "../k0", "/abs/k0", "dir/k0", "k0\\..\\x", "ключ", "🎥"]),
    st.text(min_size=0, max_size=12),
)
exts = st.sampled_from(["mp4", "txt", "json", "jpg", "png", "webm", "pth", "pyd", "pickle", "latent.npy", "", "MP4"])
contents = st.one_of(
    st.binary(max_size=600),
    st.just(MP4),
    st.just(PNG),
    st.integers(1, len(MP4) - 1).map(lambda n: MP4[:n]),
    st.dictionaries(st.sampled_from(["width", "height", "num_frames", "fps", "captions"]),
                    st.one_of(st.integers(-5, 100), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                              st.booleans(), st.text(max_size=5), st.none()),
                    max_size=5).map(lambda d: json.dumps(d).encode()),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
types = st.sampled_from([tarfile.REGTYPE] * 6 + [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE])
members = st.lists(st.tuples(names, exts, contents, types), max_size=8)


def tar_bytes(layout) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, ext, data, kind in layout:
            info = tarfile.TarInfo(f"{name}.{ext}" if ext else name or "x")
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
    return buf.getvalue()


def wrap(data: bytes, how: str) -> bytes:
    """The shard as written (``plain``), compressed, or nested: a tar holding it as a member."""
    if how == "gzip":
        return gzip.compress(data)
    if how == "bz2":
        return bz2.compress(data)
    if how == "xz":
        return lzma.compress(data)
    if how == "nested":
        return tar_bytes([("inner", "tar", data, tarfile.REGTYPE), ("k0", "mp4", MP4, tarfile.REGTYPE),
                          ("k0", "txt", b"outer", tarfile.REGTYPE)])
    return data


def read_all(path, compressed: bool) -> tuple[list[stages.Record], stages.Skips, int]:
    """The stream's stages over one shard: read, group, parse, plan, batch and decode every batch."""
    skips = stages.Skips(max_logged=0)
    limits = stages.TarLimits(member_bytes=4096, sample_bytes=8192, compressed=compressed)
    members = stages.read_tar([str(path)], skips, limits)
    records = list(stages.parse(stages.group_samples(members), skips, make_decoder("auto")))
    planned = stages.plan(records, BUCKETER, skips, random.Random(0))
    decode = stages.TimedDecoder(make_decoder("auto"), timeout_s=10)
    decoded = 0
    for batch in stages.batch(planned, BUCKETER, flush=True):
        for item, frames in stages.decode_batch(batch, decode, skips, fill=False):
            t = item.target
            assert frames.shape == (t.num_frames, t.height, t.width, 3) and frames.dtype.name == "uint8"
            decoded += 1
    return records, skips, decoded


def check(path, capsys, compressed: bool = False) -> None:
    records, skips, _ = read_all(path, compressed)
    assert set(skips.counts) <= REASONS
    for r in records:
        assert r.media and r.width > 0 and r.height > 0 and r.num_frames > 0 and ".." not in r.key.split("/")
    args = ["--compressed"] if compressed else []
    status = main(["inspect", str(path.parent), "--json", "--no-progress", "--frames", "2", *args])
    out, err = capsys.readouterr()
    if status == 0:
        report = json.loads(out)
        assert isinstance(report, dict)
    else:  # a clear, one-line error
        assert status == 2 and err.startswith("videogen inspect: error:"), err


@seed(SEED)
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_a_shard(tmp_path_factory, capsys, data):
    folder = tmp_path_factory.mktemp("bytes")
    (folder / "x.tar").write_bytes(data)
    check(folder / "x.tar", capsys)


@seed(SEED)
@FUZZ
@given(layout=members, cut=st.one_of(st.none(), st.floats(0, 1)), flip=st.one_of(st.none(), st.integers(0, 10**6)),
       how=st.sampled_from(["plain", "plain", "gzip", "bz2", "xz", "nested"]), compressed=st.booleans())
def test_random_tar_layouts_truncations_and_bit_flips(tmp_path_factory, capsys, layout, cut, flip, how, compressed):
    data = bytearray(wrap(tar_bytes(layout), how))
    if flip is not None and data:
        data[flip % len(data)] ^= 0xFF
    if cut is not None:
        data = data[: int(len(data) * cut)]
    folder = tmp_path_factory.mktemp("layout")
    (folder / "x.tar").write_bytes(bytes(data))
    check(folder / "x.tar", capsys, compressed)


@pytest.mark.parametrize("how,compressed", [("plain", False), ("gzip", True), ("bz2", True), ("xz", True),
                                            ("nested", False)])
def test_the_fuzzed_path_reaches_plan_and_decoding(tmp_path, how, compressed):
    """What the fuzz tests run is the whole stream: a good layout in each wrapping is planned and decoded
    (and a compressed one not asked for is refused, counted)."""
    good = [("k1", "mp4", MP4, tarfile.REGTYPE), ("k1", "txt", b"a clip", tarfile.REGTYPE),
            ("k2", "png", PNG, tarfile.REGTYPE), ("k2", "txt", b"an image", tarfile.REGTYPE)]
    (tmp_path / "x.tar").write_bytes(wrap(tar_bytes(good), how))
    records, skips, decoded = read_all(tmp_path / "x.tar", compressed)
    assert decoded == len(records) == (1 if how == "nested" else 2), dict(skips.counts)
    if how == "nested":  # the inner tar is a member like any other: never opened as a shard
        assert [r.key for r in records] == ["k0"] and set(skips.counts) <= {"member_too_large", "no_media"}
    if compressed:
        _, skips, decoded = read_all(tmp_path / "x.tar", False)
        assert decoded == 0 and dict(skips.counts) == {"compressed_shard": 1}
