"""The one timing rule of the benchmarks: run a call several times, the shortest wall-clock time counts.

A benchmark script imports it as ``from timing import best`` (``python benchmarks/x.py`` puts this
folder first on ``sys.path``)."""

from __future__ import annotations

import time
from typing import Any, Callable


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest of ``repeats`` (at least one) wall-clock times of ``fn()`` in seconds, and what the
    last call returned."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return min(times), result


def best(fn: Callable[[], Any], repeats: int) -> float:
    """The shortest of ``repeats`` wall-clock times of ``fn()`` in seconds."""
    return best_of(fn, repeats)[0]
