"""``Progress``: steps done of ``max_steps``, the pace and the time left, printed every N steps.

A quickstart stage trains a fixed number of steps (``trainer.max_steps``), so its result is the same
on a fast and a slow machine; this callback says how long that takes on this one. Every
``every_n_steps`` optimizer steps rank 0 prints one line (through the progress bar when there is one)

    [progress] vae: step 500/3000 (16.7%), 212.4 steps/min, 11:46 left (done at 02:31 UTC)

and logs ``progress/steps_per_min`` and ``progress/minutes_left`` to the loggers. The pace is the
steps done since this fit (or resume) started over the wall-clock time since then, so validation and
checkpoint time are in it as they are in the time left. When the trainer has a ``max_time`` (Lightning's
``Timer``) that the pace says would end the run before ``max_steps``, the line says at which step:
a run cut short by its clock learns less than its step budget promises. At the end: the steps done,
the time they took, and a warning when the run stopped before ``max_steps``.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Timer


@dataclass(frozen=True)
class Pace:
    step: int
    max_steps: int | None  # None: no step budget (an epoch-bounded run)
    steps_per_min: float | None  # None until a step was timed
    seconds_left: float | None  # None without a budget or a pace


def measure_pace(step: int, max_steps: int | None, start_step: int, elapsed: float) -> Pace:
    """The pace over the ``step - start_step`` steps taken in ``elapsed`` seconds, and the time the
    steps left to ``max_steps`` take at that pace."""
    done = step - start_step
    rate = done / elapsed * 60 if done > 0 and elapsed > 0 else None
    left = None
    if rate and max_steps:
        left = max(0, max_steps - step) / rate * 60
    return Pace(step, max_steps, rate, left)


def steps_before_cap(pace: Pace, cap_seconds_left: float) -> int | None:
    """The step at which a clock with ``cap_seconds_left`` seconds left stops the run at this pace, or
    None when the run reaches ``max_steps`` first (or there is no pace yet)."""
    if pace.steps_per_min is None or pace.seconds_left is None or cap_seconds_left >= pace.seconds_left:
        return None
    return pace.step + int(cap_seconds_left / 60 * pace.steps_per_min)


def format_duration(seconds: float) -> str:
    """``11:46`` (minutes:seconds) or ``1:02:03`` (hours:minutes:seconds)."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def format_pace(name: str, pace: Pace, now: float, cap_step: int | None = None) -> str:
    """The printed line; ``now`` is the wall clock (seconds since the epoch) the finish time is counted from."""
    where = f"step {pace.step}/{pace.max_steps} ({100 * pace.step / pace.max_steps:.1f}%)" if pace.max_steps \
        else f"step {pace.step}"
    line = f"[progress] {name}: {where}"
    if pace.steps_per_min is not None:
        line += f", {pace.steps_per_min:.1f} steps/min"
    if pace.seconds_left is not None:
        done = datetime.datetime.fromtimestamp(now + pace.seconds_left, datetime.timezone.utc)
        line += f", {format_duration(pace.seconds_left)} left (done at {done:%H:%M} UTC)"
    if cap_step is not None:
        line += (f"; at this pace trainer.max_time stops it at about step {cap_step}, short of its budget: "
                 "the figures will fall short (raise trainer.max_time, or free the machine)")
    return line


class Progress(Callback):
    """
    Args:
        every_n_steps: print (and log) every this many optimizer steps.
        name: what the line calls the run; default the LightningModule's class name.
    """

    def __init__(self, every_n_steps: int = 100, name: str | None = None):
        if every_n_steps < 1:
            raise ValueError(f"Progress: every_n_steps={every_n_steps}: must be at least 1")
        self.every_n_steps, self.name = every_n_steps, name
        self.clock = time.monotonic  # elapsed time (tests put a fake clock here)
        self.wall = time.time  # the finish time's origin
        self.last: Pace | None = None  # the last pace printed (also for tests)
        self.lines: list[str] = []  # every line printed (also for tests)
        self._t0, self._step0, self._printed = 0.0, 0, -1

    def _budget(self, trainer) -> int | None:
        return trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None

    def _cap_left(self, trainer) -> float | None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        return None if timer is None else timer.time_remaining("train")

    def _say(self, trainer, pl_module, line: str) -> None:
        self.lines.append(line)
        pl_module.print(line, flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self.name = self.name or type(pl_module).__name__
        self._t0, self._step0 = self.clock(), trainer.global_step
        self._printed = trainer.global_step
        if trainer.is_global_zero:
            budget = self._budget(trainer)
            start = f" from step {trainer.global_step}" if trainer.global_step else ""
            self._say(trainer, pl_module, f"[progress] {self.name}: training {budget or 'an unbounded number of'} "
                                          f"steps{start}; the pace and time left every {self.every_n_steps} steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._printed or step % self.every_n_steps:
            return
        self._printed = step
        pace = measure_pace(step, self._budget(trainer), self._step0, self.clock() - self._t0)
        self.last = pace
        if not trainer.is_global_zero:
            return
        cap = self._cap_left(trainer)
        cap_step = steps_before_cap(pace, cap) if cap is not None else None
        self._say(trainer, pl_module, format_pace(self.name, pace, self.wall(), cap_step))
        metrics = {}
        if pace.steps_per_min is not None:
            metrics["progress/steps_per_min"] = pace.steps_per_min
        if pace.seconds_left is not None:
            metrics["progress/minutes_left"] = pace.seconds_left / 60
        for logger in trainer.loggers if metrics else []:
            logger.log_metrics(metrics, step=step)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        step, budget = trainer.global_step, self._budget(trainer)
        elapsed = self.clock() - self._t0
        pace = measure_pace(step, budget, self._step0, elapsed)
        rate = f" ({pace.steps_per_min:.1f} steps/min)" if pace.steps_per_min is not None else ""
        self._say(trainer, pl_module, f"[progress] {self.name}: trained to step {step}"
                                      f"{f'/{budget}' if budget else ''} in {format_duration(elapsed)}{rate}")
        if budget and step < budget:
            cap = self._cap_left(trainer)
            why = ": trainer.max_time ran out" if cap is not None and cap <= 0 else ""
            self._say(trainer, pl_module, f"[progress] WARNING {self.name}: stopped at step {step} of its budget of "
                                          f"{budget}{why}; a run cut short learns less than its config promises "
                                          "(raise trainer.max_time, or give the run the machine to itself)")
