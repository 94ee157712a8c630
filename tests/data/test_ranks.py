"""Two real torch.distributed processes (gloo): disjoint samples, equal batch counts on uneven shards."""

import pytest

from conftest import clip_sample, spawn_ranks, write_tar


def _rank_main(rank: int, world: int, folder: str, workers: int) -> dict:
    from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule

    dm = VideoDataModule(folder, bucketer=Bucketer([Bucket(9, 64, 64)], batch_size=2),
                         loader=LoaderOptions(num_workers=workers, shuffle_buffer=4))
    dl = dm.train_dataloader()
    keys = [k for b in dl for k in b["key"]]
    return {"len": len(dl), "batches": len(keys) // 2, "keys": keys}  # gathered once every rank ends its epoch


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_get_disjoint_samples_and_equal_epochs(tmp_path, workers):
    sizes = [6, 6, 2]  # three uneven shards over two ranks
    k = 0
    for s, n in enumerate(sizes):
        write_tar(tmp_path / f"shard-{s:06d}.tar", [clip_sample(f"s{s}k{i}", 64, 64, 9, seed=(k := k + 1)) for i in range(n)])
    r0, r1 = spawn_ranks(_rank_main, 2, str(tmp_path), workers, out=tmp_path / "result.json")
    assert r0["len"] == r1["len"] == r0["batches"] == r1["batches"] == 14 // 2 // 2
    assert not set(r0["keys"]) & set(r1["keys"])
