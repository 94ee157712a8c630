"""``HangWatchdog``: when no training step finishes within ``timeout`` seconds, every thread's
Python stack of every rank is written out, so a stuck collective, a dataloader worker that never
answers or a deadlocked decode shows where it is, instead of a silent job burning its allocation.

Each rank arms Python's ``faulthandler.dump_traceback_later`` (a C watchdog thread: it fires even
when the main thread is blocked inside a C call holding the GIL, e.g. an NCCL/gloo wait) and re-arms
it after each training or validation batch. The stacks go to ``<dirpath>/watchdog-rank<R>.txt``
(default dirpath: ``<trainer.default_root_dir>/watchdog``); each rank logs that path when it arms.
The dump repeats every ``timeout`` while the hang lasts; with ``exit: true`` the process exits after
the first dump instead (so a scheduler's requeue can take over, or a hung job stops costing).
The first step (compilation, warm-up, first shards) gets ``first_timeout`` (default 3 x timeout).
Re-arming is skipped when the last one was less than min(1 s, timeout / 10) ago (it costs ~0.3 ms).
"""

from __future__ import annotations

import faulthandler
import logging
import time
from pathlib import Path

from lightning.pytorch import Callback

log = logging.getLogger("videogen")


class HangWatchdog(Callback):
    """
    Args:
        timeout: seconds without a finished step before the stacks are dumped.
        first_timeout: the same for the first step of a fit (default 3 x timeout).
        dirpath: where the per-rank dump files go (default ``<default_root_dir>/watchdog``).
        exit: exit the process after the first dump (exit status 1).
    """

    def __init__(self, timeout: float = 900.0, first_timeout: float | None = None, dirpath: str | None = None,
                 exit: bool = False):
        if timeout <= 0:
            raise ValueError(f"HangWatchdog timeout must be > 0 seconds, got {timeout}")
        self.timeout, self.first_timeout = timeout, first_timeout or 3 * timeout
        self.dirpath, self.exit = dirpath, exit
        self.path: Path | None = None
        self._file = None
        self._armed_at, self._armed_for = float("-inf"), None
        self._rearm_every = min(1.0, timeout / 10)  # re-arming costs ~0.3 ms: not more often than this

    def _arm(self, seconds: float, force: bool = True) -> None:
        now = time.monotonic()
        if not force and seconds == self._armed_for and now - self._armed_at < self._rearm_every:
            return  # armed moments ago: a hang is reported up to _rearm_every sooner than timeout
        faulthandler.dump_traceback_later(seconds, repeat=not self.exit, file=self._file, exit=self.exit)
        self._armed_at, self._armed_for = now, seconds

    def on_fit_start(self, trainer, pl_module) -> None:
        folder = Path(self.dirpath or Path(trainer.default_root_dir) / "watchdog")
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"watchdog-rank{trainer.global_rank}.txt"
        self._file = open(self.path, "a", buffering=1)
        self._file.write(f"# rank {trainer.global_rank}: stacks dumped when no step finishes in {self.timeout:g} s\n")
        log.info("hang watchdog: rank %d dumps its stacks to %s after %g s without a step", trainer.global_rank,
                 self.path, self.timeout)
        self._arm(self.first_timeout)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._arm(self.timeout, force=False)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._arm(self.timeout, force=False)

    def on_validation_start(self, trainer, pl_module) -> None:  # validation sampling may start slowly
        self._arm(self.first_timeout)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._arm(self.timeout)

    def _disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_fit_end(self, trainer, pl_module) -> None:
        self._disarm()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._disarm()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._disarm()
