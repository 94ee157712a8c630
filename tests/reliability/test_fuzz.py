"""Fuzzing the shard reader and `videogen inspect` with random bytes and random tar layouts: they end
(no hang) with only the stream's counted skips or a clear error, never a crash."""

import io
import json
import tarfile
from datetime import timedelta

from hypothesis import HealthCheck, given, settings, strategies as st

from reliability_helpers import make_mp4
from videogen.cli import main
from videogen.data import stages
from videogen.data.decode import make_decoder

REASONS = {"unreadable_shard", "unsafe_member_name", "truncated_shard", "not_a_tar", "unsafe_member",
           "member_too_large", "no_media", "empty_media", "bad_caption", "missing_caption", "bad_json",
           "decode_error", "decode_timeout", "too_short", "meta_mismatch"}
MP4 = make_mp4(32, 32, 5)
FUZZ = settings(max_examples=100, deadline=timedelta(seconds=20), derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

names = st.one_of(
    st.sampled_from(["k0", "k1", "a.b", "", ".", "..", "../k0", "/abs/k0", "dir/k0", "k0\\..\\x", "ключ", "🎥"]),
    st.text(min_size=0, max_size=12),
)
exts = st.sampled_from(["mp4", "txt", "json", "jpg", "png", "webm", "pth", "pyd", "pickle", "latent.npy", "", "MP4"])
contents = st.one_of(
    st.binary(max_size=600),
    st.just(MP4),
    st.integers(1, len(MP4) - 1).map(lambda n: MP4[:n]),
    st.dictionaries(st.sampled_from(["width", "height", "num_frames", "fps", "captions"]),
                    st.one_of(st.integers(-5, 100), st.floats(allow_nan=True), st.text(max_size=5), st.none()),
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


def read_all(path) -> tuple[list[stages.Record], stages.Skips]:
    skips = stages.Skips(max_logged=0)
    members = stages.read_tar([str(path)], skips, max_member_bytes=4096)
    records = list(stages.parse(stages.group_samples(members), skips, make_decoder("auto")))
    return records, skips


def check(path, capsys) -> None:
    records, skips = read_all(path)
    assert set(skips.counts) <= REASONS
    for r in records:
        assert r.media and r.width > 0 and r.height > 0 and r.num_frames > 0 and ".." not in r.key.split("/")
    status = main(["inspect", str(path.parent), "--json", "--no-progress", "--frames", "2"])
    out, err = capsys.readouterr()
    if status == 0:
        report = json.loads(out)
        assert isinstance(report, dict)
    else:  # a clear, one-line error
        assert status == 2 and err.startswith("videogen inspect: error:"), err


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_a_shard(tmp_path_factory, capsys, data):
    folder = tmp_path_factory.mktemp("bytes")
    (folder / "x.tar").write_bytes(data)
    check(folder / "x.tar", capsys)


@FUZZ
@given(layout=members, cut=st.one_of(st.none(), st.floats(0, 1)), flip=st.one_of(st.none(), st.integers(0, 10**6)))
def test_random_tar_layouts_truncations_and_bit_flips(tmp_path_factory, capsys, layout, cut, flip):
    data = bytearray(tar_bytes(layout))
    if flip is not None and data:
        data[flip % len(data)] ^= 0xFF
    if cut is not None:
        data = data[: int(len(data) * cut)]
    folder = tmp_path_factory.mktemp("layout")
    (folder / "x.tar").write_bytes(bytes(data))
    check(folder / "x.tar", capsys)
