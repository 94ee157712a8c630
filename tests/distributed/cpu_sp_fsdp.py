"""``CPUSequenceParallelFSDPStrategy``: videogen's ``SequenceParallelFSDPStrategy`` made to run on CPU
processes (gloo) for tests, by the one change ``cpu_fsdp.CPUFSDPStrategy`` explains (FSDP's device is
the CPU). Not for training: use ``videogen.parallel.strategy.SequenceParallelFSDPStrategy`` on GPUs."""

from cpu_fsdp import OnCPU
from videogen.parallel.strategy import SequenceParallelFSDPStrategy


class CPUSequenceParallelFSDPStrategy(OnCPU, SequenceParallelFSDPStrategy):
    pass
