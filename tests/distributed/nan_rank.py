"""``NaNOnRank``: a test callback that makes one rank's input NaN at chosen batches (counted by
batches seen, since a skipped manual step does not advance ``global_step``) and writes what every
rank did after each batch to ``<out>/nan-rank<R>.json``: the guard's skip count, its run of bad
steps, a hash of the trainable weights, and the error that stopped the run, if one did.

``NaNLossOnRank`` (listed before the guard) instead makes one rank's reported loss NaN after a step
whose gradients were finite, as when a module drops its own gradients: the guard's last check."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import Callback

from recorder import weights_hash


def _guard(trainer, pl_module):
    from videogen.callbacks.guards import NumericGuard

    if not pl_module.automatic_optimization:
        return pl_module.guard  # the VAE guards its own manual steps
    return next(cb.guard for cb in trainer.callbacks if isinstance(cb, NumericGuard))


class NaNOnRank(Callback):
    def __init__(self, out: str, rank: int = 1, batches: list[int] | None = None):
        self.out, self.rank, self.batches = Path(out), rank, set(batches or [])
        self.seen, self.rows, self.error = 0, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and self.seen in self.batches:
            batch["video"].mul_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        guard = _guard(trainer, pl_module)
        self.rows.append({"batch": self.seen, "step": trainer.global_step, "bad_steps": guard.bad_steps,
                          "in_a_row": guard.in_a_row, "weights": weights_hash(pl_module)})
        self.seen += 1
        self._write(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.error = f"{type(exception).__name__}: {exception}"
        self._write(trainer)

    def _write(self, trainer) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"nan-rank{trainer.global_rank}.json").write_text(
            json.dumps({"rows": self.rows, "error": self.error, "poisoned_rank": self.rank,
                        "batches_seen": self.seen, "torch": torch.__version__}))


class NaNLossOnRank(Callback):
    def __init__(self, rank: int = 1, batches: list[int] | None = None):
        self.rank, self.batches, self.seen = rank, set(batches or []), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and self.seen in self.batches:
            outputs["loss"] = outputs["loss"] * float("nan")
        self.seen += 1
