"""The ``videogen`` command.

``videogen fit|validate|test|predict`` is Lightning's LightningCLI (subclass mode for model and
data, omegaconf interpolation, several ``--config`` merged in order, ``--print_config``). The
extra subcommands (data recipes, inspection, ...) live beside them: each is one module under
``videogen/commands/`` with ``HELP``, ``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

TRAINER_COMMANDS = {
    "fit": "train a stage (VAE, captioner or DiT) from a config",
    "validate": "run one validation epoch",
    "test": "run one test epoch",
    "predict": "run prediction (used by encode/recaption)",
}

# name -> module under videogen.commands (imported only when the command runs)
EXTRA_COMMANDS = {
    "make-synthetic": "make_synthetic",
    "make-shards": "make_shards",
    "curate": "curate",
    "inspect": "inspect",
    "stream": "stream",
    "export": "export",
    "encode": "encode",
    "eval-vae": "eval_vae",
    "vae-stats": "vae_stats",
    "sample": "sample",
    "evaluate": "evaluate",
    "tune-buckets": "tune_buckets",
    "pipeline": "pipeline",
    "scorecard": "scorecard",
    "recaption": "recaption",
}


def _command_module(name: str):
    return importlib.import_module(f"videogen.commands.{EXTRA_COMMANDS[name]}")


def _print_help() -> None:
    lines = ["usage: videogen COMMAND [options]   (videogen COMMAND --help for a command's options)", "",
             "training (LightningCLI: --config X.yaml [--config Y.yaml] [--key=value] [--print_config]):"]
    lines += [f"  {name:<16}{text}" for name, text in TRAINER_COMMANDS.items()]
    lines += ["", "data and tools:"]
    for name in EXTRA_COMMANDS:
        try:
            text = _command_module(name).HELP
        except ImportError as e:  # a broken optional dependency must not hide the other commands
            text = f"(unavailable: {e})"
        lines.append(f"  {name:<16}{text}")
    print("\n".join(lines))


def run_extra(name: str, argv: list[str]) -> int:
    module = _command_module(name)
    parser = argparse.ArgumentParser(prog=f"videogen {name}", description=module.HELP)
    module.add_arguments(parser)
    takes = getattr(module, "TAKES_OVERRIDES", None)  # (prefix, option): --data.key=value settings of that config
    if takes:
        args, args.overrides = parser.parse_known_args(argv)
        prefix, option = takes
        bad = [o for o in args.overrides if not o.startswith(prefix)]
        if bad or (args.overrides and not getattr(args, option)):
            flag = "--" + option.replace("_", "-")
            print(f"videogen {name}: only {prefix}* overrides of the {flag} config are accepted, got "
                  f"{(bad or args.overrides)[0]!r}", file=sys.stderr)
            return 2
    else:
        args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except Exception as e:
        from videogen.errors import RefusedFile

        if not isinstance(e, RefusedFile):
            raise
        print(f"videogen: error: {e}", file=sys.stderr)  # a hostile or foreign export, record or output folder
        return 2


def use_atomic_checkpoint_io(trainer) -> None:
    """Checkpoints of every ``videogen fit`` are written atomically and loaded with weights_only
    (videogen/checkpoint_io.py), unless the config names a checkpoint plugin of its own."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from videogen.checkpoint_io import AtomicCheckpointIO

    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def resume_requeued_job(config) -> None:
    """A requeued SLURM job (``SLURM_RESTART_COUNT`` > 0) resumes from the newest HPC checkpoint of its
    ``trainer.default_root_dir`` whatever ``ckpt_path`` says: the sbatch script passes the user's
    arguments again on every rerun, and an explicit ``--ckpt_path`` would restart each rerun from
    that old checkpoint. Without an HPC checkpoint (a requeue before any save) the given one is kept."""
    import os

    from videogen.callbacks.preemption import hpc_checkpoints

    if not os.environ.get("SLURM_JOB_ID") or int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
        return
    root = (config.get("trainer") or {}).get("default_root_dir") or os.getcwd()
    found = hpc_checkpoints(root)
    if found and config.get("ckpt_path") != "hpc":
        if os.environ.get("SLURM_PROCID", "0") == "0":
            print(f"videogen: requeued SLURM job (restart {os.environ['SLURM_RESTART_COUNT']}): resuming from "
                  f"{found[-1]} (the newest HPC checkpoint), not ckpt_path={config.get('ckpt_path')}", file=sys.stderr)
        config["ckpt_path"] = "hpc"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX); without it PyTorch emulates
    bf16 matmuls, several times slower than fp32."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def cpu_precision(trainer: dict) -> None:
    """A bf16 ``trainer.precision`` on a CPU run becomes fp32 (``32-true``) where the CPU has no bf16
    instructions, with one line saying so. The quickstart DiT trains in bf16-mixed, 1.4x faster than fp32
    on a CPU with AVX512-BF16; on one without (AVX2-only laptops; ARM CPUs are treated the same) emulated
    bf16 was over 10x slower than fp32 (benchmarks/RESULTS.md): hours instead of minutes."""
    import torch

    precision = str(trainer.get("precision") or "")
    accelerator = str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision.startswith("bf16") and on_cpu and not cpu_has_native_bf16():
        print(f"videogen: trainer.precision={precision} on a CPU without bf16 instructions (AVX512-BF16 or AMX) "
              "would be emulated, several times slower than fp32: training in fp32 (32-true) instead", file=sys.stderr)
        trainer["precision"] = "32-true"


