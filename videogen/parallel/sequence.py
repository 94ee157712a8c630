"""Ulysses sequence parallelism: one clip's tokens split over the P ranks of a sequence group.

DeepSpeed-Ulysses (Jacobs et al., 2023), as Wan 2.1 and xDiT use it for video DiTs. Every rank of a
sequence group holds the same batch and the same (replicated) weights. After the patch embedding
each rank keeps a contiguous 1/P of the tokens; every per-token layer (modulation, MLP,
cross-attention's queries, the final layer) then runs on the local share only. Self-attention
needs all tokens, so around it two all-to-alls swap the split from tokens to heads:

    q, k, v (B, heads, N/P, d) --all-to-all--> (B, heads/P, N, d) --attention--> (B, heads/P, N, d)
                                --all-to-all--> (B, heads, N/P, d)

so the model's attention kernel (SDPA/flash for a bucket, varlen or per-clip for a pack) runs
unchanged on the whole clip for its heads, with the layout built for all N tokens. Joint attention's text keys (replicated, not split) are sliced to the local heads.
The DiT's output is all-gathered before the loss, so the loss is exactly the one-process loss.

Gradients: a replicated parameter's gradient on one rank covers only that rank's tokens (or
heads); the P shares of one clip must add up. The data-parallel reduction (DDP or FSDP over all
W = D x P ranks) averages, so the gather's backward multiplies the gradient by P: the average over
W is then the sum over each sequence group and the mean over the D data groups, done once, in the
same collective that DDP/FSDP issue anyway.

The model declares where this plugs in: ``DiT.sequence_parallel`` (token split after the patch
embedding, gather of the output; ``None``: one process holds every token) and each self-attention's
``AttentionCore`` (the one attention call, wrapped by :class:`UlyssesAttention`);
:func:`apply_sequence_parallel` sets both from outside the model (``videogen.parallel.strategy``,
``videogen sample --devices``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _all_to_all(x: Tensor, group: Any, scatter_dim: int, gather_dim: int) -> Tensor:
    """Split ``x`` into P chunks along ``scatter_dim``, send chunk i to rank i, concatenate what
    arrives along ``gather_dim`` in rank order."""
    world = dist.get_world_size(group)
    send = torch.stack([c.contiguous() for c in x.chunk(world, dim=scatter_dim)])  # (P, *chunk)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return torch.cat(recv.unbind(0), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    """All-to-all whose backward is the reverse all-to-all."""

    @staticmethod
    def forward(ctx, x: Tensor, group: Any, scatter_dim: int, gather_dim: int) -> Tensor:
        ctx.group, ctx.dims = group, (scatter_dim, gather_dim)
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad: Tensor):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, ctx.group, gather_dim, scatter_dim), None, None, None


class _GatherTokens(torch.autograd.Function):
    """(B, N/P, F) local tokens -> (B, N, F) on every rank; backward: the local slice, times P (see the
    module docstring: the data-parallel average over D x P ranks becomes a sum over the sequence group)."""

    @staticmethod
    def forward(ctx, x: Tensor, group: Any, rank: int) -> Tensor:
        world = dist.get_world_size(group)
        ctx.rank, ctx.world, ctx.n = rank, world, x.shape[1]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        lo = ctx.rank * ctx.n
        return grad[:, lo: lo + ctx.n] * ctx.world, None, None


class UlyssesShard:
    """This rank's place in its sequence group and the operations the DiT calls.

    Not an ``nn.Module`` (it holds no weights and must not enter state dicts or FSDP units); a deep
    copy (the EMA's ``AveragedModel``) shares it, since a process group cannot be copied.
    """

    def __init__(self, group: Any, rank: int, degree: int) -> None:
        if not 0 <= rank < degree:
            raise ValueError(f"sequence rank {rank} out of range for degree {degree}")
        self.group, self.rank, self.degree = group, rank, degree

    def __deepcopy__(self, memo: dict) -> "UlyssesShard":
        return self

    def __repr__(self) -> str:
        return f"UlyssesShard(rank={self.rank}, degree={self.degree})"

    def pad(self, x: Tensor, positions: Tensor, segment_ids: Tensor, block_diagonal: bool):
        """Pad the token axis to a multiple of the degree: padding tokens are clip -1 (seen by no real
        token; their outputs are dropped), so a bucket batch whose N does not divide takes the packed
        (per-clip layout) path, with the same result for its real tokens."""
        extra = -x.shape[1] % self.degree
        if not extra:
            return x, positions, segment_ids, block_diagonal
        batch = x.shape[0]
        x = torch.cat([x, x.new_zeros(batch, extra, x.shape[2])], dim=1)
        positions = torch.cat([positions, positions.new_zeros(batch, extra, positions.shape[2])], dim=1)
        segment_ids = torch.cat([segment_ids, segment_ids.new_full((batch, extra), -1)], dim=1)
        return x, positions, segment_ids, True

    def shard(self, x: Tensor, positions: Tensor, segment_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's contiguous 1/P of the tokens (B, N/P, ...). Plain slicing: its backward pads with
        zeros, and the replicated layers before it get this rank's share of their gradient (summed as
        above)."""
        n = x.shape[1]
        if n % self.degree:
            raise ValueError(f"{n} tokens do not split over sequence degree {self.degree}: pad() them first")
        local = n // self.degree
        sl = slice(self.rank * local, (self.rank + 1) * local)
        return x[:, sl], positions[:, sl], segment_ids[:, sl]

    def gather(self, out: Tensor, n: int) -> Tensor:
        """(B, N/P, F) local outputs -> (B, n, F): all tokens, padding dropped."""
        return _GatherTokens.apply(out, self.group, self.rank)[:, :n]

    def heads(self, x: Tensor) -> Tensor:
        """(B, heads, ..., d) replicated on every rank -> this rank's (B, heads/P, ..., d)."""
        per = x.shape[1] // self.degree
        return x[:, self.rank * per: (self.rank + 1) * per]


class UlyssesAttention(nn.Module):
    """Wraps a self-attention's core: all tokens for this rank's heads inside, the local tokens outside.

    q, k, v (B, heads, N/P, d) -> all-to-all -> (B, heads/P, N, d) -> ``core`` (any kernel; the layout
    was built for all N tokens) -> all-to-all -> (B, heads, N/P, d). Joint attention's text keys and
    values (B, heads, M, d), the same on every rank, are sliced to the local heads. No parameters.
    """

    def __init__(self, core: nn.Module, shard: UlyssesShard) -> None:
        super().__init__()
        self.inner, self.shard = core, shard

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: Any,
                text_k: Tensor | None = None, text_v: Tensor | None = None) -> Tensor:
        sp = self.shard
        if q.shape[1] % sp.degree:
            raise ValueError(f"{q.shape[1]} attention heads do not split over sequence degree {sp.degree}: "
                             "choose a sequence_parallel_size that divides the DiT's num_heads")
        q, k, v = (_AllToAll.apply(x, sp.group, 1, 2) for x in (q, k, v))  # (B, heads/P, N, d)
        if text_k is not None:
            text_k, text_v = sp.heads(text_k), sp.heads(text_v)
        out = self.inner(q, k, v, layout, text_k, text_v)  # (B, heads/P, N, d)
        return _AllToAll.apply(out, sp.group, 2, 1)  # (B, heads, N/P, d)


