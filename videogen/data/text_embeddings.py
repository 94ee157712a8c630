"""Precomputed caption embeddings in a latent cache (``videogen encode --text-encoder``).

A latent-cache sample carries, beside ``latent.npy``, one array per caption a DiT may pick:

    text.txt.npy       the original caption (``txt``)
    text.<name>.npy    each named caption of the json's ``captions`` (``long``, ``recaption``, ...)

Each is float16 ``(n, D)``: the encoder's tokens trimmed to the caption's ``n`` valid tokens (the
mask is ``n`` ones then zeros up to the encoder's max length: encode refuses left-padding
tokenizers). Read with ``np.load(allow_pickle=False)``, never unpickled. The cache's ``dataset.json``
records the encoder (:class:`TextSpec`: its width and max length, and its identity and the encoded
``NULL_CAPTION``); a sample whose arrays disagree with it (dtype, rank, width, more tokens than the
max length, non-finite values) is skipped as ``bad_text_embedding``, one that lacks the array of a
caption it has as ``missing_text_embedding``.

:func:`caption_names` and :func:`caption_text` are the one definition of "the captions of a
sample" shared by encode (which captions to store) and the DiT (which one to train on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from videogen.data.npy import read_npy

# names a caption can be stored under: member extensions are lower-cased by the reader
CAPTION_NAME = re.compile(r"[a-z0-9_-]{1,64}")
MAX_CAPTIONS = 16  # named captions per sample that encode stores (a hostile json may hold thousands)


def member(name: str) -> str:
    """The member extension holding caption ``name``'s embedding (``txt`` is the original caption)."""
    return f"text.{name}.npy"


def caption_text(name: str, caption: str, meta: dict[str, Any]) -> str:
    """The text of caption ``name`` of a sample: ``txt`` is the original caption; a named caption of
    the json's ``captions`` that is missing, empty or not a string falls back to the original."""
    if name == "txt":
        return caption
    named = meta.get("captions") if isinstance(meta, dict) else None
    text = named.get(name) if isinstance(named, dict) else None
    return text if isinstance(text, str) and text.strip() else caption


def caption_names(caption: str, meta: dict[str, Any]) -> list[str]:
    """The captions a DiT may pick for a sample, as names: ``txt`` when the original is not empty,
    then the json's named captions with a storable name (:data:`CAPTION_NAME`) and a non-empty text,
    in sorted order, at most :data:`MAX_CAPTIONS`."""
    names = ["txt"] if caption else []
    named = meta.get("captions") if isinstance(meta, dict) else None
    if isinstance(named, dict):
        usable = sorted(k for k, v in named.items() if isinstance(k, str) and k != "txt" and CAPTION_NAME.fullmatch(k)
                        and isinstance(v, str) and v.strip())
        names += usable[:MAX_CAPTIONS]
    return names


def picked(name: str, caption: str, meta: dict[str, Any]) -> str | None:
    """The caption a DiT trains on when its ``captions`` weights pick ``name``: ``name`` itself when the
    sample has it (:func:`caption_names`), else the original ``txt``, else None (no caption at all: the
    encoded ``NULL_CAPTION``). The live encoder and the cache's embeddings follow this one rule."""
    names = caption_names(caption, meta)
    return name if name in names else ("txt" if "txt" in names else None)


@dataclass(frozen=True)
class TextSpec:
    """What every embedding of a cache must be: float16 ``(n, dim)`` with ``1 <= n <= max_tokens``."""

    dim: int
    max_tokens: int

    @classmethod
    def from_record(cls, record: Any, where: str) -> "TextSpec":
        """From a manifest's ``created_by.text_encoder`` (checked: it is hostile input too)."""
        if not isinstance(record, dict):
            raise ValueError(f"{where}: created_by.text_encoder must be an object; re-run `videogen encode`")
        dim, max_tokens = record.get("width"), record.get("max_length")
        for key, value in (("width", dim), ("max_length", max_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65536:
                raise ValueError(f"{where}: created_by.text_encoder.{key}={value!r} is not an integer in "
                                 "[1, 65536]; re-run `videogen encode --text-encoder ...`")
        return cls(dim, max_tokens)


def text_spec(manifests: list[Any]) -> TextSpec | None:
    """The one :class:`TextSpec` of these cache manifests (``DatasetManifest`` or None each), or None
    when none records a text encoder; manifests that record different ones are refused."""
    specs = {}
    for m in manifests:
        record = None if m is None else m.created_by.get("text_encoder")
        if record is not None:
            specs[TextSpec.from_record(record, "dataset.json")] = record.get("source")
    if len(specs) > 1:
        raise ValueError(f"the shards mix latent caches with text embeddings of different encoders "
                         f"({', '.join(f'{s}: width {k.dim}, max length {k.max_tokens}' for k, s in specs.items())}); "
                         "train on caches written with one --text-encoder")
    return next(iter(specs), None)


def embedding_problem(data: bytes | None, spec: TextSpec) -> tuple[np.ndarray | None, str]:
    """``(array, "")`` for a member that meets ``spec``, else ``(None, what is wrong)``."""
    if not data:
        return None, "is empty"
    try:
        z = read_npy(data)
    except (ValueError, OSError, EOFError) as e:
        return None, f"is not a readable array ({str(e)[:80]})"
    if not isinstance(z, np.ndarray) or z.dtype != np.float16:
        return None, f"has dtype {getattr(z, 'dtype', type(z).__name__)}, expected float16"
    if z.ndim != 2 or z.shape[1] != spec.dim:
        return None, f"has shape {z.shape}, expected (tokens, {spec.dim}) for this cache's text encoder"
    if not 1 <= z.shape[0] <= spec.max_tokens:
        return None, f"has {z.shape[0]} tokens, the cache's text encoder gives 1 to {spec.max_tokens}"
    if not np.isfinite(z).all():
        return None, "holds non-finite values"
    return z, ""


def read_embeddings(members: dict[str, bytes | None], caption: str, meta: dict[str, Any],
                    spec: TextSpec) -> tuple[dict[str, np.ndarray] | None, str, str]:
    """The embeddings of every caption of a sample, ``{name: (n, D) float16}``, or ``(None, reason,
    detail)`` with reason ``missing_text_embedding`` or ``bad_text_embedding``."""
    out = {}
    for name in caption_names(caption, meta):
        key = member(name)
        if key not in members:
            return None, "missing_text_embedding", f"no {key} for its caption {name!r} (re-run videogen encode)"
        z, problem = embedding_problem(members[key], spec)
        if z is None:
            return None, "bad_text_embedding", f"{key} {problem}"
        out[name] = z
    return out, "", ""
