"""Two real torch.distributed processes (gloo): disjoint samples, equal batch counts on uneven shards."""

import json
import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import clip_sample, end_rank, write_tar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, folder: str, workers: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule

    dm = VideoDataModule(folder, bucketer=Bucketer([Bucket(9, 64, 64)], batch_size=2),
                         loader=LoaderOptions(num_workers=workers, shuffle_buffer=4))
    dl = dm.train_dataloader()
    keys = [k for b in dl for k in b["key"]]
    gathered = [None] * world
    dist.all_gather_object(gathered, {"len": len(dl), "batches": len(keys) // 2, "keys": keys})
    dist.barrier()  # both ranks reached the end of the epoch: nobody hangs waiting for a batch
    if rank == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    end_rank()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_get_disjoint_samples_and_equal_epochs(tmp_path, workers):
    sizes = [6, 6, 2]  # three uneven shards over two ranks
    k = 0
    for s, n in enumerate(sizes):
        write_tar(tmp_path / f"shard-{s:06d}.tar", [clip_sample(f"s{s}k{i}", 64, 64, 9, seed=(k := k + 1)) for i in range(n)])
    out = str(tmp_path / "result.json")
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path), workers, out), nprocs=2, join=True)
    with open(out) as f:
        r0, r1 = json.load(f)
    assert r0["len"] == r1["len"] == r0["batches"] == r1["batches"] == 14 // 2 // 2
    assert not set(r0["keys"]) & set(r1["keys"])
