"""``StageExport``: write the stage's export folder at the end of a fit (see videogen/pretrained.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback

from videogen.pretrained import save_export

log = logging.getLogger("videogen")


class StageExport(Callback):
    """At the end of ``fit`` (rank 0 only), write ``dirpath`` from the module's ``export_module()``
    and the ``stats`` of its checkpoint record (``on_save_checkpoint``'s ``checkpoint["videogen"]``).

    Args:
        dirpath: the export folder; default ``<trainer.default_root_dir>/export``.
    """

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "export")
        record: dict = {}
        pl_module.on_save_checkpoint(record)
        info = record["videogen"]
        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or getattr(
            trainer.checkpoint_callback, "last_model_path", "")
        save_export(folder, pl_module.export_module(), info["stats"],
                    inputs={"stage": info["stage"], "global_step": trainer.global_step, "checkpoint": ckpt or None})
        log.info("exported the %s stage to %s", info["stage"], folder)
