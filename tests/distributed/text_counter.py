"""``TextEncoderCounter``: a test callback that counts, per rank, the text encoders built from setup on
and writes ``<out>/text-rank<R>.json`` at the end: how many were built, whether captions came from a
latent cache, whether an encoder is still held, and a sum per validation prompt's tokens."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback


class TextEncoderCounter(Callback):
    def __init__(self, out: str):
        self.out, self.built = Path(out), 0

    def setup(self, trainer, pl_module, stage: str) -> None:  # before the module's own setup
        from videogen.models import text

        original = text.FrozenTextEncoder.__init__

        def counting(encoder, *args, **kwargs):
            self.built += 1
            original(encoder, *args, **kwargs)

        text.FrozenTextEncoder.__init__ = counting

    def on_train_end(self, trainer, pl_module) -> None:
        cache = pl_module._text_cache
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"text-rank{trainer.global_rank}.json").write_text(json.dumps({
            "built": self.built, "from_cache": cache is not None, "holds_encoder": "text" in pl_module._frozen,
            "prompts": {p: float(t.double().sum()) for p, (t, _) in (cache or {}).get("prompts", {}).items()}}))
