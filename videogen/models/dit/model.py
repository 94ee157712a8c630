"""The latent Diffusion Transformer: spacetime patches -> DiT blocks -> per-patch velocity.

One ``forward`` (what FSDP and DDP wrap) takes either kind of batch; both share one token
path (:meth:`DiT.forward_tokens`):

- a padded batch of same-size latents (B, C, T, H, W) -> (B, C, T, H, W);
- a pack: a list of clips of different (T, H, W) -> a list, packed into one token row
  (NaViT): each clip attends only to itself and its own caption (variable-length attention
  over the clips' offsets) and gets its own timestep;
- :meth:`DiT.forward_tokens` -- already packed rows, e.g. from the data pipeline.

Under bf16 autocast the residual stream and the adaLN modulation adds stay in fp32 (as diffusers'
Wan does); the matmuls and attention run in bf16.

Per-frame conditioning (image-to-video, extension; ``frame_conditioning=True``): the
input is ``cat([xt, cond * cond_mask, cond_mask])`` on channels, cond_mask (B, 1, T, H, W)
is 1 where the clean latent ``cond`` is given. Without cond the model sees zeros (plain
text-to-video), so one model serves both.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from videogen.models.configurable import Configurable
from videogen.models.dit.attention import AttentionBackend, Layout, self_segments, text_segments, token_runs
from videogen.models.dit.blocks import DiTBlock, FinalLayer, TimestepEmbedder
from videogen.models.dit.patchify import grid_positions, pack, patch_grid, patchify, unpack, unpatchify
from videogen.models.dit.rope import RotaryEmbedding3D


FRACTION_FREQUENCIES = 8  # sin/cos pairs per axis for the fractional position embedding


def fraction_features(positions: Tensor, segment_ids: Tensor, clips: int) -> Tensor:
    """(B, N, 3) integer positions -> (B, N, 3 * 2 * F) sinusoidal features of each token's position as a
    fraction of its own clip's extent per axis, ``(i + 0.5) / n`` in (0, 1): the same for a clip at any size."""
    seg = segment_ids.clamp(min=0)[..., None].expand(-1, -1, 3)  # (B, N, 3); padding borrows clip 0
    pos = positions.float()
    extent = torch.zeros(pos.shape[0], clips, 3, device=pos.device).scatter_reduce(1, seg, pos, "amax") + 1
    frac = (pos + 0.5) / torch.gather(extent, 1, seg)  # (B, N, 3)
    freqs = math.pi * 2.0 ** torch.arange(FRACTION_FREQUENCIES, device=pos.device, dtype=torch.float32)  # (F,)
    angles = frac[..., None] * freqs  # (B, N, 3, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, N, 3 * 2F)


