"""``videogen tune-buckets --config X.yaml``: batch sizes per bucket measured on this device.

For each bucket of the config's ``data`` table, real training steps of the config's model (through
a Lightning Trainer, the config's precision, one device) run on synthetic batches of that shape
with growing batch sizes (doubling, then a binary search), and the peak memory of each is measured:

- on CUDA: ``torch.cuda.max_memory_allocated`` over the step (weights, gradients, optimizer state,
  activations, temporaries: what the caching allocator handed out);
- on a CPU: a proxy, since the CPU allocator keeps no peak: the bytes of the tensors autograd saves
  for backward during the step (``torch.autograd.graph.saved_tensors_hooks``, each storage counted
  once, parameters excluded) plus the batch, the parameters, their gradients and the optimizer
  state. It leaves out temporaries and allocator overhead, so keep a headroom.

The largest batch size whose peak stays within the budget (``--memory-gb``, default 90% of the
GPU's memory) is written per bucket into a config fragment to merge after the original:

    videogen tune-buckets --config configs/dit/base_256p.yaml --out configs/dit/tuned_a100_40g.yaml
    videogen fit --config configs/dit/base_256p.yaml --config configs/dit/tuned_a100_40g.yaml

A bucket that does not fit even one clip is left out of the table (said in the file and printed).
Steps run on pixel batches (a latent-cache DiT run needs less: the VAE encode is not in it).
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

HELP = "measure peak memory per bucket on this device and write per-bucket batch sizes into a config"
TAKES_OVERRIDES = True

log = logging.getLogger("videogen")
GB = 1024**3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", required=True, help="training config(s), merged in order")
    parser.add_argument("--out", default=None, help="the config fragment to write (default: <config>.tuned.yaml)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="memory budget per device in GiB (default: 90%% of the GPU's; required on a CPU)")
    parser.add_argument("--max-batch", type=int, default=256, help="largest batch size tried (default 256)")
    parser.add_argument("--accelerator", default=None, help="cpu or gpu (default: the config's)")
    parser.epilog = "Any other --key=value overrides the config, e.g. --model.init_args.dit.init_args.depth=2."


# ---- measuring -----------------------------------------------------------------------------------


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


def measure(module, bucket, batch_size: int, accelerator: str, precision: Any) -> int | None:
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
            report[b] = measure(module, bucket, b, accelerator, precision)
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


# ---- the command ---------------------------------------------------------------------------------


def default_budget(accelerator: str) -> int:
    import torch

    if accelerator in ("gpu", "cuda"):
        return int(0.9 * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    raise SystemExit("videogen tune-buckets: on a CPU give the memory budget per process with --memory-gb")


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


def run(args: argparse.Namespace) -> int:
    import torch

    from videogen.cli import lightning_cli

    bad = [o for o in args.overrides if not o.startswith("--")]
    if bad:
        raise SystemExit(f"videogen tune-buckets: unexpected argument {bad[0]!r}")
    if args.max_batch < 1:
        raise SystemExit("videogen tune-buckets: --max-batch must be >= 1")
    cli_args = []
    for c in args.config:
        if not Path(c).is_file():
            raise SystemExit(f"videogen tune-buckets: --config {c}: no such file")
        cli_args += ["--config", c]
    one_device = ["--trainer.logger=false", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto"]
    if args.accelerator:
        one_device.append(f"--trainer.accelerator={args.accelerator}")
    cli = lightning_cli(cli_args + list(args.overrides) + one_device, run=False)
    module, dm = cli.model, cli.datamodule
    bucketer = getattr(dm, "bucketer", None)
    if bucketer is None or bucketer.packing or not bucketer.buckets:
        raise SystemExit("videogen tune-buckets: the config's data has no bucket table to tune (packing mode is "
                         "sized by data.init_args.bucketer.token_budget: lower it until a step fits)")
    accelerator = "gpu" if cli.trainer.accelerator.__class__.__name__ == "CUDAAccelerator" else "cpu"
    precision = cli.trainer.precision
    if accelerator == "gpu":
        device, method = torch.cuda.get_device_name(), "torch.cuda.max_memory_allocated"
    else:
        device = f"cpu ({os.cpu_count()} cores)"
        method = "CPU proxy: autograd saved-tensor bytes + batch + weights, gradients, optimizer state"
    budget = int(args.memory_gb * GB) if args.memory_gb else default_budget(accelerator)
    tuned, dropped, peaks = [], [], {}
    print(f"tuning {len(bucketer.buckets)} buckets on {device}, budget {budget / GB:.3f} GiB ({method})")
    print(f"{'bucket':<16}{'batch':>7}{'peak GiB':>12}{'tried':>8}")
    for bucket in bucketer.buckets:
        report: dict[int, int | None] = {}
        best = tune_bucket(module, bucket, budget, args.max_batch, accelerator, precision, report)
        if best == 0:
            dropped.append(bucket.name)
            print(f"{bucket.name:<16}{'-':>7}{'> budget':>12}{len(report):>8}   (left out: one clip does not fit)")
            continue
        tuned.append(replace(bucket, batch_size=best))
        peaks[bucket.name] = report[best]
        print(f"{bucket.name:<16}{best:>7}{report[best] / GB:>12.4f}{len(report):>8}")
    if not tuned:
        raise SystemExit(f"videogen tune-buckets: no bucket fits {budget / GB:.3f} GiB even with one clip; "
                         "raise --memory-gb, or shrink the model or the buckets")
    out = Path(args.out) if args.out else Path(args.config[-1]).with_suffix(".tuned.yaml")
    data_class = f"{type(dm).__module__}.{type(dm).__qualname__}"
    write_fragment(out, data_class, tuned, dropped, device, method, budget, args.config, peaks)
    print(f"wrote {out}")
    return 0
