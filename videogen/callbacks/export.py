"""``StageExport``: write the stage's export folder at the end of a fit (see videogen/pretrained.py)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from lightning.pytorch import Callback

from videogen.pretrained import module_from_state, save_export

log = logging.getLogger("videogen")


class StageExport(Callback):
    """At the end of ``fit``, write ``dirpath`` from the weights the strategy saves in a checkpoint and
    the module's checkpoint record (``on_save_checkpoint``'s ``checkpoint["videogen"]``: config, stats,
    prefix of the weights to export), exactly as ``videogen export`` does from a checkpoint file.

    Every rank takes part in gathering the weights (under FSDP each rank holds a shard, so gathering
    is a collective); rank 0 writes the folder.

    A module with ``measure_latent_stats`` (the VAE) whose export-weight statistics are older than
    the final weights (no validation at the last step) has them measured again here, with the
    exported weights on up to ``stats_batches`` validation batches, before the folder is written.

    Args:
        dirpath: the export folder; default ``<trainer.default_root_dir>/export``.
        stats_batches: validation batches the fit-end measurement of latent statistics reads.
        merge_lora: a DiT finetuned with LoRA (a diffusers transformer with ``lora_rank``) is exported
            with its adapters folded into the base weights (a whole finetuned model); default: the
            adapters only, also as ``pytorch_lora_weights.safetensors`` for diffusers' ``load_lora_weights``.
    """

    def __init__(self, dirpath: str | None = None, stats_batches: int = 16, merge_lora: bool = False):
        self.dirpath = dirpath
        self.stats_batches = stats_batches
        self.merge_lora = merge_lora

    def on_fit_end(self, trainer, pl_module) -> None:
        state = trainer.strategy.lightning_module_state_dict()  # whole weights (on rank 0 under FSDP)
        if not trainer.is_global_zero:
            return
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "export")
        if hasattr(pl_module, "measure_latent_stats") and not pl_module.stats_are_current:
            loader = self._val_loader(trainer)
            if loader is not None:
                pl_module.measure_latent_stats(itertools.islice(iter(loader), self.stats_batches))
                log.info("measured the latent statistics with the exported weights on %d clips",
                         int(pl_module.export_clips))
        record: dict = {}
        pl_module.on_save_checkpoint(record)
        info = record["videogen"]
        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") or getattr(
            trainer.checkpoint_callback, "last_model_path", "")
        module = module_from_state(info, state)
        if self.merge_lora and hasattr(module, "merge_lora"):
            module.merge_lora()
        save_export(folder, module, info["stats"],
                    inputs={"stage": info["stage"], "global_step": trainer.global_step, "checkpoint": ckpt or None})
        log.info("exported the %s stage to %s", info["stage"], folder)

    @staticmethod
    def _val_loader(trainer):
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "val_dataloader"):
            return None
        try:
            return dm.val_dataloader()
        except Exception as e:  # a datamodule without validation data
            log.info("StageExport: no validation data for the latent statistics (%s)", str(e).splitlines()[0][:200])
            return None
