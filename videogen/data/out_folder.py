"""The output folder of a command that writes shards is apart from its inputs.

``encode``, ``recaption``, ``curate`` and ``make-shards`` write shards (named like their inputs'),
``dataset.json`` and their bookkeeping into ``--out``. An ``--out`` that is an input folder, or lies
inside one, would overwrite the input shards or mix the new ones into the input set; an input
inside ``--out`` would be overwritten or read back as output. :func:`check_out_apart` refuses all
three before anything is written. Remote inputs (``pipe:``, ``http(s)://``...) have no folder here
and are not compared.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

import braceexpand

from videogen.data.shards import local_path


def _inputs(spec: str | os.PathLike) -> list[tuple[Path, bool]]:
    """``(path, is_folder)`` for each local input ``spec`` names: a folder (all of its shards are
    input), or a shard file (a glob's matches, a file named on its own)."""
    found = []
    for item in braceexpand.braceexpand(str(spec)):
        item = local_path(item)
        if item is None:
            continue
        if any(c in item for c in "*?["):
            found.extend((Path(p), False) for p in glob.glob(item))
        else:
            found.append((Path(item), Path(item).is_dir()))
    return found


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_apart(out: str | os.PathLike, inputs: str | os.PathLike | Iterable[str | os.PathLike],
                    option: str = "--data") -> None:
    """Refuse (``RefusedFile``, one line) an ``out`` that is an input folder, lies inside one, is the
    folder of an input shard, or holds an input. Call it before writing anything into ``out``."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    target = Path(os.path.realpath(out))
    for item in items:
        for path, is_folder in _inputs(item):
            path = Path(os.path.realpath(path))
            if is_folder and _within(target, path):
                problem = f"is {'' if target == path else 'inside '}the input folder {path}"
            elif not is_folder and target == path.parent:
                problem = f"is the folder of the input shard {path}"
            elif _within(path, target):
                problem = f"holds the input {path}"
            else:
                continue
            from videogen.errors import RefusedFile

            raise RefusedFile(f"{out}: the output folder {problem} ({option} {item}); nothing was written: "
                              "give --out a folder apart from the inputs")
