"""Two real torch.distributed processes (gloo) where one rank sees a different shard set: a shard that
appeared between the ranks' listings, a transient read error while counting, a missing folder. Epoch
sizing is decided once (rank 0) and shared, so both ranks get the same shard list and batch count
and finish an epoch of per-batch collectives, or both stop at setup with the same error; no hang."""

import os

import pytest
import torch
import torch.distributed as dist

from conftest import spawn_ranks
from reliability_helpers import clip_sample, write_tar

HANG = 120  # seconds: ranks that disagree on the epoch length wait in a collective until killed here


def _rank(rank: int, world: int, folder: str, extra: str, fault: str) -> dict:
    from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule

    spec: str | list[str] = folder
    if rank == 1 and fault == "extra_shard":  # the glob on this rank found one shard more
        spec = [folder, extra]
    if rank == 1 and fault == "read_error":  # counting a shard failed on this rank (no manifest: scanned)
        import videogen.data.sizing as sizing  # where shard set sizes are counted

        real = sizing.scan_shard

        def flaky(url, *a, **kw):
            if url.endswith("shard-000000.tar"):
                raise OSError(f"{url}: Input/output error (transient)")
            return real(url, *a, **kw)

        sizing.scan_shard = flaky
    if rank == 0 and fault == "missing_on_rank0":
        spec = folder + "-gone"
    result = {"rank": rank}
    try:
        dm = VideoDataModule(spec, bucketer=Bucketer([Bucket(9, 64, 64)], batch_size=1),
                             loader=LoaderOptions(num_workers=0, shuffle_buffer=0))
        loader = dm.train_dataloader()
        result.update(len=len(loader), urls=[os.path.basename(u) for u in loader.dataset.urls])
        batches = 0
        for _ in loader:  # one collective per batch, as DDP does: unequal epochs hang here
            dist.all_reduce(torch.ones(1))
            batches += 1
        dist.barrier()
        result["batches"] = batches
    except Exception as e:  # noqa: BLE001 - the error each rank stopped with is what the test compares
        result["error"] = f"{type(e).__name__}: {e}"
    return result


def run_ranks(tmp_path, fault: str) -> tuple[dict, dict]:
    folder, extra = tmp_path / "shards", tmp_path / "late" / "shard-000009.tar"
    folder.mkdir()
    extra.parent.mkdir()
    for s in range(2):  # 2 shards x 3 clips, no manifest: sized by scanning their headers
        write_tar(folder / f"shard-{s:06d}.tar", [clip_sample(f"s{s}k{i}", 64, 64, 9, seed=s * 3 + i) for i in range(3)])
    write_tar(extra, [clip_sample(f"late{i}", 64, 64, 9, seed=50 + i) for i in range(4)])
    return tuple(spawn_ranks(_rank, 2, str(folder), str(extra), fault, out=tmp_path / "ranks.json", hang=HANG))


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["extra_shard", "read_error"])
def test_ranks_that_see_different_shards_agree_on_rank_zeros_epoch(tmp_path, fault):
    r0, r1 = run_ranks(tmp_path, fault)
    assert "error" not in r0 and "error" not in r1, (r0, r1)
    assert r0["urls"] == r1["urls"] == ["shard-000000.tar", "shard-000001.tar"]  # rank 0's listing, on both
    assert r0["len"] == r1["len"] == r0["batches"] == r1["batches"] == 3  # 6 clips / 2 ranks / batch 1


@pytest.mark.slow
def test_a_shard_set_rank_zero_cannot_size_stops_both_ranks_with_its_error(tmp_path):
    r0, r1 = run_ranks(tmp_path, "missing_on_rank0")
    assert r0["error"] == r1["error"] and r0["error"].startswith("FileNotFoundError: "), (r0, r1)
    assert "shards-gone: no such shard" in r0["error"]
