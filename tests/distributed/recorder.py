"""``RankRecorder``: a test callback that writes what one rank did to ``<out>/rank<R>-run<N>.json``.

Used by the multi-process tests (DDP, FSDP, SLURM) through the real ``videogen fit`` CLI: each rank
records the sample keys of every batch (with its epoch), its loss per step, where it ran (hostname,
SLURM node), the global step it started from (a resumed run starts at the checkpoint's step), a
hash of its trainable weights at the end and, for a DiT, which validation prompts it sampled and the
videos it got back from ``sample_across_ranks``, so a test can compare ranks with each other.
``progress`` files let a test wait for a given step, and ``rank<R>-progress.json`` (the step this run
started from and its last finished step, rewritten after every batch) says where a run that never
reached its end stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import torch
from lightning.pytorch import Callback


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(module.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def video_sums(videos: torch.Tensor) -> list[float]:
    """One number per video (B, ...): enough to tell which rank's video ended up where."""
    return [float(v.double().sum()) for v in videos.detach().cpu()]


class RankRecorder(Callback):
    def __init__(self, out: str, save_weights: bool = False):
        self.out, self.save_weights = Path(out), save_weights
        self.record: dict = {}

    def _path(self, trainer) -> Path:
        run = os.environ.get("SLURM_RESTART_COUNT", "0")
        return self.out / f"rank{trainer.global_rank}-run{run}.json"

    def on_fit_start(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.record = {
            "rank": trainer.global_rank, "world_size": trainer.world_size, "hostname": socket.gethostname(),
            "slurm_nodeid": os.environ.get("SLURM_NODEID"), "slurm_nodename": os.environ.get("SLURMD_NODENAME"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
            "environment": type(getattr(trainer.strategy, "cluster_environment", None)).__name__,
            "strategy": type(trainer.strategy).__name__, "pid": os.getpid(),
            "weights_at_start": weights_hash(pl_module), "batches": [], "losses": []}
        if hasattr(pl_module, "sample_across_ranks"):  # wrap the DiT's sampling to record it (instance attributes)
            sample, across = pl_module.sample, pl_module.sample_across_ranks

            def recorded_sample(prompts, *args, **kw):
                videos = sample(prompts, *args, **kw)
                self.record.setdefault("sampled", []).append({"prompts": list(prompts), "sums": video_sums(videos)})
                return videos

            def recorded_across(prompts):
                videos = across(prompts)
                self.record.setdefault("gathered", []).append(video_sums(videos))
                return videos

            pl_module.sample, pl_module.sample_across_ranks = recorded_sample, recorded_across

    def on_train_start(self, trainer, pl_module) -> None:  # after a checkpoint was restored
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
        from torch.distributed.fsdp import FullyShardedDataParallel

        modules = list(trainer.strategy.model.modules())
        self.record["fsdp_units"] = sum(isinstance(m, FullyShardedDataParallel) for m in modules)
        self.record["checkpoint_wrappers"] = sum(isinstance(m, CheckpointWrapper) for m in modules)
        self.record["start_step"] = trainer.global_step
        self.record["ckpt_path"] = str(trainer.ckpt_path) if trainer.ckpt_path else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.record["batches"].append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                                       "keys": list(batch["key"])})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        self.record["losses"].append(None if loss is None else float(loss))
        (self.out / f"progress-rank{trainer.global_rank}").write_text(str(trainer.global_step))
        if not int(os.environ.get("SLURM_RESTART_COUNT", "0")):
            (self.out / f"rank{trainer.global_rank}-progress.json").write_text(
                json.dumps({"start_step": self.record["start_step"], "last_step": trainer.global_step}))

    def on_train_end(self, trainer, pl_module) -> None:
        self.record.update(end_step=trainer.global_step, weights_at_end=weights_hash(pl_module),
                           epochs=trainer.current_epoch)
        self._path(trainer).write_text(json.dumps(self.record))
        if self.save_weights:  # the full (unsharded) weights as the strategy saves them; a collective under FSDP
            state = trainer.strategy.lightning_module_state_dict()
            if trainer.is_global_zero:
                names = {n for n, _ in pl_module.named_parameters()} | {
                    n.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
                    for n, _ in pl_module.named_parameters()}
                torch.save({k: v.detach().float().cpu() for k, v in state.items() if k in names},
                           self.out / "weights-rank0.pt")
