"""``CaptionDecoder``: a causal transformer over caption tokens with cross-attention to visual tokens.

Pre-norm blocks (causal self-attention, cross-attention, MLP), learned absolute positions, the output
projection tied to the token embedding. Attention is ``F.scaled_dot_product_attention``. A KV cache
(:class:`KVCache`) makes generation cost one token per step: the self-attention keys/values of the
tokens seen so far and the cross-attention keys/values of the visual tokens (computed once).

Rows may be left-padded (prompts of different lengths in one batch): ``key_mask`` marks real tokens
and ``positions`` gives each token its position counted over real tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass
class KVCache:
    length: int = 0  # tokens already in the cache
    self_kv: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # per block, (B, h, length, dh)
    cross_kv: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # per block, (B, h, N, dh)

    def reorder(self, rows: Tensor) -> "KVCache":
        """Keep rows ``rows`` (beam search): every cached tensor indexed along the batch."""
        pick = lambda kv: (kv[0].index_select(0, rows), kv[1].index_select(0, rows))  # noqa: E731
        return KVCache(self.length, [pick(kv) for kv in self.self_kv], [pick(kv) for kv in self.cross_kv])


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj1 = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.q, self.kv, self.proj2 = nn.LayerNorm(dim), nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def _heads(self, x: Tensor) -> Tensor:
        return rearrange(x, "b l (h d) -> b h l d", h=self.heads)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)  # (B, N, D) each
        return self._heads(k), self._heads(v)

    def forward(self, x: Tensor, self_mask: Tensor, past: tuple[Tensor, Tensor] | None,
                cross: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        q, k, v = (self._heads(t) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))  # (B, h, L, dh)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, h, cached + L, dh)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=self_mask)
        x = x + self.proj1(rearrange(a, "b h l d -> b l (h d)"))
        a = F.scaled_dot_product_attention(self._heads(self.q(self.norm2(x))), *cross)
        x = x + self.proj2(rearrange(a, "b h l d -> b l (h d)"))
        return x + self.mlp(self.norm3(x)), (k, v)


class CaptionDecoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int = 192, depth: int = 3, heads: int = 4, max_length: int = 128):
        super().__init__()
        self.max_length = max_length
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, ids: Tensor, memory: Tensor, key_mask: Tensor | None = None, positions: Tensor | None = None,
                cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """Logits ``(B, L, V)`` of the next token after each of ``ids`` ``(B, L)``, and the updated cache.

        ``key_mask`` ``(B, cached + L)``: True for real tokens (None: all real); ``positions`` ``(B, L)``.
        """
        b, length = ids.shape
        offset = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(offset, offset + length, device=ids.device).expand(b, length)
        if int(positions.max()) >= self.max_length:
            raise ValueError(f"caption of {int(positions.max()) + 1} tokens is longer than the decoder's "
                             f"max_length={self.max_length}: raise max_length or lower max_new_tokens")
        # F.embedding, not self.pos[positions]: the indexing's backward adds the repeated positions' gradients
        # with atomic adds on a multi-threaded CPU, in a different order each run (the weights then differ)
        x = self.embed(ids) + F.embedding(positions, self.pos)  # (B, L, D)
        q_col = torch.arange(offset, offset + length, device=ids.device)[:, None]  # (L, 1)
        k_col = torch.arange(offset + length, device=ids.device)[None, :]  # (1, K)
        allowed = (k_col <= q_col)[None]  # (1, L, K): causal
        if key_mask is not None:  # padding is never attended to, but a token always sees itself
            allowed = (allowed & key_mask[:, None, :]) | (k_col == q_col)[None]
        mask = allowed[:, None]  # (B or 1, 1, L, K)
        if cache is None or not cache.cross_kv:
            cross = [blk.memory_kv(memory) for blk in self.blocks]
        else:
            cross = cache.cross_kv
        new_self = []
        for i, blk in enumerate(self.blocks):
            past = cache.self_kv[i] if cache is not None and cache.self_kv else None
            x, kv = blk(x, mask, past, cross[i])
            new_self.append(kv)
        logits = self.norm(x) @ self.embed.weight.T  # (B, L, V): tied output projection
        return logits, KVCache(offset + length, new_self, cross)
