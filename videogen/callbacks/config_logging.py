"""``LoggedConfig``: the resolved run config goes to every logger, not only to ``config.yaml``.

LightningCLI's ``SaveConfigCallback`` writes the fully resolved config (every default filled in)
beside the logs; this subclass also hands it to each logger's ``log_hyperparams`` under ``config``
(W&B: the run's config panel; TensorBoard: the HPARAMS tab; CSV: ``hparams.yaml``), so a run on a
dashboard carries exactly what reproduces it. Runs on rank 0 only (the parent class decides).
"""

from __future__ import annotations

import logging

import yaml
from lightning.pytorch.cli import SaveConfigCallback

log = logging.getLogger("videogen")


class LoggedConfig(SaveConfigCallback):
    def save_config(self, trainer, pl_module, stage: str) -> None:
        if not trainer.loggers:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            try:
                logger.log_hyperparams({"config": config})
            except Exception as e:  # a logger refusing the config must not stop training
                log.warning("could not log the run config to %s: %s", type(logger).__name__, e)
