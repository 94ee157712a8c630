"""The data side of the 2-D layout: with 4 ranks in sequence groups of 2, Lightning's sampler kwargs of
the strategy give each rank its data-parallel rank and world, and the real loader over real shards hands
both ranks of a group the same batches and the two groups disjoint ones."""

from types import SimpleNamespace

import pytest
import torch

from conftest import clip_sample, write_tar
from videogen.parallel.strategy import SequenceParallelStrategy


class RankedStrategy(SequenceParallelStrategy):
    """The strategy as global rank ``rank`` of 4 processes on one node sees itself (no process group needed)."""

    def __init__(self, rank: int):
        super().__init__(sequence_parallel_size=2, parallel_devices=[torch.device("cpu")] * 4, num_nodes=1)
        self._rank = rank

    @property
    def global_rank(self) -> int:
        return self._rank


@pytest.mark.slow

def test_sequence_groups_share_batches_and_data_groups_split_them(tmp_path):
    from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule

    for s in range(2):
        write_tar(tmp_path / f"shard-{s:06d}.tar", [clip_sample(f"s{s}k{i}", 64, 64, 9, seed=s * 10 + i) for i in range(4)])
    keys = []
    for rank in range(4):
        kw = RankedStrategy(rank).distributed_sampler_kwargs
        assert kw == {"num_replicas": 2, "rank": rank // 2}
        dm = VideoDataModule(str(tmp_path), bucketer=Bucketer([Bucket(9, 64, 64)], batch_size=2),
                             loader=LoaderOptions(num_workers=0, shuffle_buffer=4))
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs=kw)
        keys.append([list(b["key"]) for b in dm.train_dataloader()])
    assert keys[0] == keys[1] and keys[2] == keys[3] and len(keys[0]) == 2  # 8 clips / 2 data ranks / batch 2
    assert not {k for b in keys[0] for k in b} & {k for b in keys[2] for k in b}
