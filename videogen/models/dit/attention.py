"""Self- and cross-attention with QK-norm, through ``scaled_dot_product_attention`` or FlexAttention.

A self-attention mask is either ``None`` (every token sees every token: one clip per
row), a boolean SDPA mask (B, 1, N, K) with True = may attend, or a FlexAttention
``BlockMask``; :func:`attend` dispatches on the mask's type, so the choice is made
once per forward (:func:`self_attention_mask`) and blocks stay free of branches on data.

Text reaches the tokens in one of two ways (``DiT(text_attention=...)``): a separate
:class:`CrossAttention` after self-attention (PixArt-alpha), or *joint* attention: the
caption's keys and values join the self-attention's (K = text keys + N), one softmax over
both (as CogVideoX and SD3 do, with the text keys read-only: text tokens are not queries).
"""

from __future__ import annotations

from typing import Literal, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from videogen.models.dit.rope import apply_rotary

try:  # FlexAttention arrived in torch 2.5
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    BlockMask = None  # type: ignore[assignment,misc]
    create_block_mask = flex_attention = None  # type: ignore[assignment]

AttentionBackend = Literal["auto", "sdpa", "flex"]
Mask = Union[Tensor, "BlockMask", None]


def flex_available(device: torch.device, needs_grad: bool) -> bool:
    """FlexAttention runs here: torch has it, and on CPU only without autograd (no CPU backward kernel)."""
    return flex_attention is not None and (device.type == "cuda" or (device.type == "cpu" and not needs_grad))


def self_attention_mask(
    segment_ids: Tensor, backend: AttentionBackend, needs_grad: bool, key_segment_ids: Tensor | None = None
) -> Mask:
    """Block-diagonal mask from per-token clip ids (B, N): tokens attend only inside their own clip.

    ``key_segment_ids`` (B, K) gives the keys' clip ids when the keys are not the queries (joint
    attention: text keys first, then the N tokens; a key id that matches no query id, e.g. -2 for a
    padded text token, is never attended). ``auto`` picks FlexAttention on CUDA (block-sparse: masked-out blocks cost nothing)
    and the SDPA boolean mask elsewhere; ``flex`` on a device where it cannot run raises.
    """
    device = segment_ids.device
    keys = segment_ids if key_segment_ids is None else key_segment_ids
    use_flex = backend == "flex" or (backend == "auto" and device.type == "cuda" and flex_available(device, needs_grad))
    if not use_flex:
        return (segment_ids[:, :, None] == keys[:, None, :])[:, None]  # (B, 1, N, K)
    if not flex_available(device, needs_grad):
        raise RuntimeError(
            f"DiT init arg attention_backend='flex' cannot run on {device.type}"
            f"{' with autograd (torch has no FlexAttention backward on CPU)' if device.type == 'cpu' else ''}: "
            "set attention_backend to 'auto' or 'sdpa'."
        )
    (batch, n), k_len = segment_ids.shape, keys.shape[1]

    def same_clip(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
        return segment_ids[b, q] == keys[b, k]

    return create_block_mask(same_clip, batch, None, n, k_len, device=device)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Mask) -> Tensor:
    """(B, heads, Nq, d) queries over (B, heads, Nk, d) keys/values -> (B, heads, Nq, d)."""
    if BlockMask is not None and isinstance(mask, BlockMask):
        return flex_attention(q, k, v, block_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all spacetime tokens, RMS QK-norm, rotary positions.

    With ``text_keys`` (joint attention) the text tokens (B, M, D) get their own key/value
    projection and their keys/values are put before the tokens' (no rotation: text has no
    position in the clip), so ``mask`` is (B, 1, N, M + N).

    ``sequence_parallel`` is a hook point set from outside (videogen/parallel/sequence.py): when set,
    this rank holds N/P of the tokens and it runs the attention core on all N for heads/P.
    """

    sequence_parallel = None

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, text_keys: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.text_kv = nn.Linear(dim, 2 * dim) if text_keys else None
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Mask, text: Tensor | None = None) -> Tensor:
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        q, k = self.q_norm(qkv[0]), self.k_norm(qkv[1])  # (B, heads, N, head_dim)
        v = qkv[2]
        q, k = apply_rotary(q, *rope).type_as(v), apply_rotary(k, *rope).type_as(v)  # norms may run in fp32 under autocast
        if self.text_kv is not None:
            text_kv = rearrange(self.text_kv(text), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
            k = torch.cat([self.k_norm(text_kv[0]).type_as(v), k], dim=2)  # (B, heads, M + N, head_dim)
            v = torch.cat([text_kv[1], v], dim=2)
        sp = self.sequence_parallel
        out = attend(q, k, v, mask) if sp is None else sp.attend(attend, q, k, v, mask)  # (B, heads, N, head_dim)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Tokens (B, N, D) attend to text tokens (B, M, D); mask (B, 1, N, M) bool, True = may attend."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, text: Tensor, mask: Tensor) -> Tensor:
        q = self.q_norm(rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads))
        kv = rearrange(self.kv(text), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        v = kv[1]
        k = self.k_norm(kv[0]).type_as(v)
        out = F.scaled_dot_product_attention(q.type_as(v), k, v, attn_mask=mask)  # (B, heads, N, head_dim)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))
