"""``VideoCaptioner``: the built-in video captioner (frame encoder + causal caption decoder).

Both captioners (this one and :class:`~videogen.models.captioner.hf_adapter.HFVisionCaptioner`)
offer the same small interface, which the training module and
:func:`~videogen.models.captioner.generate.generate_tokens` use:

* ``encode(video (B, C, T, H, W)) -> memory (B, N, D)``: visual tokens;
* ``null_memory(batch) -> (B, 1, D)``: "no video" (text-only prompt upsampling);
* ``decode(memory, ids, key_mask, positions, cache) -> (logits (B, L, V), cache)``;
* ``reorder_cache(cache, rows)``; attributes ``vocab_size``, ``num_frames``, ``in_channels`` and
  ``max_length`` (the most token positions the decoder takes; generation stops there).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from videogen.models.captioner.decoder import CaptionDecoder, KVCache
from videogen.models.captioner.encoder import FrameEncoder
from videogen.models.configurable import Configurable


class VideoCaptioner(Configurable, nn.Module):
    def __init__(self, vocab_size: int = 30522, dim: int = 192, depth: int = 3, heads: int = 4,
                 max_length: int = 128, in_channels: int = 3, channels: tuple[int, ...] = (32, 64, 128),
                 num_frames: int = 8, grid: tuple[int, int] = (4, 4), frame_diffs: bool = True,
                 stem_stride: int = 1):
        """
        Args:
            vocab_size: the tokenizer's vocabulary (the training module checks it matches).
            dim, depth, heads: the decoder's width, blocks and attention heads.
            max_length: the longest token sequence (prompt + caption) the decoder takes.
            in_channels: 3 for pixels, the VAE's latent channels when trained on latents.
            channels: the frame CNN's widths, one stride-2 stage each.
            num_frames: frames sampled evenly from each clip.
            grid: average-pooled tokens per frame (rows, columns).
            frame_diffs: add frame differences to the CNN's input (motion).
            stem_stride: stride of the CNN's first conv (2: a quarter of the cost, for 64+ pixel frames).
        """
        super().__init__()
        self.vocab_size, self.num_frames, self.in_channels = vocab_size, num_frames, in_channels
        self.max_length = max_length
        self.encoder = FrameEncoder(in_channels, dim, tuple(channels), num_frames, tuple(grid), frame_diffs,
                                    stem_stride)
        self.decoder = CaptionDecoder(vocab_size, dim, depth, heads, max_length)
        self.null = nn.Parameter(torch.zeros(1, 1, dim))

    def encode(self, video: Tensor) -> Tensor:
        # + 0 * null: the no-video embedding is in every step's graph, so DDP finds no unused parameter
        return self.encoder(video) + 0.0 * self.null  # (B, N, D)

    def null_memory(self, batch: int) -> Tensor:
        return self.null.expand(batch, -1, -1)  # (B, 1, D)

    def decode(self, memory: Tensor, ids: Tensor, key_mask: Tensor | None = None, positions: Tensor | None = None,
               cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        return self.decoder(ids, memory, key_mask, positions, cache)

    @staticmethod
    def reorder_cache(cache: KVCache, rows: Tensor) -> KVCache:
        return cache.reorder(rows)


def captioner_tiny(vocab_size: int = 30522) -> VideoCaptioner:
    """The debug flavour used by tests (a few hundred thousand parameters besides the embedding)."""
    return VideoCaptioner(vocab_size, dim=32, depth=1, heads=2, max_length=64, channels=(8, 16), num_frames=4,
                          grid=(2, 2))
