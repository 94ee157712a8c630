"""``videogen tune-buckets --config X.yaml``: batch sizes per bucket measured on this device.

Real training steps of the config's model run on synthetic batches of each bucket's shape with
growing batch sizes; the largest whose peak memory stays within the budget (``--memory-gb``, default
90% of the GPU's memory) is written per bucket into a config fragment to merge after the original.
How the peak is measured (on CUDA and on a CPU): :mod:`videogen.data.bucket_tuning`.

    videogen tune-buckets --config configs/dit/base_256p.yaml --out configs/dit/tuned_a100_40g.yaml
    videogen fit --config configs/dit/base_256p.yaml --config configs/dit/tuned_a100_40g.yaml

A bucket that does not fit even one clip is left out of the table (said in the file and printed).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

HELP = "measure peak memory per bucket on this device and write per-bucket batch sizes into a config"
TAKES_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", required=True, help="training config(s), merged in order")
    parser.add_argument("--out", default=None, help="the config fragment to write (default: <config>.tuned.yaml)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="memory budget per device in GiB (default: 90%% of the GPU's; required on a CPU)")
    parser.add_argument("--max-batch", type=int, default=256, help="largest batch size tried (default 256)")
    parser.add_argument("--accelerator", default=None, help="cpu or gpu (default: the config's)")
    parser.epilog = "Any other --key=value overrides the config, e.g. --model.init_args.dit.init_args.depth=2."


def default_budget(accelerator: str) -> int:
    import torch

    if accelerator in ("gpu", "cuda"):
        return int(0.9 * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    raise SystemExit("videogen tune-buckets: on a CPU give the memory budget per process with --memory-gb")


def run(args: argparse.Namespace) -> int:
    from videogen.cli import lightning_cli
    from videogen.data.bucket_tuning import GB, peak_method, tune_table, write_fragment

    bad = [o for o in args.overrides if not o.startswith("--")]
    if bad:
        raise SystemExit(f"videogen tune-buckets: unexpected argument {bad[0]!r}")
    if args.max_batch < 1:
        raise SystemExit("videogen tune-buckets: --max-batch must be >= 1")
    cli_args = []
    for c in args.config:
        if not Path(c).is_file():
            raise SystemExit(f"videogen tune-buckets: --config {c}: no such file")
        cli_args += ["--config", c]
    one_device = ["--trainer.logger=false", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto"]
    if args.accelerator:
        one_device.append(f"--trainer.accelerator={args.accelerator}")
    cli = lightning_cli(cli_args + list(args.overrides) + one_device, run=False)
    module, dm = cli.model, cli.datamodule
    bucketer = getattr(dm, "bucketer", None)
    if bucketer is None or bucketer.packing or not bucketer.buckets:
        raise SystemExit("videogen tune-buckets: the config's data has no bucket table to tune (packing mode is "
                         "sized by data.init_args.bucketer.token_budget: lower it until a step fits)")
    accelerator = "gpu" if cli.trainer.accelerator.__class__.__name__ == "CUDAAccelerator" else "cpu"
    precision = cli.trainer.precision
    device, method = peak_method(accelerator)
    budget = int(args.memory_gb * GB) if args.memory_gb else default_budget(accelerator)
    tuned, dropped, peaks = [], [], {}
    print(f"tuning {len(bucketer.buckets)} buckets on {device}, budget {budget / GB:.3f} GiB ({method})")
    print(f"{'bucket':<16}{'batch':>7}{'peak GiB':>12}{'tried':>8}")
    for bucket, best, report in tune_table(module, bucketer.buckets, budget, args.max_batch, accelerator, precision):
        if best == 0:
            dropped.append(bucket.name)
            print(f"{bucket.name:<16}{'-':>7}{'> budget':>12}{len(report):>8}   (left out: one clip does not fit)")
            continue
        tuned.append(replace(bucket, batch_size=best))
        peaks[bucket.name] = report[best]
        print(f"{bucket.name:<16}{best:>7}{report[best] / GB:>12.4f}{len(report):>8}")
    if not tuned:
        raise SystemExit(f"videogen tune-buckets: no bucket fits {budget / GB:.3f} GiB even with one clip; "
                         "raise --memory-gb, or shrink the model or the buckets")
    out = Path(args.out) if args.out else Path(args.config[-1]).with_suffix(".tuned.yaml")
    data_class = f"{type(dm).__module__}.{type(dm).__qualname__}"
    write_fragment(out, data_class, tuned, dropped, device, method, budget, args.config, peaks)
    print(f"wrote {out}")
    return 0
