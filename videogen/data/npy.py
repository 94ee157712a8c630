"""Arrays to and from ``.npy`` bytes in shards (latent caches' ``latent.npy``, ``text.*.npy``): written
without pickles (:func:`npy_bytes`), read never unpickled (:func:`read_npy`), the header believed only
when its shape and dtype account for exactly the bytes that follow it, so a hostile header cannot make
the reader allocate more than the member's size."""

from __future__ import annotations

import io
import math

import numpy as np


def read_npy(data: bytes) -> np.ndarray:
    """The array in ``data`` (``np.load(allow_pickle=False)`` after the header check); a ``ValueError``
    saying what is wrong for bytes that are not a plain ``.npy`` array of the size its header claims."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not read here (1.0 and 2.0 are)")
    except (OSError, EOFError, SyntaxError, TypeError) as e:
        raise ValueError(f"not a .npy array ({str(e)[:80]})") from None
    if dtype.hasobject:
        raise ValueError("holds Python objects (pickled); never loaded")
    need = math.prod(shape) * dtype.itemsize
    have = len(data) - f.tell()
    if need != have:
        raise ValueError(f"its header claims shape {tuple(shape)} {dtype} ({need} bytes) but {have} bytes follow")
    return np.load(io.BytesIO(data), allow_pickle=False)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as ``.npy`` bytes (no pickle: object arrays are refused), what :func:`read_npy` reads."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
