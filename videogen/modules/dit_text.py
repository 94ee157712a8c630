"""The DiT module's text path: captions and prompts as the tokens the DiT is conditioned on.

Caption tokens come from one of two places, decided once at setup (``text_embeddings``): the live frozen
text encoder (loaded on first use), or the caption embeddings of a latent cache written with
``videogen encode --text-encoder`` (``videogen.text_encoding.text_cache_for``; then no encoder is ever
loaded). Either way the "no caption" is the encoded :data:`~videogen.text_encoding.NULL_CAPTION`: what caption
dropout trains on and the guided sampler's null branch. Per sample, the caption trained on is picked by the
``captions`` weights (``videogen.data.text_embeddings.picked``) or dropped (``caption_dropout``).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from videogen.data.text_embeddings import caption_text, picked
from videogen.errors import ConfigError
from videogen.text_encoding import NULL_CAPTION
from videogen.text_encoding import pad_embeddings, text_cache_for


class CaptionText:
    """Mixed into :class:`videogen.modules.dit.DiTModule`: it reads ``hparams`` (``text_encoder``,
    ``text_max_length``, ``text_layer``, ``text_embeddings``, ``val_prompts``, ``caption_dropout``), ``self.dit``,
    ``self.captions``, ``self._frozen`` (the frozen encoders, outside the state dict) and
    ``self._text_cache`` (set at setup from :meth:`_decide_text_cache`)."""

    @property
    def text_encoder(self):
        if "text" not in self._frozen:
            from videogen.models.text import FrozenTextEncoder

            self._frozen["text"] = FrozenTextEncoder(  # a pretrained family's own text path (CogVideoX: unmasked)
                self.hparams.text_encoder, self.hparams.text_max_length, cache_size=4096,
                attend_padding=getattr(self.dit, "text_attends_padding", False), layer=self.hparams.text_layer)
        enc = self._frozen["text"]
        return enc.to(self.device)

    def _decide_text_cache(self, dm) -> dict[str, Any] | None:
        """Captions from the shards' caption embeddings or not (``text_embeddings``), checked against this
        DiT's encoder (``videogen.text_encoding.text_cache_for``); a bad cache is a :class:`ConfigError`."""
        h = self.hparams
        shards = [s for s in (getattr(dm, "train_shards", None), getattr(dm, "val_shards", None)) if s]
        mode = h.text_embeddings
        if getattr(self.dit, "text_attends_padding", False):  # CogVideoX, LTX: the padding's outputs are input too
            if mode == "cache":
                raise ConfigError(f"model.init_args.text_embeddings=cache: {type(self.dit).__name__}'s text encoder "
                                  "runs over the padded caption and the model reads the padding's outputs, which "
                                  "cached caption embeddings do not hold: set text_embeddings: encoder")
            mode = "encoder"
        try:
            return text_cache_for(mode, shards, h.text_encoder, h.text_max_length, self.dit.text_dim,
                                  h.val_prompts, h.text_layer)
        except (ValueError, OSError) as e:  # OSError: the configured encoder's folder cannot be hashed
            raise ConfigError(str(e)) from None

    def prompt_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D), (B, L) for prompts: the live encoder's, or with captions from a cache the tokens
        of the validation prompts encoded at setup."""
        if self._text_cache is None:
            return self.encode_text(prompts)
        missing = [p for p in prompts if p not in self._text_cache["prompts"]]
        if missing:
            raise RuntimeError(f"prompts {missing[:3]} were not encoded at setup: with captions from a latent cache "
                               "only model.init_args.val_prompts are; sample others with `videogen sample`")
        rows = [self._text_cache["prompts"][p] for p in prompts]
        return (torch.cat([t for t, _ in rows]).to(self.device), torch.cat([m for _, m in rows]).to(self.device))

    def caption_tokens(self, batch: dict[str, Any], rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D), (B, L) of the captions :meth:`pick_caption_names` picks: the live encoder's, or the
        batch's caption embeddings (a latent cache) padded as the encoder pads them."""
        names = self.pick_caption_names(batch, rng)
        if self._text_cache is None:
            return self.encode_text([NULL_CAPTION if n is None else caption_text(n, c, m)
                                     for n, c, m in zip(names, batch["caption"], batch["meta"])])
        if "text" not in batch:
            raise RuntimeError("captions come from a latent cache's caption embeddings (text_embeddings), but this "
                               "batch carries none; its shards were not written with `videogen encode --text-encoder`")
        null = self._text_cache["null"]
        rows = [null if n is None else emb[n] for n, emb in zip(names, batch["text"])]
        return pad_embeddings(rows, self.hparams.text_max_length, self.device)

    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D), (B, L); a :data:`NULL_CAPTION` row is exactly :meth:`null_caption`'s."""
        tokens, mask = self.text_encoder(captions)
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        dropped = torch.tensor([c == NULL_CAPTION for c in captions], device=self.device)
        if dropped.any():
            null_tokens, null_mask = self.null_caption()
            tokens = torch.where(dropped[:, None, None], null_tokens.to(tokens.dtype), tokens)
            mask = torch.where(dropped[:, None], null_mask, mask)
        return tokens, mask

    def null_caption(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoded "no caption" (1, L, D), (1, L): caption dropout's input and the guided sampler's null branch."""
        key = ("null", str(self.device))
        if key not in self._frozen and self._text_cache is not None:  # as the cache recorded it
            self._frozen[key] = pad_embeddings([self._text_cache["null"]], self.hparams.text_max_length, self.device)
        if key not in self._frozen:
            tokens, mask = self.text_encoder([NULL_CAPTION])
            self._frozen[key] = (tokens.to(self.device), mask.to(self.device))
        return self._frozen[key]

    def pick_caption_names(self, batch: dict[str, Any], rng: random.Random) -> list[str | None]:
        """Per sample, the caption trained on (``captions`` weights; a missing one falls back to ``txt``,
        ``videogen.data.text_embeddings.picked``), or None where dropped (``caption_dropout``) or absent."""
        names, weights = list(self.captions), list(self.captions.values())
        out = []
        for caption, meta in zip(batch["caption"], batch["meta"]):
            name = picked(rng.choices(names, weights)[0], caption, meta)
            out.append(None if rng.random() < self.hparams.caption_dropout else name)
        return out
