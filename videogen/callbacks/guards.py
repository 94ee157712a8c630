"""Numerical faults in training steps, one mechanism for every stage.

:class:`StepGuard` decides what a step that went wrong does: a NaN/Inf loss or gradient skips the
update and is counted (``train/bad_steps``); ``max_bad_steps`` of them in a row stop the run with a
``FloatingPointError`` (the last checkpoint is then from before the fault, since skipped steps
change no weight); a loss far above its running mean (``spike_sigmas`` running standard deviations,
after ``spike_warmup`` good steps) is logged as ``train/loss_spike`` = 1 and a warning. Its counters
are saved in checkpoints, so a resumed run goes on counting where it stopped.

Where it is called:

* manual optimisation (``VAEModule``): the module asks its own ``StepGuard`` before each update;
* automatic optimisation (``DiTModule``, any other stage): the :class:`NumericGuard` callback checks
  the gradients right before ``optimizer.step`` (a NaN/Inf loss makes them non-finite too), drops
  them so the step leaves the weights alone, and logs spikes after the batch. Modules add it with
  ``configure_callbacks`` -> :func:`reliability_callbacks` (only to a stage that optimises
  automatically: a manual loop guards itself).

Under DDP/FSDP every decision is collective (:func:`bad_ranks`, one ``all_gather`` of a flag): a
step that is non-finite on any rank is skipped on every rank, the counters move together, and
``max_bad_steps`` stops every rank at the same step with the same message (naming the ranks that
saw the fault), so no rank is left waiting in a collective for one that stopped.

:class:`OOMAdvice`, added to every stage, turns an out-of-memory error in any step into one that names
the settings to change (batch size, token budget, activation checkpointing, precision).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, Iterable

import torch
from lightning.pytorch import Callback

from videogen.errors import ConfigError

log = logging.getLogger("videogen.guard")

OOM_ADVICE = (
    "videogen: out of memory in a training step. Lower the memory a step needs: data.init_args.bucketer.batch_size "
    "(or a bucket's batch_size), data.init_args.bucketer.token_budget (packing / token-budget buckets), smaller buckets "
    "(frames x height x width), activation checkpointing (model.init_args.activation_checkpointing for the DiT / the "
    "strategy's activation_checkpointing_policy under FSDP), trainer.precision=bf16-mixed, or more devices with FSDP "
    "(trainer.strategy=fsdp).")


def nonfinite_gradients(parameters: Iterable[torch.nn.Parameter]) -> bool:
    """True when any gradient holds a NaN or Inf (one fused check per device)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return False
    norms = torch._foreach_norm(grads, ord=math.inf) if hasattr(torch, "_foreach_norm") else [g.abs().max() for g in grads]
    return not bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


class StepGuard:
    def __init__(self, max_bad_steps: int = 20, spike_sigmas: float = 6.0, spike_warmup: int = 20,
                 spike_momentum: float = 0.02):
        """
        Args:
            max_bad_steps: non-finite steps in a row that stop the run (>= 1).
            spike_sigmas: a loss above mean + spike_sigmas * std (running) is a spike.
            spike_warmup: good steps measured before spikes are reported.
            spike_momentum: weight of each new loss in the running mean and variance.
        """
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps, self.spike_sigmas = max_bad_steps, spike_sigmas
        self.spike_warmup, self.spike_momentum = spike_warmup, spike_momentum
        self.bad_steps = 0  # in all
        self.in_a_row = 0
        self.spikes = 0
        self.mean, self.var, self.seen = 0.0, 0.0, 0

    def skip(self, what: str, step: int, ranks: list[int] | None = None, world_size: int = 1) -> None:
        """Count a non-finite step (the caller leaves the weights alone); raise at max_bad_steps in a row.

        ``ranks`` are the ranks that saw it (from :func:`bad_ranks`, the same list on every rank), so
        every rank counts, and raises, with the same words."""
        self.bad_steps += 1
        self.in_a_row += 1
        where = f" on rank {', '.join(map(str, ranks))} of {world_size}" if ranks and world_size > 1 else ""
        log.warning("step %d: %s is not finite%s; update skipped (%d in a row, %d in all)", step, what, where,
                    self.in_a_row, self.bad_steps)
        if self.in_a_row >= self.max_bad_steps:
            raise FloatingPointError(
                f"{self.in_a_row} non-finite losses in a row (NaN/Inf loss or gradient; last: {what}{where} at step "
                f"{step}); the run stops here and "
                "its last checkpoint is from before the fault (skipped steps change no weight). Look for bad "
                "inputs, lower the learning rate (model.init_args.optimizer.init_args.lr), clip gradients harder, "
                "or train in fp32 (trainer.precision=32); max_bad_steps sets how many in a row are tolerated.")

    def check(self, loss: torch.Tensor | None, step: int, what: str = "loss",
              parameters: Iterable[torch.nn.Parameter] | None = None,
              ranks: Callable[[bool], list[int]] | None = None, world_size: int = 1) -> bool:
        """True (and counted) when ``loss`` or a gradient of ``parameters`` is NaN/Inf: skip the update.

        ``ranks`` (:func:`bad_ranks` bound to the trainer's strategy) makes the decision collective,
        so every rank skips together: one rank returning before a backward that the others run would
        hang DDP, and FSDP shards would drift apart.
        """
        gather = ranks or (lambda bad: [0] if bad else [])
        if loss is not None:
            bad_loss = not bool(torch.isfinite(loss.detach()).all())
            if bad_loss:
                log.warning("step %d: %s = %s", step, what, loss.detach().float().mean().item())
            where = gather(bad_loss)
            if where:
                self.skip(what, step, where, world_size)
                return True
        if parameters is not None:
            where = gather(nonfinite_gradients(parameters))
            if where:
                self.skip(f"the gradient of {what}", step, where, world_size)
                return True
        return False

    def passed(self, loss: float, step: int) -> bool:
        """A good step: reset the run of bad ones; True when ``loss`` is a spike (logged as a warning)."""
        self.in_a_row = 0
        spike = False
        if self.seen >= self.spike_warmup:
            std = math.sqrt(max(self.var, 0.0))
            spike = loss > self.mean + self.spike_sigmas * max(std, 1e-3 * abs(self.mean), 1e-12)
        if spike:
            self.spikes += 1
            log.warning("step %d: loss spike %.4g (running mean %.4g, std %.3g)", step, loss, self.mean, math.sqrt(self.var))
            return True  # a spike does not move the running statistics
        if self.seen == 0:
            self.mean, self.var = loss, 0.0
        else:
            m = self.spike_momentum
            delta = loss - self.mean
            self.mean += m * delta
            self.var = (1 - m) * (self.var + m * delta * delta)
        self.seen += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"bad_steps": self.bad_steps, "in_a_row": self.in_a_row, "spikes": self.spikes, "mean": self.mean,
                "var": self.var, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("bad_steps", "in_a_row", "spikes", "mean", "var", "seen"):
            if key in state:
                setattr(self, key, type(getattr(self, key))(state[key]))


