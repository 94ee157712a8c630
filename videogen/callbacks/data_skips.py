"""``DataSkips``: the training stream's skipped samples, by reason, in the logged metrics.

The stream skips bad samples (corrupt media, broken json, unsafe members, truncated shards, ...)
and counts them by reason (``videogen/data/stages.py``). This callback logs the epoch's counts as
``data/skipped/<reason>`` after every training batch, and one summary line per epoch
(``epoch N: skipped K samples in training (reason=n, ...)``), so they show up in TensorBoard/W&B
and in the run's log even when Lightning stops an epoch before the loader's own summary.
"""

from __future__ import annotations

import logging

from lightning.pytorch import Callback

log = logging.getLogger("videogen.data")


class DataSkips(Callback):
    def _counts(self, trainer) -> dict[str, int]:
        loader = trainer.train_dataloader
        skipped = getattr(loader, "skipped", None)
        return dict(skipped) if skipped else {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for reason, n in self._counts(trainer).items():
            pl_module.log(f"data/skipped/{reason}", float(n), on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        counts = self._counts(trainer)
        if counts and trainer.is_global_zero:
            log.warning("epoch %d: skipped %d samples in training (%s)", trainer.current_epoch, sum(counts.values()),
                        ", ".join(f"{k}={n}" for k, n in sorted(counts.items())))
