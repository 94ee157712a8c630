"""``AtomicCheckpointIO``: checkpoints that are whole or absent, and loaded without running code.

Lightning's ``TorchCheckpointIO`` serialises a checkpoint into memory and then writes it over the
final name: a process killed (or a disk that fills) during that write leaves a truncated
``last.ckpt`` where the previous good one was. This plugin writes a temporary file in the same
folder, flushes and fsyncs it, ``os.replace``s it over the final name and fsyncs the folder, so
the final name always holds either the previous complete checkpoint or the new complete one.
A failed write removes the temporary file and raises an error naming the checkpoint. A temporary
file that a kill left behind (``.<name>.<host>-<pid>.partial``) is removed at the next save into the
folder: its writer is no longer running on this host, or it has not been written to for an hour.

Loading always uses ``torch.load(weights_only=True)``: a checkpoint is data, never code.

``videogen fit`` installs it on every run (``videogen.cli.use_atomic_checkpoint_io``); a plain
``Trainer(plugins=[AtomicCheckpointIO()])`` gets the same behaviour.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol

from videogen.pretrained import fsync_dir

log = logging.getLogger("videogen")

TMP_SUFFIX = ".partial"
STALE_AFTER_S = 3600.0  # a partial file nobody wrote to for this long has no live writer anywhere
_PARTIAL = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<host>[^.]+)-)?(?P<pid>\d+)" + re.escape(TMP_SUFFIX) + "$")


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of saves into ``folder`` that were killed: written by a process of
    this host that is gone, or untouched for :data:`STALE_AFTER_S`. Files of live writers stay."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        m = _PARTIAL.match(path.name)
        if m is None or not path.is_file():
            continue
        pid, host = int(m["pid"]), m["host"] or _host()  # (files of older versions carry no host)
        try:
            idle = now - path.stat().st_mtime
        except OSError:
            continue
        ours = host == _host() and pid == os.getpid()
        if not ours and ((host == _host() and not _alive(pid)) or idle > STALE_AFTER_S):
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
            log.warning("removed %s: the temporary file of a checkpoint save that was killed", path)
    return removed


def _os_error(e: BaseException | None) -> OSError | None:
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through a fsynced temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent)
    tmp = path.with_name(f".{path.name}.{_host()}-{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        io_error = _os_error(e)  # torch's zip writer reports a failed write as a RuntimeError
        if io_error is not None:
            raise OSError(io_error.errno, f"could not write checkpoint {path}: {io_error.strerror or io_error} (is "
                                          f"the disk full? free space under {path.parent} or point the checkpoint "
                                          "dirpath elsewhere); the previous checkpoint there is kept unchanged") from e
        raise
    fsync_dir(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints atomically (temp file + fsync + rename + folder fsync); load with weights_only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote stores: fsspec transaction
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        if weights_only is False:
            log.warning("AtomicCheckpointIO: weights_only=False asked for %s; loading with weights_only=True "
                        "anyway (videogen checkpoints hold only tensors and plain types)", path)
        if not os.path.exists(path) and _is_local_file_protocol(path):
            raise FileNotFoundError(f"checkpoint {path} does not exist: check ckpt_path (give a file written by "
                                    "`videogen fit`, e.g. <dirpath>/last.ckpt)")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise ValueError(f"checkpoint {path} cannot be loaded safely (weights_only=True): "
                             f"{str(e).splitlines()[0][:300]}. It holds objects other than tensors and plain "
                             "types, or it is damaged; videogen never unpickles code from a checkpoint") from e
