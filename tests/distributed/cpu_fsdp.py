"""``CPUFSDPStrategy``: Lightning's ``FSDPStrategy`` made to run on CPU processes (gloo), for tests.

Two things stand between FSDP and a CPU, neither of them in FSDP's sharding itself:

- Lightning refuses ``FSDPStrategy`` unless the accelerator is CUDA (a check on the strategy's exact
  type in its accelerator connector): a subclass is not stopped by it;
- torch's FSDP picks its device from ``device_id`` or the current accelerator and raises
  "FSDP needs a non-CPU accelerator device" when neither is given; Lightning passes
  ``device_id=root_device.index``, which is ``None`` on CPU. This subclass passes
  ``torch.device("cpu")`` instead (to the root and, through the auto-wrap policy, every wrapped block).

Everything else (auto-wrap, sharding, mixed precision, activation checkpointing, state dicts) is
Lightning's and torch's code as it runs on GPUs. Not for training: use
``lightning.pytorch.strategies.FSDPStrategy`` on GPUs.
"""

import torch
import torch.distributed.fsdp as fsdp
from lightning.pytorch.strategies import FSDPStrategy


class _CPUFullyShardedDataParallel(fsdp.FullyShardedDataParallel):
    def __init__(self, *args, device_id=None, **kwargs):
        super().__init__(*args, device_id=torch.device("cpu"), **kwargs)


class OnCPU:
    """Mixed in before an FSDP strategy: its model is wrapped with FSDP on the CPU device."""

    def _setup_model(self, model):
        original = fsdp.FullyShardedDataParallel
        fsdp.FullyShardedDataParallel = _CPUFullyShardedDataParallel  # Lightning imports it inside the call
        try:
            return super()._setup_model(model)
        finally:
            fsdp.FullyShardedDataParallel = original


class CPUFSDPStrategy(OnCPU, FSDPStrategy):
    pass
