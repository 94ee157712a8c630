"""``RecaptionModule``: the predict-time wrapper around a trained captioner (used by ``videogen recaption``).

The same shape as :class:`~videogen.pipelines.encode_module.EncodeModule`: a predict run through the Trainer,
whose predictions :class:`videogen.pipelines.shard_writer.CaptionShardWriter` writes to shards. A
batch is a shard's next samples (``CopiedSample``, decoded frames or None for one that cannot be
captioned); ``predict_step`` captions those with frames and hands every sample on to be copied.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from videogen.pipelines.captioning import CaptionRunner, load_captioner


class RecaptionModule(LightningModule):
    def __init__(self, ckpt: str, max_new_tokens: int = 96, sampling: str = "greedy", num_beams: int = 4,
                 top_p: float = 0.9, temperature: float = 1.0, seed: int = 0, use_txt: bool = False,
                 use_cache: bool = True):
        """
        Args:
            ckpt: the captioner export folder or checkpoint (``videogen.pipelines.captioning.load_captioner``);
                a captioner trained on latents brings its VAE, refused when its weights changed.
            max_new_tokens, sampling, num_beams, top_p, temperature: generation (``generate_tokens``).
            seed: ``top-p`` sampling's seed; shard ``i`` of this rank's shards samples with ``seed + i``.
            use_txt: prompt the captioner with each sample's ``txt`` (trained with ``txt_prob > 0``).
            use_cache: generate with the KV cache (False: slower, for checks).
        """
        super().__init__()
        self.export, self.tokens = load_captioner(ckpt)
        self.runner = CaptionRunner(self.export, self.tokens)  # on the CPU; moved to the predict device at start
        self.captioner = self.runner.model  # submodules: the Trainer places them
        self.vae = self.runner.vae.module if self.runner.vae is not None else None
        self.generate_kw = {"max_new_tokens": max_new_tokens, "method": sampling, "num_beams": num_beams,
                            "top_p": top_p, "temperature": temperature, "use_cache": use_cache}
        self.seed, self.use_txt = seed, use_txt
        self._shard: str | None = None
        self._generator: torch.Generator | None = None

    def on_predict_start(self) -> None:
        self.runner.to(self.device)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        if "shard_done" in batch or "shard_failed" in batch:
            return batch
        if batch["url"] != self._shard:  # a new shard: its own seed (same seed, same captions)
            self._shard = batch["url"]
            self._generator = torch.Generator(self.device).manual_seed(self.seed + batch["shard_index"])
        todo = [s for s in batch["samples"] if s.frames is not None]
        if todo:
            captions = self.runner([s.frames for s in todo], [s.txt for s in todo] if self.use_txt else None,
                                   generator=self._generator, **self.generate_kw)
            for s, caption in zip(todo, captions):
                s.caption = caption
        return batch
