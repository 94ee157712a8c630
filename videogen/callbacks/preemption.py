"""``Preemption``: SIGTERM and SLURM's requeue signal save a checkpoint at the next batch boundary.

Lightning's own handlers work inside the signal handler: on SLURM's requeue signal (SIGUSR1) it
saves the HPC checkpoint right there (a barrier among the ranks), and on SIGTERM it broadcasts. A
signal reaches the ranks at different moments, so one rank's barrier can meet another rank's
gradient all-reduce and the job hangs (Lightning-AI/pytorch-lightning#21406); a plain SIGTERM
(``docker stop``) ends the run with no checkpoint at all. This callback replaces both handlers for
the training loop. A handler only notes the signal; after every training batch the ranks agree on
what any of them received (one tiny ``all_gather``), and then all ranks, at the same batch:

* save ``<default_root_dir>/hpc_ckpt_<N>.ckpt`` (Lightning's HPC name: a SLURM rerun and
  ``--ckpt_path=hpc`` resume from the newest) and delete all but the newest ``keep`` of them;
* on the requeue signal (SLURM with ``auto_requeue``): rank 0 runs ``scontrol requeue $SLURM_JOB_ID``
  and the run ends (exit status 0); if the requeue fails it is logged and training goes on;
* on SIGTERM: the run ends with exit status 143 (128 + SIGTERM) after the save.

A signal that arrives during validation waits for it to end. Every stage adds this callback
(``videogen.callbacks.guards.reliability_callbacks``); see docs/cluster.md and docker/README.md.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import torch
from lightning.pytorch import Callback

log = logging.getLogger("videogen")

NONE, TERM, REQUEUE = 0, 1, 2
HPC_NAME = re.compile(r"hpc_ckpt_(\d+)\.ckpt$")


def hpc_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """``hpc_ckpt_<N>.ckpt`` files in ``folder``, oldest (lowest N) first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("hpc_ckpt_*.ckpt") if (m := HPC_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_hpc_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` HPC checkpoints of ``folder``; returns what was deleted."""
    old = hpc_checkpoints(folder)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


class Preemption(Callback):
    def __init__(self, keep: int = 2):
        """
        Args:
            keep: HPC checkpoints kept in the run's folder (the newest ones; >= 1).
        """
        if keep < 1:
            raise ValueError(f"Preemption keep must be >= 1, got {keep}")
        self.keep = keep
        self.received = NONE

    # ---- handlers: note the signal, nothing else --------------------------------------------------

    def _requeue_signal(self, trainer) -> int | None:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = getattr(trainer._accelerator_connector, "cluster_environment", None)
        if isinstance(env, SLURMEnvironment) and env.auto_requeue:
            return int(env.requeue_signal or signal.SIGUSR1)
        return None

    def _note(self, signum, frame) -> None:
        self.received = max(self.received, REQUEUE if signum != signal.SIGTERM else TERM)

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread() or os.name == "nt":
            return
        self.received = NONE
        signals = [signal.SIGTERM]
        requeue = self._requeue_signal(trainer)
        if requeue is not None:
            signals.append(requeue)
        for signum in signals:  # over Lightning's (its teardown restores what was there before fit)
            signal.signal(signum, self._note)

    # ---- the decision, at a batch boundary, together ------------------------------------------------

    def _agreed(self, trainer) -> int:
        if trainer.world_size <= 1:
            return self.received
        flags = trainer.strategy.all_gather(torch.tensor([self.received], device=trainer.strategy.root_device))
        return int(flags.max())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        what = self._agreed(trainer)
        if what == NONE:
            return
        root = trainer.default_root_dir
        path = trainer.strategy.broadcast(trainer._checkpoint_connector.hpc_save_path(root), src=0)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            for old in prune_hpc_checkpoints(root, self.keep):
                log.info("deleted the older HPC checkpoint %s", old)
        reason = "SLURM's requeue signal" if what == REQUEUE else "SIGTERM"
        log.warning("%s at step %d: saved %s", reason, trainer.global_step, path)
        if what == REQUEUE:
            requeued = trainer.strategy.broadcast(self._requeue() if trainer.is_global_zero else False, src=0)
            if not requeued:
                self.received = NONE  # train on; the time limit's SIGTERM will save again
                return
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        raise SIGTERMException(0 if what == REQUEUE else 128 + signal.SIGTERM)

    def _requeue(self) -> bool:
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID", "")
        if not re.fullmatch(r"[0-9_]+", job):
            log.error("cannot requeue: SLURM_JOB_ID=%r is not a job id", job)
            return False
        try:
            proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("scontrol requeue %s failed (%s): training goes on until the time limit", job, e)
            return False
        if proc.returncode != 0:
            log.error("scontrol requeue %s failed (%d: %s): training goes on until the time limit", job,
                      proc.returncode, proc.stderr.strip())
            return False
        log.warning("requeued SLURM job %s; the rerun resumes from the newest HPC checkpoint", job)
        return True
