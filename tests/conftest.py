"""Shared test fixtures: real mp4 clips (PyAV) and real tar shards, made in the test's tmp folder."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_export(folder, seed=0):
    """A tiny VAE export (random weights, 4 latent channels, 4x4x4 compression, fixed per-channel stats) in
    ``folder``: the stage-1 export the DiT, encode and evaluation tests build on."""
    import torch

    from videogen.models.vae import VideoAutoencoder
    from videogen.pretrained import save_export

    torch.manual_seed(seed)
    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    stats = {"latent_channels": 4, "latent_mean": [0.1, -0.2, 0.0, 0.3], "latent_std": [1.0, 2.0, 0.5, 1.5],
             "temporal_compression": 4, "spatial_compression": 4}
    return save_export(folder, vae, stats)


def tiny_dit(**kw):
    """A one-block DiT on that export's 4-channel latents, MiniLM-wide (384) text, frame conditioning on."""
    from videogen.models.dit import DiT

    return DiT(**{"in_channels": 4, "hidden_size": 32, "depth": 1, "num_heads": 2, "text_dim": 384,
                  "frame_conditioning": True, **kw})


def make_mp4(width: int, height: int, num_frames: int, fps: int = 12, seed: int = 0) -> bytes:
    """A real H.264 clip (the same bytes every call): a red square moving right over a dark background."""
    from videogen.data.media import encode_mp4

    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 80, size=3)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = bg
    side = max(8, min(width, height) // 3)
    for i in range(num_frames):
        x = int(i * (width - side) / max(1, num_frames - 1))
        frames[i, height // 3: height // 3 + side, x: x + side] = (230, 40, 40)
    return encode_mp4(frames, fps)


def make_png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path, samples: list[dict]) -> str:
    """Write samples ({"__key__", ext: bytes|str|dict}) with plain tarfile, as other tools do."""
    with tarfile.open(path, "w") as tar:
        for s in samples:
            for ext, value in s.items():
                if ext == "__key__":
                    continue
                data = value if isinstance(value, bytes) else (
                    json.dumps(value).encode() if isinstance(value, dict) else str(value).encode())
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def tiny_vae_model(**init_args) -> dict:
    """The ``model:`` section of a VAE that `videogen fit` trains in seconds (``init_args`` add or replace)."""
    return {"class_path": "videogen.modules.vae.VAEModule",
            "init_args": {"vae": {"class_path": "videogen.models.vae.VideoAutoencoder",
                                  "init_args": {"latent_channels": 4, "base_channels": 8, "channel_mult": [1, 2],
                                                "temporal_compression": 4, "spatial_compression": 4,
                                                "patch_size": 2, "patch_size_t": 2}},
                          "optimizer": {"class_path": "torch.optim.AdamW",
                                        "init_args": {"lr": 3e-3, "betas": [0.5, 0.9], "weight_decay": 0.0}},
                          "lr_scheduler": {"class_path": "videogen.modules.lr_schedule.WarmupCosine",
                                           "init_args": {"warmup": 1}}, **init_args}}


def end_rank() -> None:
    """The last line of a ``torch.multiprocessing.spawn`` rank: leave the process group, then exit
    without the interpreter's teardown. Once in CI (2 loaded cores) a rank that had finished its work
    aborted in C++ static destruction ("terminate called without an active exception", SIGABRT) after
    the gloo group was gone; what a test checks is written by then, so the teardown is skipped."""
    import sys

    import torch.distributed as dist

    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (a process group's MASTER_PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank: int, world: int, port: int, out: str, fn, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    gathered = [None] * world
    dist.all_gather_object(gathered, fn(rank, world, *args))  # every rank got here: no rank is left waiting
    if rank == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    end_rank()


def spawn_ranks(fn, world: int, *args, out, hang: float | None = None) -> list:
    """Run ``fn(rank, world, *args)`` in ``world`` spawned processes that share a gloo process group and
    return what each rank's ``fn`` returned (JSON, via the file ``out``), in rank order. ``fn`` is a
    module-level function (it is pickled); an exception in a rank is raised here. ``hang``: seconds after
    which the ranks are killed and the test fails (ranks that disagree wait in a collective forever)."""
    import time

    import torch.multiprocessing as mp

    ctx = mp.start_processes(_gloo_rank, args=(world, free_port(), str(out), fn, args), nprocs=world, join=False,
                             start_method="spawn")
    deadline = None if hang is None else time.monotonic() + hang
    while not ctx.join(timeout=1):
        if deadline is not None and time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError(f"{fn.__name__}: the ranks hung for {hang} s (they disagree on a collective)")
    with open(out) as f:
        return json.load(f)


def clip_sample(key: str, width: int, height: int, frames: int, fps: int = 12, seed: int = 0, meta: bool = True):
    sample = {"__key__": key, "mp4": make_mp4(width, height, frames, fps, seed), "txt": f"clip {key}"}
    if meta:
        sample["json"] = {"width": width, "height": height, "num_frames": frames, "fps": fps,
                          "duration": frames / fps}
    return sample


@pytest.fixture
def clip_shards(tmp_path):
    """4 shards x 6 clips of two sizes (landscape 96x64, square 64x64), 9 to 13 frames, with a manifest."""
    from videogen.data.manifest import DatasetManifest, scan_shard

    folder = tmp_path / "shards"
    folder.mkdir()
    stats = []
    for s in range(4):
        samples = []
        for i in range(6):
            k = s * 6 + i
            w, h = (96, 64) if k % 2 == 0 else (64, 64)
            samples.append(clip_sample(f"c{k:03d}", w, h, 9 + k % 5, seed=k))
        path = write_tar(folder / f"shard-{s:06d}.tar", samples)
        stats.append(scan_shard(path))
    DatasetManifest(shards=stats).save(folder)
    return folder


# --- captioner tests (one conftest: a second conftest.py in a subfolder would shadow this module
#     for every `from conftest import ...`) ---


@pytest.fixture(scope="session")
def vae_export(tmp_path_factory):
    """A tiny VAE export (:func:`tiny_export`, seed 0) for the tests that only read one; a test module
    that needs another defines its own ``vae_export``."""
    return tiny_export(tmp_path_factory.mktemp("vae") / "export")


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    """12 synthetic clips (real mp4s in real tars): train 9 in 3 shards, val 3 in 1 shard."""
    from data_recipes.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_samples=12, seed=0, val_fraction=0.25, shard_size=3)
    return out


@pytest.fixture(scope="session")
def captioner_export(tmp_path_factory):
    """A randomly initialised tiny captioner exported the way `videogen fit` exports one."""
    import torch

    from videogen.models.captioner import captioner_tiny
    from videogen.modules.captioner import CaptionerModule
    from videogen.pretrained import save_export

    torch.manual_seed(0)
    module = CaptionerModule(captioner_tiny(), txt_prob=0.5, video_dropout=0.5)
    return save_export(tmp_path_factory.mktemp("captioner") / "export", module.captioner, module.export_stats())


@pytest.fixture(scope="session")
def slurm():
    """A real two-node SLURM on this host (tests/slurm/cluster.py), started once for every SLURM test."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "slurm"))
    from cluster import LocalSlurm, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no SLURM test cluster: {reason}")
    cluster = LocalSlurm()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
