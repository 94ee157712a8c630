"""videogen encode: the latent cache from a real (tiny) VAE export over real shards; resume by shard;
the VAE identity check that keeps a stale cache out."""

import io
import json
import re
import tarfile

import numpy as np
import pytest
import torch

from conftest import tiny_export
from videogen.pipelines.encode import encode
from videogen.encoding import check_cache_identity, encode_latents, load_vae, normalize_latents, denormalize_latents


def read_latents(shard):
    out = {}
    with tarfile.open(shard) as tar:
        for m in tar:
            key, ext = m.name.split(".", 1)
            data = tar.extractfile(m).read()
            out.setdefault(key, {})[ext] = data
    return out


def test_encode_writes_one_latent_per_clip_with_identity(tmp_path, clip_shards):
    vae_dir = tiny_export(tmp_path / "vae")
    out = encode(str(vae_dir), str(clip_shards), tmp_path / "lat", max_area=64 * 96, max_frames=9,
                 num_workers=0, accelerator="cpu", devices=1, progress=False)
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["num_samples"] == 24 and manifest["num_shards"] == 4
    assert manifest["created_by"]["vae"]["weights_sha256"] == json.loads((vae_dir / "manifest.json").read_text())["weights_sha256"]
    samples = read_latents(out / "shard-000000.tar")
    assert len(samples) == 6
    export = load_vae(vae_dir)
    for key, s in samples.items():
        z = np.load(io.BytesIO(s["latent.npy"]), allow_pickle=False)
        meta = json.loads(s["json"])
        t, h, w = meta["latent"]["frames"], meta["latent"]["height"], meta["latent"]["width"]
        assert z.dtype == np.float16 and z.shape == (4, 1 + (t - 1) // 4, h // 4, w // 4)
        assert (h % 8, w % 8, (t - 1) % 4) == (0, 0, 0) and s["txt"].decode() == f"clip {key}"
    # the cached latent is what the one encode path gives for the same clip
    from videogen.data.buckets import Bucketer
    from videogen.data.loader import ShardPassStream, StreamOptions
    from videogen.data.stages import to_float

    stream = ShardPassStream([str(clip_shards / "shard-000000.tar")], Bucketer(
        packing=True, token_budget=10**9, token_shape=(4, 4, 4), max_area=64 * 96, max_frames=9, size_multiple=8,
        frame_multiple=4), options=StreamOptions(require_caption=False))
    batch = to_float(next(iter(stream)))
    key, video = batch["key"][0], batch["video"][0]
    direct = encode_latents(export.module, video[None])[0].numpy()
    cached = np.load(io.BytesIO(samples[key]["latent.npy"]))
    np.testing.assert_allclose(cached.astype(np.float32), direct, atol=2e-2, rtol=2e-3)  # float16 storage


def test_encode_resumes_by_shard(tmp_path, clip_shards):
    vae_dir = tiny_export(tmp_path / "vae")
    kw = dict(max_area=64 * 64, max_frames=9, num_workers=0, accelerator="cpu", devices=1, progress=False)
    out = encode(str(vae_dir), str(clip_shards), tmp_path / "lat", **kw)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    (out / "shard-000002.tar").unlink()  # as if interrupted while writing it
    (out / ".done" / "shard-000002.tar.json").unlink()
    encode(str(vae_dir), str(clip_shards), out, **kw)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert set(after) == set(before)
    assert [n for n in after if after[n] != before.get(n)] == ["shard-000002.tar"]
    assert json.loads((out / "dataset.json").read_text())["num_samples"] == 24


def test_stale_cache_is_refused(tmp_path, clip_shards):
    vae_a, vae_b = tiny_export(tmp_path / "a", seed=0), tiny_export(tmp_path / "b", seed=1)
    out = encode(str(vae_a), str(clip_shards / "shard-000000.tar"), tmp_path / "lat", max_area=64 * 64,
                 max_frames=9, num_workers=0, accelerator="cpu", devices=1, progress=False)
    check_cache_identity(out, load_vae(vae_a))  # the VAE that wrote it: fine
    a, b = load_vae(vae_a), load_vae(vae_b)
    refused = (f"latents were written by the VAE at {a.folder} (weights sha256 {a.manifest['weights_sha256'][:12]}), "
               f"but this run uses the VAE at {b.folder} ({b.manifest['weights_sha256'][:12]}): ")
    with pytest.raises(ValueError, match=re.escape(f"{out}: {refused}re-run `videogen encode --vae {b.folder}`")):
        check_cache_identity(out, b)
    with pytest.raises(ValueError, match=re.escape(f"{refused}write this cache to a new folder")):
        encode(str(vae_b), str(clip_shards / "shard-000000.tar"), out, num_workers=0, accelerator="cpu",
               devices=1, progress=False)
    with pytest.raises(FileNotFoundError, match="no dataset.json"):
        check_cache_identity(tmp_path, load_vae(vae_a))


def test_normalisation_round_trip():
    stats = {"latent_mean": [0.5, -1.0], "latent_std": [2.0, 0.25]}
    z = torch.randn(3, 2, 2, 4, 4)
    n = normalize_latents(z, stats)
    assert torch.allclose(denormalize_latents(n, stats), z, atol=1e-6)
    assert torch.allclose(n[:, 1], (z[:, 1] + 1.0) / 0.25)


def test_encode_cli_errors(tmp_path, capsys):
    from videogen.cli import main

    assert main(["encode", "--vae", str(tmp_path / "nope"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "videogen encode:" in capsys.readouterr().out


def test_buckets_from_reads_the_data_section_as_training_does(tmp_path, capsys):
    """omegaconf interpolation and --data.* overrides apply, as in `videogen fit`; errors name the file."""
    from videogen.cli import main
    from videogen.pipelines.encode import buckets_from

    cfg = tmp_path / "dit.yaml"
    cfg.write_text("model:\n  init_args:\n    side: 48\n"
                   "data:\n  class_path: videogen.data.VideoDataModule\n  init_args:\n    train_shards: nowhere\n"
                   "    clips: {span_clip: true}\n    bucketer:\n      buckets:\n        - num_frames: 9\n"
                   "          height: ${model.init_args.side}\n          width: 64\n")
    got = buckets_from(cfg)
    assert got == {"buckets": [{"num_frames": 9, "height": 48, "width": 64, "batch_size": None}], "frame_stride": 1,
                   "target_fps": None, "span_clip": True}
    assert buckets_from(cfg, ["--data.clips.frame_stride=2", "--data.clips.span_clip=false"])["frame_stride"] == 2
    assert buckets_from(cfg, ["--data.clips.span_clip=false"])["span_clip"] is False
    with pytest.raises(FileNotFoundError, match="--buckets-from .*missing.yaml: no such config file"):
        buckets_from(tmp_path / "missing.yaml")
    packing = tmp_path / "packing.yaml"
    packing.write_text("data:\n  init_args:\n    bucketer: {packing: true, token_budget: 4096}\n")
    with pytest.raises(ValueError, match="packing.yaml: its data section has no bucket table"):
        buckets_from(packing)
    assert main(["encode", "--vae", "v", "--data", "d", "--out", "o", "--data.clips.span_clip=true"]) == 2
    assert "only --data.* overrides of the --buckets-from config are accepted" in capsys.readouterr().err


def _encode_rank(rank, world, shards):
    from videogen.data.buckets import Bucketer
    from videogen.data.loader import ShardPassStream, StreamOptions
    from videogen.data.shards import expand_urls

    stream = ShardPassStream(expand_urls(shards), Bucketer(packing=True, token_budget=10**9, token_shape=(4, 4, 4),
                             max_area=64 * 64, max_frames=9, size_multiple=8, frame_multiple=4),
                             options=StreamOptions(require_caption=False), rank=rank, world_size=world)
    return [b["shard_done"].rsplit("/", 1)[-1] for b in stream if "shard_done" in b]


@pytest.mark.slow
def test_two_ranks_read_disjoint_whole_shards(tmp_path, clip_shards):
    from conftest import spawn_ranks

    r0, r1 = spawn_ranks(_encode_rank, 2, str(clip_shards), out=tmp_path / "ranks.json")
    assert sorted(r0 + r1) == [f"shard-{i:06d}.tar" for i in range(4)] and not set(r0) & set(r1)
    assert len(r0) == len(r1) == 2
