"""``CPUSequenceParallelFSDPStrategy``: videogen's ``SequenceParallelFSDPStrategy`` made to run on CPU
processes (gloo) for tests, by the one change ``cpu_fsdp.CPUFSDPStrategy`` explains (FSDP's device is
the CPU). Not for training: use ``videogen.parallel.strategy.SequenceParallelFSDPStrategy`` on GPUs."""

import torch.distributed.fsdp as fsdp

from cpu_fsdp import _CPUFullyShardedDataParallel
from videogen.parallel.strategy import SequenceParallelFSDPStrategy


class CPUSequenceParallelFSDPStrategy(SequenceParallelFSDPStrategy):
    def _setup_model(self, model):
        original = fsdp.FullyShardedDataParallel
        fsdp.FullyShardedDataParallel = _CPUFullyShardedDataParallel  # Lightning imports it inside the call
        try:
            return super()._setup_model(model)
        finally:
            fsdp.FullyShardedDataParallel = original
