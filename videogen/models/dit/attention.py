"""Self- and cross-attention with QK-norm; packed rows through variable-length attention, never N x N.

How queries see keys is one of two things, chosen once per forward by the model:

- a bucket batch (one clip per row): ``None`` or a key-padding mask (B, 1, 1, K) for
  ``scaled_dot_product_attention`` (the flash / fused kernels);
- a packed row (several clips, NaViT): :class:`Segments`, the pack's clip offsets. Each clip's
  queries see only their own keys. On CUDA in bf16/fp16 this is ``torch.nn.attention.varlen``
  (flash attention over ``cu_seqlens``); elsewhere one SDPA call per clip. Either way the cost is
  the clips' own (sum of n_i^2), forward and backward, and no (N, N) mask or score tensor exists.

Text reaches the tokens in one of two ways (``DiT(text_attention=...)``): a separate
:class:`CrossAttention` after self-attention (PixArt-alpha), or *joint* attention: the
caption's keys and values join the self-attention's (each clip's queries see its own caption's
real keys + its own tokens, one softmax over both, as CogVideoX and SD3 do; text tokens are keys
only, not queries).

:class:`AttentionCore` (no parameters) is the one place attention is computed: sequence
parallelism wraps it from outside (it gets q, k, v (B, heads, N, d), the layout, and the text
keys/values joint attention puts before the tokens' keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from videogen.models.dit.rope import apply_rotary

try:  # torch >= 2.9: flash attention over cu_seqlens (CUDA only)
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # pragma: no cover - older torch
    varlen_attn = None

AttentionBackend = Literal["auto", "varlen", "per_clip"]


@dataclass(frozen=True)
class Segments:
    """Which queries see which keys in a packed batch: offsets, no (N, K) tensor.

    Queries are the (B N) tokens flattened row after row; sequence r is queries
    ``cu_q[r]:cu_q[r + 1]`` (one clip, or a row's padding tokens). Its keys are the flattened
    (B K) keys gathered by ``key_index`` (None: the keys are the queries' own tokens), then
    ``cu_k[r]:cu_k[r + 1]``. The lengths are also kept as Python ints (the per-clip loop needs them;
    built once per forward, not per block). ``max_q``/``max_k`` (varlen's launch bounds) are the longest
    sequence rounded up to a power of two, at most the total: compiled blocks see few distinct values
    (a recompile per pack otherwise), at no cost in results.
    """

    cu_q: Tensor  # (R + 1,) int32 query offsets
    cu_k: Tensor  # (R + 1,) int32 key offsets into the gathered keys
    key_index: Tensor | None  # (sum k_lens,) long index into the (B K) flattened keys
    q_lens: tuple[int, ...]
    k_lens: tuple[int, ...]
    max_q: int
    max_k: int
    backend: AttentionBackend = "auto"


Layout = Union[Segments, Tensor, None]


@dataclass(frozen=True)
class Runs:
    """A packed batch's token runs (computed once per forward from segment ids (B, N)): run r is
    tokens ``start[r]:end[r]`` of the flattened (B N) row order, in row ``row[r]``, of clip ``clip[r]``
    (-1: padding). A clip's tokens must be one contiguous run of its row."""

    row: tuple[int, ...]
    clip: tuple[int, ...]
    start: tuple[int, ...]
    end: tuple[int, ...]
    tokens_per_row: int


def token_runs(segment_ids: Tensor) -> Runs:
    """Runs of equal clip ids in each row of (B, N) segment ids; a clip split in two runs is an error."""
    batch, n = segment_ids.shape
    ids = segment_ids.detach().to("cpu", torch.long)
    change = torch.ones(batch, n, dtype=torch.bool)
    change[:, 1:] = ids[:, 1:] != ids[:, :-1]  # a run starts at each row's first token and at each id change
    starts = change.flatten().nonzero().flatten()
    ends = torch.cat([starts[1:], torch.tensor([batch * n])])
    rows, clips = (starts // n).tolist(), ids.flatten()[starts].tolist()
    seen = set()
    for r, c in zip(rows, clips):
        if c >= 0 and (r, c) in seen:
            raise ValueError(f"packed row {r}: the tokens of clip {c} are not contiguous (segment_ids must give "
                             "each clip one run of tokens, clip after clip, padding -1 anywhere)")
        seen.add((r, c))
    return Runs(tuple(rows), tuple(clips), tuple(starts.tolist()), tuple(ends.tolist()), n)


def _offsets(lengths: list[int], device: torch.device) -> Tensor:
    return torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0).to(device=device, dtype=torch.int32)


def _bound(lengths: tuple[int, ...]) -> int:
    """The longest length rounded up to a power of two, at most the sum."""
    return min(1 << (max(lengths) - 1).bit_length(), sum(lengths))


def self_segments(runs: Runs, device: torch.device, backend: AttentionBackend = "auto") -> Segments:
    """Block-diagonal self-attention: every run (a clip, or a row's padding) sees only itself."""
    lens = tuple(e - s for s, e in zip(runs.start, runs.end))
    cu = _offsets(list(lens), device)
    return Segments(cu, cu, None, lens, lens, _bound(lens), _bound(lens), backend)


def text_segments(runs: Runs, text_mask: Tensor, device: torch.device, joint: bool,
                  backend: AttentionBackend = "auto") -> Segments:
    """Each clip's queries see its own caption's real keys (``text_mask`` (B, S, L'), True = real; the
    keys of a row are its S captions, L' each, clip after clip) and, with ``joint``, its own tokens,
    which follow the row's S L' text keys. Padding runs see their own tokens (joint) or the row's first
    text key (cross): they need some key, and their outputs are never used."""
    mask = text_mask.detach().to("cpu")
    batch, clips, keys = mask.shape
    text_keys = clips * keys
    row_keys = text_keys + (runs.tokens_per_row if joint else 0)  # K: keys per row
    index, lens = [], []
    for row, clip, start, end in zip(runs.row, runs.clip, runs.start, runs.end):
        parts = []
        if clip >= 0:
            parts.append(row * row_keys + clip * keys + mask[row, clip].nonzero().flatten())
        if joint:
            first = start - row * runs.tokens_per_row
            parts.append(row * row_keys + text_keys + torch.arange(first, first + end - start))
        elif clip < 0:
            parts.append(torch.tensor([row * row_keys]))
        lens.append(sum(len(p) for p in parts))
        index.append(torch.cat(parts))
    q_lens, k_lens = tuple(e - s for s, e in zip(runs.start, runs.end)), tuple(lens)
    return Segments(_offsets(list(q_lens), device), _offsets(lens, device), torch.cat(index).to(device), q_lens,
                    k_lens, _bound(q_lens), _bound(k_lens), backend)


def use_varlen(q: Tensor, backend: AttentionBackend) -> bool:
    """varlen_attn runs here: torch has it, CUDA, half precision, a head dim flash attention takes."""
    ok = (varlen_attn is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
          and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256)
    if backend == "varlen" and not ok:
        raise RuntimeError(
            f"DiT init arg attention_backend='varlen' needs torch.nn.attention.varlen on CUDA in bf16/fp16 with a head "
            f"dim that is a multiple of 8 (<= 256); got {q.device.type}, {q.dtype}, head dim {q.shape[-1]}: "
            "set attention_backend to 'auto'."
        )
    return ok and backend != "per_clip"


@torch.compiler.disable  # a Python loop over the pack's clips: compiled blocks run it between graphs
def per_clip_attention(q: Tensor, k: Tensor, v: Tensor, segments: Segments) -> Tensor:
    """(Nq, heads, d) queries over (Nk, heads, d) gathered keys, one SDPA call per sequence -> (Nq, heads, d)."""
    outs = [
        F.scaled_dot_product_attention(qi.transpose(0, 1), ki.transpose(0, 1), vi.transpose(0, 1)).transpose(0, 1)
        for qi, ki, vi in zip(q.split(segments.q_lens), k.split(segments.k_lens), v.split(segments.k_lens))
    ]
    return torch.cat(outs)


def attend(q: Tensor, k: Tensor, v: Tensor, layout: Layout) -> Tensor:
    """(B, heads, Nq, d) queries over (B, heads, Nk, d) keys/values -> (B, heads, Nq, d)."""
    if not isinstance(layout, Segments):  # a bucket batch: SDPA, None or a (B, 1, 1, Nk) key mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=layout)
    batch = q.shape[0]
    qf = rearrange(q, "b h n d -> (b n) h d")
    kf, vf = (rearrange(x, "b h n d -> (b n) h d") for x in (k, v))
    if layout.key_index is not None:
        kf, vf = kf[layout.key_index], vf[layout.key_index]  # (sum k_lens, heads, d): each sequence's keys in a run
    if use_varlen(q, layout.backend):
        out = varlen_attn(qf.contiguous(), kf.contiguous(), vf.contiguous(), layout.cu_q, layout.cu_k,
                          layout.max_q, layout.max_k)
    else:
        out = per_clip_attention(qf, kf, vf, layout)
    return rearrange(out, "(b n) h d -> b h n d", b=batch)


class AttentionCore(nn.Module):
    """softmax(q k^T / sqrt(d)) v for one layout; ``text_k``/``text_v`` (B, heads, M, d) go before the
    tokens' keys (joint attention). No parameters: the unit sequence parallelism wraps."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: Layout,
                text_k: Tensor | None = None, text_v: Tensor | None = None) -> Tensor:
        if text_k is not None:
            k, v = torch.cat([text_k, k], dim=2), torch.cat([text_v, v], dim=2)  # (B, heads, M + N, d)
        return attend(q, k, v, layout)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all spacetime tokens, RMS QK-norm, rotary positions.

    With ``text_keys`` (joint attention) the text tokens (B, M, D) get their own key/value
    projection and their keys/values are put before the tokens' (no rotation: text has no
    position in the clip); the layout then covers M + N keys.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, text_keys: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.text_kv = nn.Linear(dim, 2 * dim) if text_keys else None
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.core = AttentionCore()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], layout: Layout, text: Tensor | None = None) -> Tensor:
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        q, k = self.q_norm(qkv[0]), self.k_norm(qkv[1])  # (B, heads, N, head_dim)
        v = qkv[2]
        q, k = apply_rotary(q, *rope).type_as(v), apply_rotary(k, *rope).type_as(v)  # norms may run in fp32 under autocast
        text_k = text_v = None
        if self.text_kv is not None:
            text_kv = rearrange(self.text_kv(text), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
            text_k, text_v = self.k_norm(text_kv[0]).type_as(v), text_kv[1]  # (B, heads, M, head_dim)
        out = self.core(q, k, v, layout, text_k, text_v)  # (B, heads, N, head_dim)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Tokens (B, N, D) attend to text tokens (B, M, D); layout: a (B, 1, 1, M) key mask or :class:`Segments`."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.core = AttentionCore()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, text: Tensor, layout: Layout) -> Tensor:
        q = self.q_norm(rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads))
        kv = rearrange(self.kv(text), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        v = kv[1]
        k = self.k_norm(kv[0]).type_as(v)
        out = self.core(q.type_as(v), k, v, layout)  # (B, heads, N, head_dim)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))
