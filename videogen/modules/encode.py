"""``EncodeModule``: the predict-time wrapper around the frozen VAE (used by ``videogen encode``).

A predict run through the Trainer gets devices, precision, DDP and SLURM for free; the latents it
returns are written to shards by :class:`videogen.callbacks.shard_writer.LatentShardWriter`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lightning.pytorch import LightningModule

from videogen.data.stages import to_float
from videogen.encoding import encode_latents, load_vae


class EncodeModule(LightningModule):
    def __init__(self, vae: str, chunk_frames: int | None = None, tile: tuple[int, int] | None = None,
                 memory_budget: float | None = None):
        """
        Args:
            vae: the stage-1 export folder (or checkpoint), a diffusers video-VAE folder or a
                ``videogen vae-stats`` file (``videogen.encoding.load_vae``).
            chunk_frames, tile: chunked / tiled encoding for long or large clips (see VideoAutoencoder.encode);
                both None: planned per clip from ``memory_budget`` (``videogen.encoding.encode_latents``).
            memory_budget: GB the VAE's activations may use (None: from the device, ``videogen.memory``).
        """
        super().__init__()
        self.export = load_vae(vae)
        self.vae = self.export.module
        self.chunk_frames, self.tile = chunk_frames, tuple(tile) if tile else None
        self.memory_budget = memory_budget

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
                "fps": batch["fps"].tolist()}
