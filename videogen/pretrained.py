"""Export folders: how a trained stage hands itself to the next one.

An export folder holds

* ``config.yaml`` -- ``class_path`` + ``init_args`` of the pure ``nn.Module`` (nested modules too),
* ``model.safetensors`` -- its weights (nothing is unpickled on load),
* ``stats.json`` -- what the next stage must know (for the VAE: latent mean/std per channel,
  scaling factor, compression factors),
* ``manifest.json`` -- what made it: inputs, videogen version, git commit, the weights' sha256.

Models make themselves exportable by inheriting :class:`~videogen.models.configurable.Configurable`,
which records their constructor arguments; there is no registry and no pickled object anywhere.

An export folder or a checkpoint record is downloaded data: before anything is constructed, every
``class_path`` of its tree must be a model class of ``videogen.models`` (``videogen.models.configurable``), the
kind the caller expects, with known ``init_args`` keys; the weights must have the sha256 the
manifest records and the shapes of the module built on the meta device. A refusal is
:class:`~videogen.errors.RefusedFile` (one line on the command line, exit status 2). :func:`save_export` replaces
only an export, by rename-aside-then-swap.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from videogen.errors import RefusedFile
from videogen.models.configurable import build_tree, check_tree, to_config

CONFIG, WEIGHTS, STATS, MANIFEST = "config.yaml", "model.safetensors", "stats.json", "manifest.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # a LoRA export's adapters as diffusers' load_lora_weights reads them


def state_mismatch(expected: dict[str, Any], given: dict[str, Any], limit: int = 3) -> str | None:
    """Why ``given`` (a state dict read from a file) does not fit a module whose state dict is
    ``expected``: the first few missing, unexpected and shape-mismatched keys, on one line; None if it fits."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})" if isinstance(given[k], torch.Tensor)
              else f"{k} (a {type(given[k]).__name__}, not a tensor)" for k in expected
              if k in given and not (isinstance(given[k], torch.Tensor) and given[k].shape == expected[k].shape)]
    parts = [f"{len(keys)} {what} ({', '.join(keys[:limit])}{', ...' if len(keys) > limit else ''})"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes)) if keys]
    return "; ".join(parts) or None


def check_shapes_first(config: dict[str, Any], state: dict[str, Any], where: str) -> None:
    """Build the module on the meta device (no memory taken) and compare its state dict with the
    weights' shapes before the real build: a config.yaml sized unlike its weights (a hostile
    ``base_channels: 100000``) is refused before it can allocate anything. A constructor that
    cannot run on the meta device (one that reads a folder of its own) is left to the real build."""
    try:
        with torch.device("meta"):
            skeleton = build_tree(config)
    except Exception:
        return
    problem = state_mismatch(skeleton.state_dict(), state)
    if problem:
        raise RefusedFile(f"{where}: the weights do not fit the {type(skeleton).__name__} its config describes: "
                          f"{problem}")


def load_weights(module: torch.nn.Module, state: dict[str, Any], where: str) -> None:
    """``module.load_state_dict(state)``, or one line naming the keys that do not fit."""
    problem = state_mismatch(module.state_dict(), state)
    if problem:
        raise RefusedFile(f"{where}: the weights do not fit the {type(module).__name__} its config describes: "
                          f"{problem}")
    module.load_state_dict(state)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: list[Path], chunk: int = 1 << 20) -> str:
    """One sha256 over several files, each as its name and its bytes (in the order given): the identity of
    a model folder (a diffusers VAE, a text encoder) without loading it."""
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode() + b"\0")
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


EXPORT_FILES = frozenset({CONFIG, WEIGHTS, STATS, MANIFEST, LORA_WEIGHTS})
REQUIRED_FILES = (CONFIG, WEIGHTS, STATS, MANIFEST)


def _aside(folder: Path) -> Path:
    """Where the previous export waits while the new one is renamed into place."""
    return folder.with_name(f".{folder.name}.old")


def _staging(folder: Path) -> Path:
    """Where a new export is written before it is renamed into place."""
    return folder.with_name(f".{folder.name}.new")


def _only_export_files(folder: Path) -> bool:
    """A folder that holds nothing but export files (or nothing): the only kind save_export removes."""
    return folder.is_dir() and not folder.is_symlink() and all(
        p.name in EXPORT_FILES and p.is_file() and not p.is_symlink() for p in folder.iterdir())


