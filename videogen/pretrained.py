"""Export folders: how a trained stage hands itself to the next one.

An export folder holds

* ``config.yaml`` -- ``class_path`` + ``init_args`` of the pure ``nn.Module`` (nested modules too),
* ``model.safetensors`` -- its weights (nothing is unpickled on load),
* ``stats.json`` -- what the next stage must know (for the VAE: latent mean/std per channel,
  scaling factor, compression factors),
* ``manifest.json`` -- what made it: inputs, videogen version, git commit, the weights' sha256.

Models make themselves exportable by inheriting :class:`Configurable`, which records their
constructor arguments; there is no registry and no pickled object anywhere.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib
import inspect
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

CONFIG, WEIGHTS, STATS, MANIFEST = "config.yaml", "model.safetensors", "stats.json", "manifest.json"


class Configurable:
    """Mixin recording the arguments a module was built with (``self._init_args``), so it can be
    written as ``class_path`` + ``init_args`` and built again by :func:`from_config`."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        original = cls.__init__
        signature = inspect.signature(original)

        @functools.wraps(original)
        def __init__(self, *args, **kw):
            original(self, *args, **kw)
            if type(self) is cls:  # the most derived class records its own signature
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                init_args = {k: v for k, v in bound.arguments.items() if k != "self"}
                self.__dict__["_init_args"] = init_args

        cls.__init__ = __init__


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, Configurable):
        return to_config(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}.{k}") for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: cannot write a {type(value).__name__} to config.yaml; give the module "
                    "plain arguments or make the argument's class inherit videogen.pretrained.Configurable")


def to_config(module: Any) -> dict[str, Any]:
    """``{"class_path": ..., "init_args": {...}}`` of a :class:`Configurable` instance (or of the
    module an FSDP unit wraps: FSDP's auto-wrap puts its wrapper where the module was)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if isinstance(module, FullyShardedDataParallel):
        module = module.module
    init_args = getattr(module, "_init_args", None)
    if init_args is None:
        raise TypeError(f"{type(module).__name__} does not record its constructor arguments: "
                        "inherit videogen.pretrained.Configurable")
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": {k: _encode(v, f"{cls.__name__}.{k}") for k, v in init_args.items()}}


def _import(class_path: str):
    module_name, _, name = class_path.rpartition(".")
    if not module_name.startswith("videogen."):
        raise ValueError(f"class_path {class_path!r}: only videogen classes are built from export folders")
    return getattr(importlib.import_module(module_name), name)


def from_config(config: dict[str, Any]) -> Any:
    """Build a module from :func:`to_config` output (nested ``class_path`` dicts included)."""

    def decode(value: Any) -> Any:
        if isinstance(value, dict) and "class_path" in value:
            return from_config(value)
        if isinstance(value, list):
            return [decode(v) for v in value]
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        return value

    cls = _import(config["class_path"])
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for k, v in config.get("init_args", {}).items():
        v = decode(v)
        annotation = str(params[k].annotation) if k in params else ""
        kwargs[k] = tuple(v) if isinstance(v, list) and "tuple" in annotation else v
    return cls(**kwargs)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_export(folder: str | os.PathLike, module: torch.nn.Module, stats: dict[str, Any],
                inputs: dict[str, Any] | None = None) -> Path:
    """Write an export folder atomically (a temporary sibling, then a rename)."""
    from safetensors.torch import save_file

    import videogen

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = to_config(module)
    (tmp / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"class_path": config["class_path"]})
    (tmp / STATS).write_text(json.dumps(stats, indent=2) + "\n")
    manifest = {"class_path": config["class_path"], "weights_sha256": sha256_file(tmp / WEIGHTS),
                "num_parameters": sum(p.numel() for p in module.parameters()), "inputs": inputs or {},
                "videogen_version": videogen.__version__, "git_commit": git_commit(),
                "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


@dataclass
class Export:
    module: torch.nn.Module
    stats: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    folder: Path


def load_export(folder: str | os.PathLike, expect: type | None = None) -> Export:
    """Load an export folder: build the module from ``config.yaml``, load ``model.safetensors``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [n for n in (CONFIG, WEIGHTS, STATS, MANIFEST) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not an export folder (missing {', '.join(missing)}); make one with "
                                "`videogen export --ckpt CKPT --out DIR` or at the end of `videogen fit`")
    config = yaml.safe_load((folder / CONFIG).read_text())
    module = from_config(config)
    if expect is not None and not isinstance(module, expect):
        raise TypeError(f"{folder}: holds a {type(module).__name__}, expected a {expect.__name__}")
    module.load_state_dict(load_file(str(folder / WEIGHTS)))
    module.eval()
    return Export(module, json.loads((folder / STATS).read_text()), json.loads((folder / MANIFEST).read_text()),
                  config, folder)


def load_checkpoint_module(ckpt: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The pure module of a stage's Lightning checkpoint: ``(module, stats, record)``.

    Read with ``torch.load(weights_only=True)``; the stage module wrote ``checkpoint["videogen"]``
    (its pure module's config, statistics and the state-dict prefix of the weights to export).
    """
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no such checkpoint")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{ckpt}: cannot be read safely (weights_only=True): {str(e).splitlines()[0][:300]}") from e
    record = state.get("videogen") if isinstance(state, dict) else None
    if not record:
        raise ValueError(f"{ckpt}: has no 'videogen' record; it was not written by a videogen stage module")
    module = module_from_state(record, state["state_dict"])
    return module, record["stats"], {**record, "global_step": state.get("global_step"), "checkpoint": str(ckpt)}


def module_from_state(record: dict[str, Any], state_dict: dict[str, Any]) -> torch.nn.Module:
    """A stage's pure module (in eval mode) from its ``checkpoint["videogen"]`` record and a whole
    (unsharded) LightningModule state dict: the weights under ``record["export_prefix"]``."""
    module = from_config(record["config"])
    prefix = record["export_prefix"]
    module.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    return module.eval()


def load_stage(path: str | os.PathLike, expect: type | None = None) -> Export:
    """An export folder, or a stage checkpoint (exported on the fly, in memory): what ``--vae`` takes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such export folder or checkpoint (give the folder `videogen export` or "
                                "StageExport wrote, or a stage's .ckpt)")
    if path.is_dir():
        return load_export(path, expect)
    module, stats, record = load_checkpoint_module(path)
    if expect is not None and not isinstance(module, expect):
        raise TypeError(f"{path}: holds a {type(module).__name__}, expected a {expect.__name__}")
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values() if v.device.type == "cpu"))
    manifest = {"class_path": record["config"]["class_path"], "weights_sha256": digest.hexdigest(),
                "inputs": {"checkpoint": str(path), "global_step": record.get("global_step")}}
    return Export(module, stats, manifest, record["config"], path)