def lightning_cli(args: list[str] | None = None, run: bool = True):
    """Build the LightningCLI (also used by tests to parse configs without running)."""
    from pathlib import Path

    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    from videogen.callbacks.config_logging import LoggedConfig

    class VideogenCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:  # a missing checkpoint is refused before anything is built
            config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
            ckpt = config.get("ckpt_path")
            if ckpt and ckpt not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt) \
                    and not Path(ckpt).is_file():
                config_error(f"ckpt_path={ckpt}: no such checkpoint file (give a .ckpt written by videogen fit, "
                             "e.g. <checkpoint dirpath>/last.ckpt)")
            if self.subcommand == "fit":
                resume_requeued_job(config)
            cpu_precision(config.get("trainer") or {})

        def parse_arguments(self, parser, args) -> None:  # a retired key gets the key it became, then the usual error
            subcommands = getattr(parser, "_subcommands_action", None)
            for each in [parser, *(subcommands._name_parser_map.values() if subcommands else [])]:
                each.error = with_retired_hint(each.error)
            super().parse_arguments(parser, args)

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except (ValueError, FileNotFoundError) as e:  # a constructor refused its config
                config_error(str(e))

        def _run_subcommand(self, subcommand: str) -> None:
            try:
                super()._run_subcommand(subcommand)
            except RuntimeError as e:  # a checkpoint of another model config: one line naming the keys
                problem = checkpoint_mismatch(e, self.trainer.ckpt_path, self.model)
                if problem is None:
                    raise
                from videogen.errors import ConfigError

                raise ConfigError(problem) from None

        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            use_atomic_checkpoint_io(trainer)
            return trainer

    return VideogenCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_callback=LoggedConfig,  # config.yaml beside the logs, and the config to every logger
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def checkpoint_mismatch(error: RuntimeError, ckpt_path, model) -> str | None:
    """Why the checkpoint being restored does not fit ``model`` (torch's multi-line state-dict error
    made one line: the first missing, unexpected and shape-mismatched keys), or None if ``error`` is
    something else."""
    import os

    import torch

    from videogen.pretrained import state_mismatch

    if "Error(s) in loading state_dict" not in str(error) or not ckpt_path or not os.path.isfile(ckpt_path):
        return None
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    problem = state_mismatch(model.state_dict(), state.get("state_dict") or {})
    return problem and (f"ckpt_path={ckpt_path}: its weights do not fit this model config: {problem}; resume with a "
                        "checkpoint of this config, or leave out --ckpt_path to start a new run")


# arguments retired from the stage modules and the DiT, and the key each became (a run config or a
# checkpoint written before names them): the optimizer's and schedule's figures, activation checkpointing
RETIRED_ARGUMENTS = {"lr": "model.init_args.optimizer.init_args.lr",
                     "betas": "model.init_args.optimizer.init_args.betas",
                     "weight_decay": "model.init_args.optimizer.init_args.weight_decay",
                     "warmup_steps": "model.init_args.lr_scheduler.init_args.warmup",
                     "decay_steps": "model.init_args.lr_scheduler.init_args.decay",
                     "min_lr_ratio": "model.init_args.lr_scheduler.init_args.floor",
                     "gradient_checkpointing": "model.init_args.activation_checkpointing"}


def retired_hint(message: str) -> str | None:
    """What a retired argument named in a parser's or constructor's error became, or None."""
    import re

    for name in re.findall(r"(?:unexpected keyword argument|[Oo]ption|[Kk]ey) '(\w+)'", message):
        if name in RETIRED_ARGUMENTS:
            return f"a config or checkpoint from before {name} was retired: it is now {RETIRED_ARGUMENTS[name]}"
    return None


def with_retired_hint(report):
    """A parser's ``error`` that first prints what a retired argument in the message became."""
    def error(message, *rest, **kw):
        hint = retired_hint(str(message))
        if hint:
            print(f"videogen: {hint}", file=sys.stderr)
        return report(message, *rest, **kw)

    return error


def config_error(message: str) -> None:
    """A configuration the run cannot use: one line on stderr, exit status 2, nothing computed.
    (jsonargparse reports a constructor's error among the Union subtypes it tried: keep that one.)"""
    reasons = [line.strip()[2:] for line in message.splitlines()
               if line.strip().startswith("- ") and "Expected a <class 'NoneType'>" not in line]
    reason = reasons[0] if reasons else message.strip().splitlines()[0]
    hint = retired_hint(reason)
    if hint:
        reason += f" ({hint})"
    print(f"videogen: error: {reason}", file=sys.stderr)
    raise SystemExit(2)


def close_process_group() -> None:
    """Destroy the process group a distributed run opened, before the interpreter shuts down.

    Lightning destroys it at exit only for NCCL; a gloo group left open is torn down during
    interpreter finalisation, and its worker threads then abort the process ("terminate called
    without an active exception", exit -6) after a run that succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    if argv[0] in EXTRA_COMMANDS:
        return run_extra(argv[0], argv[1:])
    if argv[0] in TRAINER_COMMANDS:
        from videogen.data.manifest import ManifestError
        from videogen.errors import ConfigError, RefusedFile

        try:
            lightning_cli(argv)
        except (ConfigError, ManifestError, RefusedFile) as e:  # found at setup, before the first step (or an export refused)
            print(f"videogen: error: {e}", file=sys.stderr)
            return 2
        finally:
            close_process_group()
        return 0
    print(f"videogen: unknown command {argv[0]!r}; run 'videogen --help' for the list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
