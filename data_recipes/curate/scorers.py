"""Pluggable model scorers: each adds one number to ``json["curation"]``.

A scorer is any object with a ``name`` (the score's key) and ``score(frames, caption, meta) ->
float``, where ``frames`` are the clip's analysis frames ``(T, h, w, 3)`` uint8 RGB. Scorers are
named by class path (``package.module.Class``, or ``package.module.Class=PATH`` to give the
constructor one argument, a local model folder): ``class_path`` is the only registry.

Built in: :class:`ClipScore`, caption-video similarity with a local Hugging Face CLIP model
(``clip_model``: a folder with ``config.json``, weights and tokenizer/processor files, loaded
offline). Without a model folder it is skipped, with one notice per run.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from data_recipes.curate.frames import spread

log = logging.getLogger("videogen.curate")


class Scorer(Protocol):
    name: str

    def score(self, frames: np.ndarray, caption: str, meta: dict[str, Any]) -> float: ...


class ClipScore:
    """Cosine similarity between the caption (``json.captions.long`` when there is one, else the
    ``txt``) and the mean image embedding of ``num_frames`` evenly spaced frames, by a CLIP model."""

    name = "clip_score"

    def __init__(self, model_path: str, num_frames: int = 4):
        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"clip_model {model_path}: no config.json there; give the local folder of a "
                                    "Hugging Face CLIP model (save_pretrained of the model and its processor)")
        self.model_path, self.num_frames = str(path), num_frames
        self._model = self._processor = None

    def _load(self) -> None:
        import torch
        from transformers import AutoProcessor, CLIPModel

        torch.set_num_threads(1)
        self._model = CLIPModel.from_pretrained(self.model_path, local_files_only=True).eval()
        self._processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)

    def score(self, frames: np.ndarray, caption: str, meta: dict[str, Any]) -> float:
        import torch

        if self._model is None:
            self._load()
        long = (meta.get("captions") or {}).get("long") if isinstance(meta.get("captions"), dict) else None
        text = long or caption
        images = [frames[i] for i in spread(len(frames), self.num_frames)]
        inputs = self._processor(text=[text], images=images, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            image = self._model.get_image_features(pixel_values=inputs["pixel_values"])  # (F, D)
            txt = self._model.get_text_features(input_ids=inputs["input_ids"],
                                                attention_mask=inputs.get("attention_mask"))  # (1, D)
        image, txt = _features(image), _features(txt)
        video = torch.nn.functional.normalize(image.mean(0, keepdim=True), dim=-1)
        return round(float((video * torch.nn.functional.normalize(txt, dim=-1)).sum()), 6)


def _features(out):
    """transformers returns a tensor, or (in newer versions) an output object holding one."""
    return out if hasattr(out, "mean") else out.pooler_output


def load_scorer(spec: str) -> Scorer:
    """``package.module.Class`` or ``package.module.Class=PATH`` -> an instance (PATH its one argument)."""
    path, _, arg = spec.partition("=")
    module_name, _, cls_name = path.strip().rpartition(".")
    if not module_name:
        raise ValueError(f"scorer {spec!r}: give a class path, package.module.Class[=PATH]")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"scorer {spec!r}: cannot import {path} ({e})") from e
    scorer = cls(arg) if arg else cls()
    if not isinstance(getattr(scorer, "name", None), str) or not callable(getattr(scorer, "score", None)):
        raise ValueError(f"scorer {spec!r}: {path} has no name attribute or score(frames, caption, meta) method")
    return scorer


def build_scorers(clip_model: str | None, specs: tuple[str, ...] | list[str], extra: list | None = None) -> list:
    """The run's scorers; a built-in one without its model folder is skipped with one notice."""
    scorers: list = []
    if clip_model:
        scorers.append(ClipScore(clip_model))
    else:
        log.warning("curate: clip_score skipped: no clip_model given (--clip-model DIR, a local Hugging Face "
                    "CLIP folder)")
    scorers += [load_scorer(s) for s in specs]
    scorers += list(extra or [])
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"two scorers write the same score name: {names}")
    return scorers