def bad_ranks(strategy, bad: bool) -> list[int]:
    """The ranks where ``bad`` is true, the same list on every rank (a collective: call it on all).

    One ``all_gather`` of a one-element flag; a single process just returns ``[0]`` or ``[]``."""
    if strategy.world_size <= 1:
        return [0] if bad else []
    flags = strategy.all_gather(torch.tensor([int(bad)], device=strategy.root_device))  # (world, 1)
    return [r for r, flag in enumerate(flags.flatten().tolist()) if flag]


def with_oom_advice(exception: BaseException) -> bool:
    """Add the memory settings to an out-of-memory error's message (in place); True if it was one."""
    oom = isinstance(exception, torch.OutOfMemoryError) or (
        isinstance(exception, RuntimeError) and "out of memory" in str(exception).lower())
    if oom and OOM_ADVICE not in str(exception):
        first = exception.args[0] if exception.args else ""
        exception.args = (f"{first}\n{OOM_ADVICE}", *exception.args[1:])
    return oom


class OOMAdvice(Callback):
    """Out-of-memory errors in any stage re-raised with the settings to change (:data:`OOM_ADVICE`)."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if with_oom_advice(exception):
            log.error(OOM_ADVICE)


class NumericGuard(Callback):
    """:class:`StepGuard` for automatic optimisation (a manual loop, the VAE's, guards its own updates).

    Args: as :class:`StepGuard`.
    """

    def __init__(self, max_bad_steps: int = 20, spike_sigmas: float = 6.0, spike_warmup: int = 20,
                 spike_momentum: float = 0.02):
        self.guard = StepGuard(max_bad_steps, spike_sigmas, spike_warmup, spike_momentum)
        self._skipped = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not pl_module.automatic_optimization:
            raise ConfigError(f"trainer.callbacks: NumericGuard guards automatic optimisation, but "
                              f"{type(pl_module).__name__} optimises manually and guards its own updates (its "
                              "max_bad_steps): remove NumericGuard from trainer.callbacks")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._skipped = False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        ranks = functools.partial(bad_ranks, trainer.strategy)
        if self.guard.check(None, trainer.global_step, "the loss", params, ranks, trainer.world_size):
            for p in params:  # no gradient: the optimizer leaves every weight (and its moments) alone
                p.grad = None
            self._skipped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        spike = False
        if isinstance(loss, torch.Tensor) and not self._skipped:
            # a loss that is not finite although its gradients were (e.g. dropped by the module itself):
            # decided across ranks too, or one rank would count (and stop) alone
            finite = bool(torch.isfinite(loss.detach()).all())
            where = bad_ranks(trainer.strategy, not finite)
            if where:
                self.guard.skip("the loss", trainer.global_step, where, trainer.world_size)
            else:
                spike = self.guard.passed(float(loss.detach()), trainer.global_step)
        pl_module.log("train/loss_spike", float(spike), on_step=True, on_epoch=False)
        pl_module.log("train/bad_steps", float(self.guard.bad_steps), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return self.guard.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.guard.load_state_dict(state_dict)


def reliability_callbacks(module) -> list[Callback]:
    """What every stage adds through ``configure_callbacks``: :class:`NumericGuard` (to a stage that
    optimises automatically), out-of-memory advice, the config check before the first step, the
    skipped-sample counts in the metrics and the checkpoint on SIGTERM or SLURM's requeue signal (each
    only when the trainer has none of its own, so a configured one keeps its settings)."""
    from videogen.callbacks.config_check import ConfigCheck
    from videogen.callbacks.data_skips import DataSkips
    from videogen.callbacks.preemption import Preemption

    have = module.trainer.callbacks if module._trainer is not None else []
    guard = (NumericGuard,) if module.automatic_optimization else ()
    return [cls() for cls in (*guard, OOMAdvice, ConfigCheck, DataSkips, Preemption)
            if not any(isinstance(c, cls) for c in have)]