class DiT(Configurable, nn.Module):
    """Text-conditioned latent DiT predicting one value per latent element (the flow velocity).

    Args:
        in_channels: latent channels of the VAE (link to the VAE's latent_channels).
        patch_size: (pt, ph, pw) latent elements per token.
        hidden_size: token width D.
        depth: number of DiT blocks.
        num_heads: attention heads; hidden_size / num_heads is the head dim, split over (t, h, w) by RoPE.
        mlp_ratio: MLP hidden width / D.
        text_dim: width of the text encoder's tokens (link to FrozenTextEncoder.dim).
        qk_norm: RMS-normalise queries and keys per head (stabilises attention logits).
        rope_theta: RoPE base period.
        rope_axes_dim: head-dim channels for (t, h, w); default 3/8 each to h and w, the rest to t.
        frame_conditioning: add the per-frame conditioning channels (cond latents + mask).
        frame_position: add an embedding of each token's position as a fraction of its clip's
            extent in (t, h, w) (sinusoidal features of (i + 0.5) / n per axis, through a zero-initialised
            linear). RoPE is relative only; this tells a token where in the frame and when in the clip
            it is, at any size, so a caption like "moves to the right" can place the object left early
            and right late from the first, pure-noise sampling steps.
        pooled_text: add the caption's mean-pooled text embedding to the timestep embedding that
            drives every block's adaLN modulation (as SD3 does with pooled CLIP): global attributes
            (colour, motion) reach every token directly, not only through cross-attention.
        text_attention: how tokens read the caption: 'cross' (a cross-attention layer after
            self-attention in every block, PixArt-alpha) or 'joint' (the caption's keys and values join
            self-attention, one softmax over text + tokens, as CogVideoX and SD3; no cross-attention
            layer, so about 2 N D^2 fewer multiply-adds per block).
        attention_backend: how packed rows attend (bucket batches always use SDPA): 'auto'
            (``torch.nn.attention.varlen`` flash attention on CUDA in bf16/fp16, one SDPA call per clip
            elsewhere), 'varlen' (that or a clear error) or 'per_clip'. Both cost the clips' own
            sum of n_i^2, never N x N.
    """

    # the unit DiTModule(compile_blocks, activation_checkpointing) compiles and recomputes; FSDP configs name it
    block_class = DiTBlock
    retired_init_args = ("gradient_checkpointing",)  # now DiTModule(activation_checkpointing), from outside
    # hook point for sequence parallelism, set from outside (videogen/parallel/sequence.py): this rank
    # runs the blocks on its share of the tokens and the outputs are gathered; None: all tokens here
    sequence_parallel = None

    def __init__(
        self,
        in_channels: int = 16,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        text_dim: int = 384,
        qk_norm: bool = True,
        rope_theta: float = 10000.0,
        rope_axes_dim: tuple[int, int, int] | None = None,
        frame_conditioning: bool = False,
        pooled_text: bool = True,
        frame_position: bool = True,
        text_attention: Literal["cross", "joint"] = "cross",
        attention_backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"DiT init args: hidden_size={hidden_size} must be divisible by num_heads={num_heads}.")
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ValueError(f"DiT init arg patch_size={patch_size} must be three positive ints (pt, ph, pw).")
        if attention_backend not in ("auto", "varlen", "per_clip"):
            raise ValueError(f"DiT init arg attention_backend={attention_backend!r}: use 'auto', 'varlen' or 'per_clip'.")
        if text_attention not in ("cross", "joint"):
            raise ValueError(f"DiT init arg text_attention={text_attention!r}: use 'cross' or 'joint'.")
        self.in_channels = in_channels
        self.patch_size = tuple(patch_size)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.text_dim = text_dim
        self.frame_conditioning = frame_conditioning
        self.pooled_text = pooled_text
        self.frame_position = frame_position
        self.text_attention = text_attention
        self.attention_backend = attention_backend
        patch_volume = math.prod(self.patch_size)
        embed_channels = 2 * in_channels + 1 if frame_conditioning else in_channels
        self.x_embedder = nn.Linear(embed_channels * patch_volume, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, hidden_size), nn.GELU(approximate="tanh"), nn.Linear(hidden_size, hidden_size)
        )
        self.position_embedder = nn.Linear(3 * 2 * FRACTION_FREQUENCIES, hidden_size) if frame_position else None
        self.pooled_embedder = (
            nn.Sequential(nn.Linear(text_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
            if pooled_text else None
        )
        # a learned text token every clip can always attend to: no empty cross-attention row for an empty caption
        self.null_text = nn.Parameter(torch.randn(hidden_size) * 0.02)
        self.rope = RotaryEmbedding3D(hidden_size // num_heads, rope_theta, rope_axes_dim)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm, text_attention) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, in_channels * patch_volume)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        embedders = [self.t_embedder.mlp] + ([self.pooled_embedder] if self.pooled_embedder is not None else [])
        for mlp in embedders:
            nn.init.normal_(mlp[0].weight, std=0.02)
            nn.init.normal_(mlp[2].weight, std=0.02)
        for block in self.blocks:
            block.zero_init_()
        self.final_layer.zero_init_()
        if self.position_embedder is not None:  # starts as a no-op; learns from the first step
            nn.init.zeros_(self.position_embedder.weight)

    def _with_conditioning(self, x: Tensor, cond: Tensor | None, cond_mask: Tensor | None) -> Tensor:
        """(..., C, T, H, W) -> (..., 2C + 1, T, H, W) with frame conditioning, else x unchanged."""
        if not self.frame_conditioning:
            if cond is not None or cond_mask is not None:
                raise ValueError("cond / cond_mask given but the DiT was built with frame_conditioning=False.")
            return x
        if cond is None:
            cond = torch.zeros_like(x)
        if cond_mask is None:
            cond_mask = torch.zeros_like(x[..., :1, :, :, :])
        cond_mask = cond_mask.to(x.dtype)
        return torch.cat([x, cond * cond_mask, cond_mask], dim=-4)

    def forward(
        self,
        x: Tensor | list[Tensor],  # (B, C, T, H, W) noisy latents xt, or a pack: B clips (C, T_i, H_i, W_i)
        t: Tensor,  # (B,) in [0, 1]
        text: Tensor,  # (B, L, text_dim)
        text_mask: Tensor,  # (B, L) bool, True = real token
        cond: Tensor | list[Tensor] | None = None,  # clean conditioning latents, shaped as x
        cond_mask: Tensor | list[Tensor] | None = None,  # (B, 1, T, H, W) or B (1, T_i, H_i, W_i): 1 where cond is given
        pad_to: int | None = None,  # a pack only: pad the row to this many tokens (a fixed shape for compiled kernels)
    ) -> Tensor | list[Tensor]:
        if isinstance(x, (list, tuple)):
            return self._forward_packed(list(x), t, text, text_mask, cond, cond_mask, pad_to)
        grid = patch_grid(tuple(x.shape[-3:]), self.patch_size)
        tokens = patchify(self._with_conditioning(x, cond, cond_mask), self.patch_size)  # (B, N, P_in)
        batch, n = tokens.shape[:2]
        positions = grid_positions(grid, x.device)[None].expand(batch, -1, -1)  # (B, N, 3)
        segment_ids = torch.zeros(batch, n, dtype=torch.long, device=x.device)  # one clip per row
        out = self.forward_tokens(
            tokens, positions, segment_ids, t[:, None], text[:, None], text_mask[:, None], block_diagonal=False
        )  # (B, N, P_out)
        return unpatchify(out, self.patch_size, grid)  # (B, C, T, H, W)

    def _forward_packed(
        self,
        latents: list[Tensor],  # n clips, each (C, T_i, H_i, W_i)
        t: Tensor,  # (n,)
        text: Tensor,  # (n, L, text_dim)
        text_mask: Tensor,  # (n, L)
        cond: list[Tensor] | None,  # n clips (C, T_i, H_i, W_i)
        cond_mask: list[Tensor] | None,  # n masks (1, T_i, H_i, W_i)
        pad_to: int | None,
    ) -> list[Tensor]:
        inputs = [
            self._with_conditioning(x, None if cond is None else cond[i], None if cond_mask is None else cond_mask[i])
            for i, x in enumerate(latents)
        ]
        packed = pack(inputs, self.patch_size)  # tokens (1, N, P_in)
        tokens, positions, segment_ids = packed.tokens, packed.positions, packed.segment_ids
        n = tokens.shape[1]
        if pad_to is not None and pad_to != n:
            if pad_to < n:
                raise ValueError(f"a pack of {n} tokens does not fit pad_to={pad_to}: raise the token budget")
            extra = pad_to - n  # padding tokens: id -1, ignored by every clip, outputs dropped
            tokens = torch.cat([tokens, tokens.new_zeros(1, extra, tokens.shape[2])], dim=1)
            positions = torch.cat([positions, positions.new_zeros(1, extra, 3)], dim=1)
            segment_ids = torch.cat([segment_ids, segment_ids.new_full((1, extra), -1)], dim=1)
        out = self.forward_tokens(tokens, positions, segment_ids, t[None], text[None], text_mask[None])  # (1, N', P_out)
        return unpack(out[:, :n], packed.grids, self.patch_size)

    def forward_tokens(
        self,
        tokens: Tensor,  # (B, N, P_in) patch tokens, several clips per row
        positions: Tensor,  # (B, N, 3) (t, h, w) of each token inside its clip
        segment_ids: Tensor,  # (B, N) long clip index in [0, S) per token, -1 for padding
        t: Tensor,  # (B, S)
        text: Tensor,  # (B, S, L, text_dim) caption of each clip
        text_mask: Tensor,  # (B, S, L)
        block_diagonal: bool = True,  # False only when every row holds one clip and no padding
    ) -> Tensor:
        batch, clips = text.shape[:2]
        # the residual stream (and every modulation add on it) in fp32 under autocast, also when FSDP computes with
        # bf16 weights; without autocast in the weights' dtype (a bf16-true model stays bf16)
        residual = torch.float32 if torch.is_autocast_enabled(tokens.device.type) else self.x_embedder.weight.dtype
        x = self.x_embedder(tokens).to(residual)  # (B, N, D)
        if self.position_embedder is not None:
            x = x + self.position_embedder(fraction_features(positions, segment_ids, clips).to(x.dtype))
        c = self.t_embedder(t).to(x.dtype)  # (B, S, D)
        if self.pooled_embedder is not None:
            weights = text_mask.to(text.dtype)[..., None]  # (B, S, L, 1)
            pooled = (text * weights).sum(2) / weights.sum(2).clamp_min(1)  # (B, S, text_dim) mean of real tokens
            c = c + self.pooled_embedder(pooled).to(x.dtype)
        txt = torch.cat(
            [self.null_text.to(x.dtype).expand(batch, clips, 1, -1), self.text_proj(text)], dim=2
        )  # (B, S, L + 1, D)
        txt_mask = torch.cat([text_mask.new_ones(batch, clips, 1), text_mask], dim=2).bool()  # (B, S, L + 1)
        text_tokens = rearrange(txt, "b s l d -> b (s l) d")
        n, sp = x.shape[1], self.sequence_parallel
        if sp is not None:  # tokens padded to a multiple of the sequence degree (padding: clip -1)
            x, positions, segment_ids, block_diagonal = sp.pad(x, positions, segment_ids, block_diagonal)
        self_layout, cross_layout = self._layouts(segment_ids, txt_mask, block_diagonal)
        if sp is not None:  # this rank's tokens (B, N/P, D); self-attention still sees all N (its core is wrapped)
            x, positions, segment_ids = sp.shard(x, positions, segment_ids)
            if cross_layout is not None:  # the local queries' own captions' keys
                cross_layout = self._layouts(segment_ids, txt_mask, block_diagonal)[1]
        cos, sin = self.rope(positions)  # each (B, N, head_dim / 2)
        rope = (cos[:, None], sin[:, None])  # (B, 1, N, head_dim / 2)
        for block in self.blocks:
            x = block(x, c, segment_ids, rope, self_layout, text_tokens, cross_layout)
        out = self.final_layer(x, c, segment_ids)  # (B, N, P_out)
        return out if sp is None else sp.gather(out, n)

    def _layouts(self, segment_ids: Tensor, txt_mask: Tensor, block_diagonal: bool) -> tuple[Layout, Layout]:
        """(self-attention layout, cross-attention layout) for tokens (B, N) and text keys (B, S, L + 1).

        One clip per row (``block_diagonal=False``): SDPA masks that only hide text padding: cross
        (B, 1, 1, L + 1), joint (B, 1, 1, L + 1 + N) over [text keys, tokens], self None.
        Packed rows: :class:`Segments` from the clips' offsets (computed once here, for every block):
        a clip's tokens see only its own tokens and its own caption's real keys (joint: one softmax over
        both). No (N, N) or (N, S (L + 1)) tensor is built.
        """
        batch, clips, keys = txt_mask.shape
        if not block_diagonal:
            if self.text_attention == "joint":
                real = torch.cat([txt_mask[:, 0], txt_mask.new_ones(batch, segment_ids.shape[1])], dim=1)
                return real[:, None, None], None  # (B, 1, 1, L + 1 + N)
            return None, txt_mask[:, :, None]  # (B, S = 1, 1, L + 1)
        runs = token_runs(segment_ids)
        device, backend = segment_ids.device, self.attention_backend
        if self.text_attention == "joint":
            return text_segments(runs, txt_mask, device, joint=True, backend=backend), None
        return self_segments(runs, device, backend), text_segments(runs, txt_mask, device, joint=False, backend=backend)

    def forward_flops(self, tokens_per_clip: Sequence[int], text_len: int) -> int:
        """Matmul FLOPs (2 per multiply-add) of one forward over clips of these token counts.

        Counts only what the masks keep: self-attention within each clip, cross- or joint
        attention to the clip's own L + 1 text keys. A training step is about 3x this (4x with
        gradient checkpointing). This matches torch's FlopCounterMode exactly for a
        padded batch (one clip per row).
        """
        d, n, s = self.hidden_size, sum(tokens_per_clip), len(tokens_per_clip)
        keys = text_len + 1
        mlp_hidden = self.blocks[0].mlp[0].out_features if len(self.blocks) else 0
        p_in, p_out = self.x_embedder.in_features, self.final_layer.linear.out_features
        freq_dim = self.t_embedder.mlp[0].in_features
        attn_pairs = sum(k * k for k in tokens_per_clip)
        flops = 2 * n * p_in * d  # patch embedding
        if self.position_embedder is not None:
            flops += 2 * n * self.position_embedder.in_features * d  # fractional position embedding
        flops += 2 * s * (freq_dim * d + d * d)  # timestep MLP
        flops += 2 * s * text_len * (self.text_dim * d + d * d)  # text projection
        if self.pooled_embedder is not None:
            flops += 2 * s * (self.text_dim * d + d * d)  # pooled text MLP
        per_block = 2 * s * d * 6 * d  # adaLN modulation
        per_block += 2 * n * d * 4 * d + 4 * attn_pairs * d  # self-attention: qkv + proj, scores + values
        per_block += 2 * s * keys * d * 2 * d + 4 * n * keys * d  # text: kv, scores + values
        if self.text_attention == "cross":
            per_block += 2 * n * d * 2 * d  # the cross-attention's own q and output projections
        per_block += 4 * n * d * mlp_hidden  # MLP
        flops += len(self.blocks) * per_block
        flops += 2 * s * d * 2 * d + 2 * n * d * p_out  # final layer
        return flops


def dit_tiny(**kwargs) -> DiT:
    return DiT(**{"hidden_size": 64, "depth": 2, "num_heads": 2, **kwargs})


def dit_s(**kwargs) -> DiT:
    return DiT(**{"hidden_size": 384, "depth": 12, "num_heads": 6, **kwargs})


def dit_b(**kwargs) -> DiT:
    return DiT(**{"hidden_size": 768, "depth": 12, "num_heads": 12, **kwargs})


def dit_l(**kwargs) -> DiT:
    return DiT(**{"hidden_size": 1024, "depth": 24, "num_heads": 16, **kwargs})
