"""Batch sizes per bucket measured on this device (``videogen tune-buckets --config X.yaml``).

For each bucket of the config's ``data`` table, real training steps of the config's model (through
a Lightning Trainer, the config's precision, one device) run on synthetic batches of that shape
with growing batch sizes (doubling, then a binary search), and the peak memory of each is measured:

- on CUDA: ``torch.cuda.max_memory_allocated`` over the step (weights, gradients, optimizer state,
  activations, temporaries: what the caching allocator handed out);
- on a CPU: a proxy, since the CPU allocator keeps no peak: the bytes of the tensors autograd saves
  for backward during the step (``torch.autograd.graph.saved_tensors_hooks``, each storage counted
  once, parameters excluded) plus the batch, the parameters, their gradients and the optimizer
  state. It leaves out temporaries and allocator overhead, so keep a headroom.

The largest batch size whose peak stays within the budget is the bucket's (:func:`tune_bucket`);
:func:`write_fragment` writes the table as a config fragment to merge after the original, leaving out
a bucket that does not fit even one clip. Steps run on pixel batches (a latent-cache DiT run needs
less: the VAE encode is not in it).
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("videogen")
GB = 1024**3


def synthetic_batch(bucket, batch_size: int, caption_words: int = 64) -> dict[str, Any]:
    """A float batch of one bucket's shape as the datamodule delivers it (after to_float)."""
    import torch

    b, t, h, w = batch_size, bucket.num_frames, bucket.height, bucket.width
    caption = " ".join(["a small red square moves slowly to the right over a dark green field"] * 8).split()
    caption = " ".join(caption[:caption_words])  # long captions: the text side at its largest
    return {"video": torch.rand(b, 3, t, h, w) * 2 - 1, "caption": [caption] * b, "key": [f"tune{i}" for i in range(b)],
            "url": ["tune"] * b, "meta": [{} for _ in range(b)], "fps": torch.full((b,), 16.0), "bucket": bucket.name}


class SavedTensorBytes:
    """CPU memory proxy of one step: saved-for-backward bytes + batch + weights, grads, optimizer state."""

    def __init__(self):
        from lightning.pytorch import Callback

        probe = self

        class _Probe(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                probe.start(pl_module, batch)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                probe.stop(trainer, pl_module)

            def on_exception(self, trainer, pl_module, exception):
                probe.close()

        self.callback = _Probe()
        self.peak = 0
        self._ctx = None

    def start(self, pl_module, batch) -> None:
        import torch

        params = {p.untyped_storage().data_ptr() for p in pl_module.parameters()}
        seen: set[int] = set()
        self.saved = sum(v.numel() * v.element_size() for v in batch.values() if isinstance(v, torch.Tensor))

        def pack(t):
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in params and ptr not in seen:
                seen.add(ptr)
                self.saved += storage.nbytes()
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = None

    def stop(self, trainer, pl_module) -> None:
        import torch

        self.close()
        state = 0
        for p in pl_module.parameters():
            state += p.numel() * p.element_size() * (1 + (p.grad is not None or p.requires_grad))
        for opt in trainer.optimizers:
            for s in opt.state.values():
                state += sum(v.numel() * v.element_size() for v in s.values() if isinstance(v, torch.Tensor))
        self.peak = max(self.peak, state + self.saved)


def step_peak_bytes(module, bucket, batch_size: int, accelerator: str, precision: Any) -> int | None:
    """Peak bytes of one training step at this batch size; None when it ran out of memory."""
    import torch
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    gpu = accelerator in ("gpu", "cuda")
    probe = SavedTensorBytes() if not gpu else None
    trainer = Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, limit_val_batches=0, callbacks=[probe.callback] if probe else [])
    batch = synthetic_batch(bucket, batch_size)
    try:
        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))  # the batch as it is
        return torch.cuda.max_memory_allocated() if gpu else probe.peak
    except (torch.OutOfMemoryError, MemoryError):
        return None
    finally:
        del trainer, batch
        for p in module.parameters():
            p.grad = None
        gc.collect()
        if gpu:
            torch.cuda.empty_cache()


def tune_bucket(module, bucket, budget: int, max_batch: int, accelerator: str, precision: Any,
                report: dict[int, int | None]) -> int:
    """The largest batch size <= max_batch whose measured peak is within budget (0: not even 1)."""

    def fits(b: int) -> bool:
        if b not in report:
            report[b] = step_peak_bytes(module, bucket, b, accelerator, precision)
            log.info("bucket %s batch %d: peak %s", bucket.name, b,
                     "out of memory" if report[b] is None else f"{report[b] / GB:.3f} GiB")
        return report[b] is not None and report[b] <= budget

    if not fits(1):
        return 0
    good, bad = 1, None
    while bad is None and good < max_batch:  # doubling
        nxt = min(2 * good, max_batch)
        good, bad = (nxt, None) if fits(nxt) else (good, nxt)
    while bad is not None and bad - good > 1:  # binary search between the last fit and the first miss
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def peak_method(accelerator: str) -> tuple[str, str]:
    """``(device name, how the peak is measured)`` for the report and the fragment's header."""
    import torch

    if accelerator in ("gpu", "cuda"):
        return torch.cuda.get_device_name(), "torch.cuda.max_memory_allocated"
    return (f"cpu ({os.cpu_count()} cores)",
            "CPU proxy: autograd saved-tensor bytes + batch + weights, gradients, optimizer state")


def tune_table(module, buckets: list, budget: int, max_batch: int, accelerator: str,
               precision: Any) -> Iterator[tuple[Any, int, dict[int, int | None]]]:
    """Per bucket, in order: ``(bucket, largest batch size that fits (0: not one clip), peaks by batch size tried)``."""
    for bucket in buckets:
        report: dict[int, int | None] = {}
        best = tune_bucket(module, bucket, budget, max_batch, accelerator, precision, report)
        yield bucket, best, report


def write_fragment(path: Path, data_class: str, tuned: list, dropped: list, device: str, method: str,
                   budget: int, sources: list[str], peaks: dict[str, int]) -> None:
    import yaml

    lines = [f"# written by: videogen tune-buckets --config {' --config '.join(sources)}",
             f"# device: {device}; budget {budget / GB:.3f} GiB per device; peak memory: {method}",
             f"# use: videogen fit {' '.join('--config ' + s for s in sources)} --config {path}"]
    lines += [f"# bucket {b.name}: batch {b.batch_size}, measured peak {peaks[b.name] / GB:.4f} GiB" for b in tuned]
    lines += [f"# bucket {name}: left out, one clip does not fit the budget" for name in dropped]
    buckets = [{"num_frames": b.num_frames, "height": b.height, "width": b.width, "batch_size": b.batch_size}
               for b in tuned]
    body = yaml.safe_dump({"data": {"class_path": data_class, "init_args": {"bucketer": {"buckets": buckets}}}},
                          sort_keys=False, default_flow_style=None)
    path.write_text("\n".join(lines) + "\n" + body)
