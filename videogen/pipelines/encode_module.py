"""``EncodeModule``: the predict-time wrapper around the frozen VAE (used by ``videogen encode``).

A predict run through the Trainer gets devices, precision, DDP and SLURM for free; the latents it
returns are written to shards by :class:`videogen.pipelines.shard_writer.LatentShardWriter`. With a
``text_encoder`` it also returns each sample's caption embeddings (``videogen/text_encoding.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lightning.pytorch import LightningModule

from videogen.data.stages import to_float
from videogen.encoding import encode_latents, load_vae


class EncodeModule(LightningModule):
    def __init__(self, vae: str, chunk_frames: int | None = None, tile: tuple[int, int] | None = None,
                 memory_budget: float | None = None, text_encoder: str | None = None, text_max_length: int = 64,
                 text_layer: int = -1):
        """
        Args:
            vae: the stage-1 export folder (or checkpoint), a diffusers video-VAE folder or a
                ``videogen vae-stats`` file (``videogen.encoding.load_vae``).
            chunk_frames, tile: chunked / tiled encoding for long or large clips (see VideoAutoencoder.encode);
                both None: planned per clip from ``memory_budget`` (``videogen.encoding.encode_latents``).
            memory_budget: GB the VAE's activations may use (None: from the device, ``videogen.memory``).
            text_encoder: also store caption embeddings made by this encoder folder (``default``: the
                quickstart's all-MiniLM-L6-v2); None: latents only.
            text_max_length: the encoder's tokens per caption (the DiT's ``text_max_length``).
            text_layer: the encoder's hidden state stored (the DiT's ``text_layer``; -1 the last).
        """
        super().__init__()
        self.export = load_vae(vae)
        self.vae = self.export.module
        self.chunk_frames, self.tile = chunk_frames, tuple(tile) if tile else None
        self.memory_budget = memory_budget
        self.text_encoder = None
        self.text_record: dict[str, Any] | None = None  # the cache's created_by.text_encoder, given its null here
        if text_encoder is not None:
            from videogen.models.text import FrozenTextEncoder, resolve_text_encoder

            self.text_encoder = FrozenTextEncoder(resolve_text_encoder(text_encoder), text_max_length,
                                                  layer=text_layer)

    def on_predict_start(self) -> None:
        """The encoded NULL_CAPTION, on the device and in the dtype that encode the captions."""
        if self.text_encoder is not None and self.text_record is not None:
            from videogen.text_encoding import null_record

            self.text_record["null_caption"] = null_record(self.text_encoder)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if "shard_done" in batch:
            return batch
        batch = to_float(batch)
        videos = batch["video"] if isinstance(batch["video"], list) else list(batch["video"])
        latents = []
        for v in videos:  # clips of different sizes (packing): one at a time
            z = encode_latents(self.vae, v[None], self.chunk_frames, self.tile, self.memory_budget)[0]  # (C, t, h, w)
            latents.append(z.float().cpu().numpy().astype(np.float16))
        return {"latents": latents, "pixels": [tuple(v.shape[1:]) for v in videos], "key": batch["key"],
                "url": batch["url"], "caption": batch["caption"], "meta": batch["meta"],
                "fps": batch["fps"].tolist(), **self.caption_embeddings(batch)}

    def caption_embeddings(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``{"text": [{member: float16 (n, D)} per sample]}`` for every caption of each sample, or {}."""
        if self.text_encoder is None:
            return {}
        from videogen.data.text_embeddings import caption_names, caption_text, member
        from videogen.text_encoding import encode_captions

        wanted = [{member(n): caption_text(n, c, m) for n in caption_names(c, m)}
                  for c, m in zip(batch["caption"], batch["meta"])]
        texts = list(dict.fromkeys(t for w in wanted for t in w.values()))
        arrays = dict(zip(texts, encode_captions(self.text_encoder, texts)))
        return {"text": [{k: arrays[t] for k, t in w.items()} for w in wanted]}
