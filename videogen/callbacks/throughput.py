"""``Throughput``: clips/s, tokens/s and MFU, overall and per bucket, from the real step times.

Every training iteration is timed from the end of the previous batch to the end of this one (data
wait included; validation and checkpoint time between them excluded) and charged to the batch's
bucket. Every ``trainer.log_every_n_steps`` steps rank 0 logs, for that window and for this device:

- ``throughput/clips_per_s``, ``throughput/frames_per_s``, ``throughput/megapixels_per_s``;
- ``throughput/tokens_per_s`` when the stage has tokens (the DiT: latent patches per clip, from
  the VAE's compression and the DiT's patch size);
- ``throughput/tflops_per_s`` and ``throughput/mfu`` (= achieved / peak FLOP/s): the DiT's
  analytic ``DiT.forward_flops`` x 3 (forward + backward; recompute of activation checkpointing
  is not counted, as MFU conventionally does not), other stages' FLOPs counted once per bucket by
  ``torch.utils.flop_counter.FlopCounterMode`` on that bucket's first step; the peak is
  ``peak_flops`` or, on CUDA, Lightning's table for the device and precision (no MFU on a CPU
  unless ``peak_flops`` is given);
- ``throughput/data_wait``: the share of the window spent waiting for batches;
- the same per bucket: ``throughput/<bucket>/{clips_per_s,tokens_per_s,step_s,mfu}``.

Rates are per device; the run's total is ``world_size`` times as much.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import torch
from lightning.pytorch import Callback

log = logging.getLogger("videogen")

_PRECISION_DTYPES = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "16-mixed": torch.float16,
                     "16-true": torch.float16}


def clip_shapes(batch: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(frames, height, width) of each clip of a batch (bucket tensor or packed list; pixels or latents)."""
    x = batch.get("video", batch.get("latent"))
    if isinstance(x, torch.Tensor):
        return [tuple(x.shape[2:])] * x.shape[0]
    return [tuple(v.shape[1:]) for v in x]


def dit_tokens(pl_module, batch: dict[str, Any]) -> list[int] | None:
    """Latent tokens per clip when the module trains a DiT on a VAE's latents, else None."""
    dit = getattr(pl_module, "dit", None)
    if dit is None or not hasattr(dit, "forward_flops"):
        return None
    grid = pl_module.latent_grid  # the DiT stage's: a stage without one fails here, not silently without MFU
    count = grid.tokens if "video" in batch else grid.latent_tokens  # pixels go through the causal latent grid
    return [count(*shape) for shape in clip_shapes(batch)]


class Throughput(Callback):
    """
    Args:
        peak_flops: peak FLOP/s of one device for MFU; None: Lightning's table on CUDA, no MFU on CPU.
        count_flops: count FLOPs of stages without an analytic count (first step of each bucket).
        synchronize: wait for the GPU at each step end so step times are exact (CUDA only).
    """

    def __init__(self, peak_flops: float | None = None, count_flops: bool = True, synchronize: bool = True):
        self.peak_flops, self.count_flops, self.synchronize = peak_flops, count_flops, synchronize
        self.flops_per_bucket: dict[str, float] = {}  # counted FLOPs per clip of a bucket (non-DiT stages)
        self.last: dict[str, float] = {}  # the metrics of the last window (also for tests)
        self._window: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._prev_end: float | None = None
        self._start = 0.0
        self._counter = None
        self._peak: float | None = None

    # ---- setup ---------------------------------------------------------------------------------

    def on_train_start(self, trainer, pl_module) -> None:
        self._peak = self.peak_flops
        if self._peak is None and pl_module.device.type == "cuda":
            from lightning.fabric.utilities.throughput import get_available_flops

            dtype = _PRECISION_DTYPES.get(str(trainer.precision), torch.float32)
            self._peak = get_available_flops(pl_module.device, dtype)
        self._prev_end = None

    def on_validation_end(self, trainer, pl_module) -> None:
        self._prev_end = None  # validation time is not a training step's

    # ---- per step ------------------------------------------------------------------------------

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        bucket = str(batch.get("bucket", "packed"))
        if (self.count_flops and bucket not in self.flops_per_bucket and dit_tokens(pl_module, batch) is None):
            from torch.utils.flop_counter import FlopCounterMode

            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.synchronize and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        end = time.perf_counter()
        shapes = clip_shapes(batch)
        bucket = str(batch.get("bucket", "packed"))
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops_per_bucket[bucket] = self._counter.get_total_flops() / max(1, len(shapes))
            self._counter = None
        tokens = dit_tokens(pl_module, batch)
        if tokens is not None:
            flops = 3.0 * pl_module.dit.forward_flops(tokens, pl_module.hparams.get("text_max_length", 0))
        else:
            flops = self.flops_per_bucket.get(bucket, 0.0) * len(shapes)
        wait = 0.0 if self._prev_end is None else max(0.0, self._start - self._prev_end)
        seconds = end - (self._start if self._prev_end is None else self._prev_end)
        self._prev_end = end
        for key in ("all", bucket):
            w = self._window[key]
            w["steps"] += 1
            w["seconds"] += seconds
            w["wait"] += wait
            w["clips"] += len(shapes)
            w["frames"] += sum(s[0] for s in shapes)
            w["pixels"] += sum(s[0] * s[1] * s[2] for s in shapes)
            w["tokens"] += sum(tokens) if tokens is not None else 0
            w["has_tokens"] = float(tokens is not None)
            w["flops"] += flops
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._flush(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._window["all"]["steps"]:
            self._flush(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._counter = None

    # ---- logging -------------------------------------------------------------------------------

    def _metrics(self, w: dict[str, float], prefix: str) -> dict[str, float]:
        s = max(w["seconds"], 1e-9)
        m = {f"{prefix}clips_per_s": w["clips"] / s, f"{prefix}step_s": w["seconds"] / max(1.0, w["steps"])}
        if w["has_tokens"]:
            m[f"{prefix}tokens_per_s"] = w["tokens"] / s
        if w["flops"] and self._peak:
            m[f"{prefix}mfu"] = w["flops"] / s / self._peak
        return m

    def _flush(self, trainer) -> None:
        window, self._window = self._window, defaultdict(lambda: defaultdict(float))
        total = window.pop("all")
        s = max(total["seconds"], 1e-9)
        metrics = self._metrics(total, "throughput/")
        metrics.update({"throughput/frames_per_s": total["frames"] / s,
                        "throughput/megapixels_per_s": total["pixels"] / s / 1e6,
                        "throughput/data_wait": total["wait"] / s})
        if total["flops"]:
            metrics["throughput/tflops_per_s"] = total["flops"] / s / 1e12
        for bucket, w in window.items():
            metrics.update(self._metrics(w, f"throughput/{bucket}/"))
        self.last = metrics
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