def apply_sequence_parallel(model: nn.Module, shard: UlyssesShard | None) -> int:
    """Put ``shard`` into every DiT in ``model``: its ``sequence_parallel`` hook point (token split,
    output gather) and a :class:`UlyssesAttention` around each self-attention's core (cross-attention
    needs only its local queries and stays as it is). ``None`` undoes it. Returns the DiTs changed;
    raises when there is none."""
    from videogen.models.dit.attention import SelfAttention
    from videogen.models.dit.model import DiT

    dits = [m for m in model.modules() if isinstance(m, DiT)]
    if not dits:
        raise ValueError(f"{type(model).__name__} holds no DiT: sequence parallelism supports the DiT "
                         "(videogen.models.dit.DiT)")
    for dit in dits:
        dit.sequence_parallel = shard
        for attn in (m for m in dit.modules() if isinstance(m, SelfAttention)):
            core = attn.core.inner if isinstance(attn.core, UlyssesAttention) else attn.core
            attn.core = core if shard is None else UlyssesAttention(core, shard)
    return len(dits)


def sequence_groups(degree: int) -> tuple[Any, int, int]:
    """Split the initialised default process group into sequence groups of ``degree`` consecutive
    ranks (inside one node first: the all-to-alls are the bandwidth-hungry part); returns (this rank's
    group, its rank in the group, the data-parallel rank). Every rank must call it (new_group is
    collective)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if degree < 1 or world % degree:
        raise ValueError(f"sequence_parallel_size={degree} must divide the number of processes ({world}): "
                         "set trainer.devices x trainer.num_nodes to a multiple of it")
    mine = None
    for start in range(0, world, degree):
        group = dist.new_group(list(range(start, start + degree)))
        if start <= rank < start + degree:
            mine = group
    return mine, rank % degree, rank // degree
