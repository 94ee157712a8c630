"""Precomputed caption embeddings: the text side of the encode path.

``videogen encode --text-encoder DIR`` runs the frozen text encoder over every caption a DiT may pick
(:func:`videogen.data.text_embeddings.caption_names`) and stores float16 ``(n, D)`` arrays trimmed
to the ``n`` valid tokens (:func:`encode_captions`). The cache's ``dataset.json`` records the encoder
under ``created_by.text_encoder`` (:func:`cache_record`): its folder, the sha256 of its weights,
config and tokenizer files, its width and max length, and the encoded ``NULL_CAPTION`` (caption
dropout's and guidance's "no caption"), so a DiT trained on the cache needs no encoder at all
(:func:`text_cache_for` decides it at setup; :func:`check_cache_record` refuses a cache of another
encoder; :func:`null_from_record`, :func:`pad_embeddings` rebuild exactly what the live encoder
gives, rounded to float16).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videogen.pretrained import sha256_files

log = logging.getLogger("videogen.text")

# the files that decide what an encoder outputs (weights, config, tokenizer); other formats of the
# same weights that hub folders also carry (pytorch_model.bin, tf_model.h5, ...) are left out
NULL_CAPTION = ""  # "no caption": what caption dropout trains on and the guided sampler's null branch
IDENTITY_SUFFIXES = (".safetensors", ".json", ".model", ".txt")
FLOAT16_MAX = 65504.0


def text_encoder_identity(path_or_name: str | None, max_length: int, layer: int = -1) -> dict[str, Any]:
    """What makes two encoders' embeddings the same, without loading the model: the local folder, the
    sha256 of its weights, config and tokenizer files (name and bytes of each ``*.safetensors``,
    ``*.json``, ``*.model``, ``*.txt``, in name order), the max length and the hidden state used
    (``layer``, recorded only when not the last, so caches of the last layer keep their identity). Reads every weight byte
    once (about a minute for T5-XXL's 19 GB)."""
    from videogen.models.text import resolve_text_encoder

    source = resolve_text_encoder(path_or_name)
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"text encoder {path_or_name!r}: precomputed text embeddings need a local model "
                                "folder (hub names are not hashed): save the model to a folder and pass that")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IDENTITY_SUFFIXES)
    if not any(p.suffix == ".safetensors" for p in files):
        raise FileNotFoundError(f"text encoder folder {folder}: no *.safetensors weights (only safetensors are "
                                "hashed and loaded)")
    return {"source": str(folder), "sha256": sha256_files(files), "max_length": int(max_length),
            **({"layer": int(layer)} if layer != -1 else {})}


