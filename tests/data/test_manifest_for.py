"""One answer to "where is the dataset.json of this shard?" for plain paths, file: URLs, http and pipe:."""

import io
import tarfile
from pathlib import Path

import pytest

from videogen.data.manifest import DatasetManifest, ManifestError, ShardStats, manifest_for, manifests_of
from videogen.data.shards import local_path
from videogen.data.sizing import shard_shapes
from videogen.encoding import latent_cache_folders

META = b'{"width": 64, "height": 48, "num_frames": 9, "fps": 8}'


def _shard(folder: Path, name: str = "shard-000000.tar") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / name, "w") as tar:
        for member, data in (("a.mp4", b"v"), ("a.json", META), ("a.txt", b"a cap")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder / name


def test_manifest_for_every_kind_of_url(tmp_path):
    shard = _shard(tmp_path / "set")
    beside = str((tmp_path / "set" / "dataset.json").resolve())
    assert manifest_for(str(shard)) == beside
    assert manifest_for(f"file:{shard}") == beside
    assert manifest_for(f"file://{shard}") == beside
    assert manifest_for("https://host/sets/a/shard-000001.tar") == "https://host/sets/a/dataset.json"
    assert manifest_for("s3://bucket/a/x.tar") == "s3://bucket/a/dataset.json"
    with pytest.raises(ManifestError, match="pipe: shards is not guessed from the command"):
        manifest_for("pipe:aws s3 cp s3://b/x.tar -")
    assert local_path(f"file://{shard}") == str(shard) and local_path("http://h/x.tar") is None
    assert local_path("file://otherhost/x.tar") is None  # not this machine's file


def test_file_urls_find_the_manifest_beside_the_shard_like_plain_paths(tmp_path):
    shard = _shard(tmp_path / "set")
    stats = ShardStats(name=shard.name, num_samples=7)
    stats.shapes["64x48/9@8"] = 7
    DatasetManifest(shards=[stats], created_by={"command": "encode", "vae": {"weights_sha256": "ab"}}).save(
        tmp_path / "set")
    for url in (str(shard), f"file:{shard}", f"file://{shard}"):
        (m,) = manifests_of([url]).values()
        assert m is not None and m.num_samples == 7
        shapes, count = shard_shapes([url])
        assert count == 7 and dict(shapes) == {(64, 48, 9, 8.0): 7}  # from the manifest, not the 1-sample tar
        assert latent_cache_folders(url) == [(tmp_path / "set").resolve()]


def test_a_local_file_url_without_a_manifest_is_scanned_not_refused(tmp_path):
    shard = _shard(tmp_path / "plain")
    shapes, count = shard_shapes([f"file://{shard}"])
    assert count == 1 and dict(shapes) == {(64, 48, 9, 8.0): 1}
    with pytest.raises(ManifestError, match="remote shards need their sample counts up front"):
        shard_shapes(["http://127.0.0.1:9/none/x.tar"])
