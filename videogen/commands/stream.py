"""``videogen stream``: run a config's data pipeline for an epoch, without a model.

Reads the ``data:`` section of a training config (the same YAML ``videogen fit`` takes), streams
the training loader through the real workers, decoders and buckets, and reports batches per bucket,
clips and frames per second, and every skipped sample by reason. Use it to check a data config
before spending accelerator time on it.
"""

from __future__ import annotations

import argparse
import json
import time
from argparse import ArgumentError
from collections import Counter
from pathlib import Path

HELP = "stream a config's training data for an epoch (no model): batches per bucket, clips/s, skips"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", action="append", required=True,
                        help="training config(s) with a data: section; several are merged in order")
    parser.add_argument("--epochs", type=int, default=1, help="epochs to stream (default 1)")
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches per epoch")
    parser.epilog = "Any --data.KEY=VALUE overrides a data setting, e.g. --data.loader.num_workers=0."


TAKES_OVERRIDES = True


DEFAULT_DATA = "videogen.data.VideoDataModule"  # the data: class when a section gives only init_args


def data_parser():
    """A parser for the ``data:`` section of a training config, as LightningCLI reads it
    (class_path + init_args, omegaconf interpolation); the other sections are accepted unread."""
    from jsonargparse import ActionConfigFile, ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(parser_mode="omegaconf", exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    parser.set_defaults({"data": {"class_path": DEFAULT_DATA}})
    for key in ("model", "trainer", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{key}", type=dict, default={})
    for key in ("seed_everything", "ckpt_path"):
        parser.add_argument(f"--{key}", default=None)
    return parser


def build_datamodule(configs: list[str], overrides: list[str], shards: str | list[str] | None = None):
    """Instantiate the data: section of these configs (merged in order) with --data.* overrides;
    ``shards``: read these instead of the config's ``train_shards`` (which may then be absent)."""
    parser = data_parser()
    args = []
    for c in configs:
        args += ["--config", c]
    if shards is not None:  # after the configs, before the user's overrides
        args.append(f"--data.init_args.train_shards={json.dumps(shards)}")
    cfg = parser.parse_args(args + list(overrides))
    return parser.instantiate_classes(cfg)["data"]


BUCKET_KEYS = ("num_frames", "height", "width", "batch_size")


def check_bucket_table(bucketer: dict, where: str, need: bool = False) -> None:
    """A one-line ``ValueError`` naming the entry for a ``buckets:`` list that is not a list of
    ``{num_frames, height, width[, batch_size]}`` (``need``: also for a missing or empty one)."""
    table = bucketer.get("buckets")
    if need and not (isinstance(table, list) and table):
        raise ValueError(f"{where}: needs a non-empty `buckets:` list of {{num_frames, height, width, batch_size}} "
                         "(at the top level or under data.init_args.bucketer)")
    for i, b in enumerate(table if isinstance(table, list) else []):
        if not isinstance(b, dict):
            raise ValueError(f"{where}: buckets[{i}] is {b!r}; write it as {{num_frames: 9, height: 64, width: 96}}")
        unknown, missing = set(b) - set(BUCKET_KEYS), set(BUCKET_KEYS[:3]) - set(b)
        if unknown or missing:
            raise ValueError(f"{where}: buckets[{i}] has unknown keys {sorted(unknown)} or lacks {sorted(missing)}; "
                             "the keys are num_frames, height, width and optional batch_size")


def load_data_config(config: str, shards: str | list[str], overrides: list[str] = (), option: str = "--config",
                     need_buckets: bool = False):
    """The ``VideoDataModule`` of a config's ``data:`` section, read the one way every command reads
    it (:func:`build_datamodule`: class_path + init_args, omegaconf interpolation, ``--data.*``
    overrides), reading ``shards``. A file with a bare bucket table (``buckets:``, ``batch_size``, ...
    at the top level) is read as the section's ``bucketer``. Errors are one ``ValueError`` line naming
    the file (``FileNotFoundError`` for a missing one); ``need_buckets``: a section without a bucket
    table, or whose token budget has no token shape to size batches by, is one too."""
    import yaml

    from videogen.data.datamodule import VideoDataModule

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"{option} {config}: no such config file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{config}: cannot read the config ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{config}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(doc, dict):
        raise ValueError(f"{config}: not a mapping of settings (a training config with a data: section, or a "
                         "bucket table)")
    data = doc.get("data")
    if "buckets" in doc or not isinstance(data, dict):  # a bare bucket table
        bucketer = doc
    else:  # a training config: data.init_args.bucketer (or data.bucketer)
        section = data.get("init_args", data)
        bucketer = section.get("bucketer") if isinstance(section, dict) else None
    check_bucket_table(bucketer if isinstance(bucketer, dict) else {}, config, need_buckets)
    try:
        if "buckets" in doc and "data" not in doc:  # a bare bucket table: the data section's bucketer
            if overrides:
                raise ValueError(f"--data.* overrides apply to a training config's data section, not to a bare "
                                 f"bucket table ({overrides[0]}); edit the table")
            parser = data_parser()
            cfg = parser.parse_object({"data": {"class_path": DEFAULT_DATA,
                                                "init_args": {"bucketer": doc, "train_shards": shards}}})
            dm = parser.instantiate_classes(cfg)["data"]
        else:
            dm = build_datamodule([str(path)], list(overrides), shards)
    except (ValueError, TypeError, KeyError, ArgumentError) as e:
        raise ValueError(f"{config}: its data section cannot be used: {' '.join(str(e).split())[:400]}") from None
    if not isinstance(dm, VideoDataModule):
        raise ValueError(f"{config}: its data section is a {type(dm).__name__}, not a {DEFAULT_DATA}")
    if need_buckets and dm.bucketer.token_budget and dm.bucketer.token_shape is None:  # no model to take it from
        raise ValueError(f"{config}: its token_budget sizes batches by the DiT's token shape, which training takes "
                         "from the model: give it, e.g. --data.init_args.bucketer.token_shape=[4,16,16]")
    return dm


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bad = [o for o in args.overrides if not o.startswith("--data.")]
    if bad:
        raise SystemExit(f"videogen stream: only --data.* overrides are accepted, got {bad[0]!r}")
    if args.epochs < 1:
        raise SystemExit("videogen stream: --epochs must be >= 1")
    dm = build_datamodule(args.config, args.overrides)
    loader = dm.train_dataloader()
    for epoch in range(args.epochs):
        per_bucket: Counter = Counter()
        clips = frames = 0
        start = time.perf_counter()
        total = min(len(loader), args.max_batches or len(loader))
        for i, batch in enumerate(tqdm(loader, total=total, desc=f"epoch {epoch}", unit="batch")):
            videos = batch["video"] if isinstance(batch["video"], list) else list(batch["video"])
            per_bucket[batch.get("bucket", "packed")] += 1
            clips += len(videos)
            frames += sum(v.shape[1] for v in videos)
            if i + 1 >= total:
                break
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: {sum(per_bucket.values())} batches, {clips} clips, {frames} frames in {seconds:.1f} s "
              f"({clips / seconds:.1f} clips/s, {frames / seconds:.0f} frames/s, {dm.loader.num_workers} workers)")
        for bucket, n in sorted(per_bucket.items()):
            print(f"  bucket {bucket:<14} {n:>6} batches")
        skipped = loader.skipped
        print(f"  skipped: {sum(skipped.values())}" + (f" ({', '.join(f'{k}={v}' for k, v in sorted(skipped.items()))})"
                                                     if skipped else ""))
    return 0