def _remove_export(folder: Path) -> None:
    if folder.exists() or folder.is_symlink():
        if not _only_export_files(folder):
            raise RefusedFile(f"{folder}: holds files other than an export's ({', '.join(sorted(EXPORT_FILES))}); "
                              "it is left as it is: move it away or give another folder")
        shutil.rmtree(folder)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _recover(folder: Path) -> None:
    """Finish or undo a replace that a kill interrupted: the previous export back in place if the new
    one never arrived, the previous one removed if the new one did."""
    aside = _aside(folder)
    if not aside.exists():
        return
    if not folder.exists() and is_export(aside):
        os.rename(aside, folder)
        fsync_dir(folder.parent)
    elif is_export(folder):
        _remove_export(aside)


def is_export(folder: str | os.PathLike) -> bool:
    """A complete export folder: the four files (and a LoRA export's diffusers file) and nothing else."""
    folder = Path(folder)
    return _only_export_files(folder) and all((folder / n).is_file() for n in REQUIRED_FILES)


def save_export(folder: str | os.PathLike, module: torch.nn.Module, stats: dict[str, Any],
                inputs: dict[str, Any] | None = None) -> Path:
    """Write an export folder so that a kill at any point leaves the previous export or the new one.

    The files are written and fsynced in ``.<name>.new`` beside it; an existing export is renamed to
    ``.<name>.old``, the new one renamed into place, the old one removed (a kill between the two
    renames leaves the old export at ``.<name>.old``: :func:`load_export` reads it there and the next
    save puts it back first). ``folder`` must be absent, empty or an export: any other folder (a run
    with its checkpoints, a shard set) is refused with :class:`RefusedFile` and left untouched.

    A module with LoRA adapters (``module.diffusers_lora()`` giving the diffusers pipeline class, the
    layers and the adapter config) also gets ``pytorch_lora_weights.safetensors``, written by that
    pipeline class's own ``save_lora_weights`` (what ``pipe.load_lora_weights(folder)`` loads); its
    sha256 is in the manifest as ``lora_weights_sha256``."""
    from safetensors.torch import save_file

    import videogen

    folder = Path(folder)
    _recover(folder)
    if folder.exists() and not _only_export_files(folder):
        raise RefusedFile(f"{folder}: exists and is not an export folder (it holds "
                          f"{', '.join(sorted(p.name for p in folder.iterdir())[:5]) if folder.is_dir() else 'a file'}"
                          "); it is left untouched: give the export a new folder")
    tmp = _staging(folder)
    _remove_export(tmp)  # a save killed before its renames
    tmp.mkdir(parents=True)
    config = to_config(module)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"class_path": config["class_path"]})
    with open(tmp / WEIGHTS, "rb+") as f:
        os.fsync(f.fileno())
    lora = module.diffusers_lora() if hasattr(module, "diffusers_lora") else None
    extra = {}
    if lora is not None:
        pipeline_class, layers, adapter_config = lora
        pipeline_class.save_lora_weights(str(tmp), transformer_lora_layers=layers, weight_name=LORA_WEIGHTS,
                                         transformer_lora_adapter_metadata=adapter_config, safe_serialization=True)
        extra["lora_weights_sha256"] = sha256_file(tmp / LORA_WEIGHTS)
    manifest = {"class_path": config["class_path"], "weights_sha256": sha256_file(tmp / WEIGHTS), **extra,
                "num_parameters": sum(p.numel() for p in module.parameters()), "inputs": inputs or {},
                "videogen_version": videogen.__version__, "git_commit": git_commit(),
                "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    _write_synced(tmp / CONFIG, yaml.safe_dump(config, sort_keys=False).encode())
    _write_synced(tmp / STATS, (json.dumps(stats, indent=2) + "\n").encode())
    _write_synced(tmp / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    fsync_dir(tmp)
    if folder.exists():
        os.rename(folder, _aside(folder))
        fsync_dir(folder.parent)
    os.rename(tmp, folder)
    fsync_dir(folder.parent)
    _remove_export(_aside(folder))
    return folder


@dataclass
class Export:
    module: torch.nn.Module
    stats: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    folder: Path


def read_json(path: Path, limit: int | None = None) -> dict[str, Any]:
    """The JSON object in ``path`` (a file from disk: hostile), refused (:class:`RefusedFile`, naming the
    file) when over ``limit`` bytes, unreadable, or not an object."""
    try:
        if limit is not None and path.stat().st_size > limit:
            raise RefusedFile(f"{path}: {path.stat().st_size} bytes, more than the {limit} this JSON file may have")
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RefusedFile(f"{path}: not readable JSON ({(str(e) or type(e).__name__).splitlines()[0][:200]})") from None
    if not isinstance(value, dict):
        raise RefusedFile(f"{path}: holds a {type(value).__name__}, not a JSON object")
    return value


def load_export(folder: str | os.PathLike, expect: type | tuple[type, ...] | None = None) -> Export:
    """Load an export folder: check ``config.yaml`` (model classes only, ``expect``, known
    arguments) and the weights' sha256 against ``manifest.json``, then build the module and load
    ``model.safetensors``. A refused folder raises :class:`RefusedFile` with nothing built."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.exists() and is_export(_aside(folder)):  # a replace killed between its two renames
        folder = _aside(folder)
    missing = [n for n in REQUIRED_FILES if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not an export folder (missing {', '.join(missing)}); make one with "
                                "`videogen export --ckpt CKPT --out DIR` or at the end of `videogen fit`")
    try:
        config = yaml.safe_load((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        reason = (str(e) or type(e).__name__).splitlines()[0][:200]
        raise RefusedFile(f"{folder / CONFIG}: not readable YAML ({reason})") from None
    check_tree(config, str(folder / CONFIG), expect)
    manifest, stats = read_json(folder / MANIFEST), read_json(folder / STATS)
    if sha256_file(folder / WEIGHTS) != manifest.get("weights_sha256"):
        raise RefusedFile(f"{folder / WEIGHTS}: its sha256 is not the weights_sha256 of {folder / MANIFEST} (the "
                          "weights were changed or damaged after export): export the stage again")
    try:
        with safe_open(str(folder / WEIGHTS), framework="pt") as f:  # the header only: names and shapes
            shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        check_shapes_first(config, shapes, str(folder / WEIGHTS))
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, ValueError) as e:
        raise RefusedFile(f"{folder / WEIGHTS}: not readable safetensors ({e})") from None
    module = build_tree(config)
    load_weights(module, state, str(folder / WEIGHTS))
    module.eval()
    return Export(module, stats, manifest, config, folder)


def load_checkpoint_module(ckpt: str | os.PathLike, expect: type | tuple[type, ...] | None = None
                           ) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The pure module of a stage's Lightning checkpoint: ``(module, stats, record)``.

    Read with ``torch.load(weights_only=True)``; the stage module wrote ``checkpoint["videogen"]``
    (its pure module's config, statistics and the state-dict prefix of the weights to export). The
    record is checked like an export's ``config.yaml`` before anything is built.
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
    module = module_from_state(record, state.get("state_dict"), expect, where=f"{ckpt} (its videogen record)")
    return module, record["stats"], {**record, "global_step": state.get("global_step"), "checkpoint": str(ckpt)}


def module_from_state(record: dict[str, Any], state_dict: dict[str, Any], expect: type | tuple[type, ...] | None = None,
                      where: str = "checkpoint record") -> torch.nn.Module:
    """A stage's pure module (in eval mode) from its ``checkpoint["videogen"]`` record and a whole
    (unsharded) LightningModule state dict: the weights under ``record["export_prefix"]``."""
    if not isinstance(record, dict) or not isinstance(record.get("stats"), dict) \
            or not isinstance(record.get("export_prefix"), str) or not isinstance(record.get("stage"), str):
        raise RefusedFile(f"{where}: not a stage record (a mapping with stage, config, stats and export_prefix)")
    if not isinstance(state_dict, dict):
        raise RefusedFile(f"{where}: the checkpoint has no state_dict mapping")
    check_tree(record.get("config"), where, expect)
    prefix = record["export_prefix"]
    weights = {k[len(prefix):]: v for k, v in state_dict.items() if isinstance(k, str) and k.startswith(prefix)}
    check_shapes_first(record["config"], weights, where)
    module = build_tree(record["config"])
    load_weights(module, weights, where)
    return module.eval()


def load_stage(path: str | os.PathLike, expect: type | tuple[type, ...] | None = None) -> Export:
    """An export folder, or a stage checkpoint (exported on the fly, in memory): what ``--vae`` takes."""
    path = Path(path)
    interrupted = not path.exists() and is_export(_aside(path))  # a replace killed between its renames
    if not path.exists() and not interrupted:
        raise FileNotFoundError(f"{path}: no such export folder or checkpoint (give the folder `videogen export` or "
                                "StageExport wrote, or a stage's .ckpt)")
    if path.is_dir() or interrupted:
        return load_export(path, expect)
    module, stats, record = load_checkpoint_module(path, expect)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values() if v.device.type == "cpu"))
    manifest = {"class_path": record["config"]["class_path"], "weights_sha256": digest.hexdigest(),
                "inputs": {"checkpoint": str(path), "global_step": record.get("global_step")}}
    return Export(module, stats, manifest, record["config"], path)