@torch.no_grad()
def encode_captions(encoder, texts: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """float16 ``(n, D)`` per text from a ``FrozenTextEncoder``: its tokens trimmed to the ``n`` valid
    ones. The mask must be ``n`` ones then zeros (right padding), so the length alone restores it."""
    out = []
    for i in range(0, len(texts), batch_size):
        tokens, mask = encoder.encode(texts[i: i + batch_size])  # (B, L, D), (B, L)
        lengths = mask.sum(1)
        prefix = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
        if not torch.equal(prefix, mask):
            raise ValueError(f"text encoder {encoder.path_or_name}: its tokenizer pads on the left (or masks "
                             "inside a caption); precomputed embeddings need right padding (tokenizer padding_side "
                             "'right')")
        if (lengths < 1).any():
            raise ValueError(f"text encoder {encoder.path_or_name}: a caption encodes to no tokens at all")
        out += [t[: int(n)].float().cpu().numpy().astype(np.float16) for t, n in zip(tokens, lengths)]
    return out


def cache_record(encoder, identity: dict[str, Any]) -> dict[str, Any]:
    """``created_by.text_encoder`` of a cache, without its ``null_caption`` yet (:func:`null_record`, run
    where the captions are encoded): the identity, the width and the class."""
    return {**identity, "width": int(encoder.dim), "class": type(encoder.encoder).__name__}


def null_record(encoder) -> dict[str, Any]:
    """``created_by.text_encoder.null_caption``: the encoded ``NULL_CAPTION`` (float16 values as JSON
    numbers, exact)."""
    null = encode_captions(encoder, [NULL_CAPTION])[0]
    return {"text": NULL_CAPTION, "tokens": [[float(v) for v in row] for row in null]}


def check_cache_record(record: Any, where: str, mine: dict[str, Any], text_dim: int) -> None:
    """Refuse (ValueError) a cache whose embeddings another encoder (or max length) made, or whose width
    is not the DiT's ``text_dim``. ``mine`` is :func:`text_encoder_identity` of the DiT's encoder."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: created_by.text_encoder must be an object; re-run `videogen encode --text-encoder`")
    if record.get("sha256") != mine["sha256"]:
        raise ValueError(
            f"{where}: its caption embeddings were written by the text encoder at {record.get('source')} (sha256 "
            f"{str(record.get('sha256'))[:12]}), but this DiT is configured with {mine['source']} "
            f"({mine['sha256'][:12]}). Set model.init_args.text_encoder to the cache's encoder, re-run "
            f"`videogen encode --text-encoder {mine['source']}`, or set text_embeddings: encoder to ignore them.")
    if record.get("max_length") != mine["max_length"]:
        raise ValueError(f"{where}: its caption embeddings were written with --text-max-length "
                         f"{record.get('max_length')}, this DiT has text_max_length={mine['max_length']}: make them "
                         "equal")
    if record.get("layer", -1) != mine.get("layer", -1):
        raise ValueError(f"{where}: its caption embeddings are the text encoder's hidden state "
                         f"{record.get('layer', -1)!r}, this DiT uses text_layer={mine.get('layer', -1)}: re-run "
                         "`videogen encode --text-layer` with the DiT's, or set text_embeddings: encoder")
    if record.get("width") != text_dim:
        raise ValueError(f"{where}: its caption embeddings are created_by.text_encoder.width={record.get('width')!r} "
                         f"wide, the DiT's text_dim is {text_dim}: make them equal")


def null_from_record(record: dict[str, Any], where: str) -> np.ndarray:
    """The encoded ``NULL_CAPTION`` a cache records, float16 ``(n, width)``, checked (hostile input)."""
    null = record.get("null_caption") if isinstance(record, dict) else None
    rows = null.get("tokens") if isinstance(null, dict) else None
    width, max_length = record.get("width"), record.get("max_length")
    ok = (isinstance(rows, list) and isinstance(max_length, int) and 1 <= len(rows) <= max_length
          and all(isinstance(r, list) and len(r) == width for r in rows)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and abs(v) <= FLOAT16_MAX for r in rows for v in r))
    if not ok:
        raise ValueError(f"{where}: created_by.text_encoder.null_caption.tokens is not a list of 1 to {max_length} "
                         f"rows of {width} float16 numbers; re-run `videogen encode --text-encoder ...`")
    return np.asarray(rows, dtype=np.float16)


def pad_embeddings(embeddings: list[torch.Tensor], max_length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Trimmed embeddings ``(n_i, D)`` -> ``(B, max_length, D)`` float32 with zeros past each ``n_i`` and the
    mask ``(B, max_length)``: what the live encoder returns for the same captions."""
    dim = embeddings[0].shape[-1]
    tokens = torch.zeros(len(embeddings), max_length, dim, device=device)
    lengths = torch.tensor([e.shape[0] for e in embeddings], device=device)
    for i, e in enumerate(embeddings):
        tokens[i, : e.shape[0]] = e.to(device=device, dtype=torch.float32)
    mask = torch.arange(max_length, device=device)[None] < lengths[:, None]
    return tokens, mask


def text_cache_for(mode: str, shards: list, text_encoder: str | None, max_length: int, text_dim: int,
                   val_prompts: list[str] | None, layer: int = -1) -> dict[str, Any] | None:
    """What a DiT with ``text_embeddings: mode`` takes its captions from, given its train/val ``shards``:
    None (the live encoder) or ``{"source", "null" (n, D) float16 tensor, "prompts" {prompt: (tokens, mask)}}``.

    ``cache`` (and ``auto`` when every shard's folder is a local latent cache with caption embeddings)
    checks each cache's record against ``text_encoder`` (hashed, not loaded), ``max_length``, the hidden
    state ``layer`` and ``text_dim``; ``val_prompts`` are then encoded here, once, on the CPU, and the encoder let go.
    Raises ValueError for a cache that does not fit (``cache`` also for shards without embeddings)."""
    from videogen.data.manifest import DatasetManifest
    from videogen.data.shards import expand_urls
    from videogen.encoding import latent_cache_folders

    if mode == "encoder":
        return None
    folders = {f for s in shards for f in latent_cache_folders(s)}
    records = {f: DatasetManifest.find(f).created_by.get("text_encoder") for f in folders}
    urls = [u for s in shards for u in expand_urls(s)]
    with_text = {f.resolve() for f, r in records.items() if r is not None}
    if not (urls and all("://" not in u and Path(u).resolve().parent in with_text for u in urls)):
        if mode == "cache":
            raise ValueError("model.init_args.text_embeddings=cache: the train/val shards must all be local latent "
                             "caches written with `videogen encode --text-encoder` (their dataset.json records the "
                             "text encoder); re-encode them, or set text_embeddings: encoder")
        if with_text:
            log.warning("some shard folders carry caption embeddings (%s) but not all train/val shards do: captions "
                        "go through the live text encoder", ", ".join(map(str, sorted(with_text))))
        return None
    mine = text_encoder_identity(text_encoder, max_length, layer)
    for folder, record in sorted(records.items()):
        if record is not None:
            check_cache_record(record, str(folder / "dataset.json"), mine, text_dim)
    folder, record = next((f, r) for f, r in sorted(records.items()) if r is not None)
    null = null_from_record(record, str(folder / "dataset.json"))
    prompts = {}
    if val_prompts:  # the only time training loads the encoder: once, on the CPU, then let go
        from videogen.models.text import FrozenTextEncoder

        encoder = FrozenTextEncoder(mine["source"], max_length, dtype="float32", layer=layer)
        unique = list(dict.fromkeys(val_prompts))
        tokens, mask = encoder(unique)
        prompts = {p: (tokens[i: i + 1], mask[i: i + 1]) for i, p in enumerate(unique)}
        del encoder
    log.info("captions come from the caption embeddings of %s (text encoder %s); no text encoder is loaded for "
             "training", ", ".join(str(f) for f in sorted(folders)), mine["source"])
    return {"source": mine["source"], "null": torch.from_numpy(null), "prompts": prompts}
