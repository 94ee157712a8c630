"""Ulysses sequence parallelism: one clip's tokens split over the P ranks of a sequence group.

DeepSpeed-Ulysses (Jacobs et al., 2023), as Wan 2.1 and xDiT use it for video DiTs. Every rank of a
sequence group holds the same batch and the same (replicated) weights. After the patch embedding
each rank keeps a contiguous 1/P of the tokens; every per-token layer (modulation, MLP,
cross-attention's queries, the final layer) then runs on the local share only. Self-attention
needs all tokens, so around it two all-to-alls swap the split from tokens to heads:

    q, k, v (B, heads, N/P, d) --all-to-all--> (B, heads/P, N, d) --attention--> (B, heads/P, N, d)
                                --all-to-all--> (B, heads, N/P, d)

so any full-sequence attention kernel (SDPA, flash, FlexAttention with a block mask, per-clip or
variable-length attention) runs unchanged on the whole clip for its heads, with the masks built
for all N tokens. Joint attention's text keys (replicated, not split) are sliced to the local heads.
The DiT's output is all-gathered before the loss, so the loss is exactly the one-process loss.

Gradients: a replicated parameter's gradient on one rank covers only that rank's tokens (or
heads); the P shares of one clip must add up. The data-parallel reduction (DDP or FSDP over all
W = D x P ranks) averages, so the gather's backward multiplies the gradient by P: the average over
W is then the sum over each sequence group and the mean over the D data groups, done once, in the
same collective that DDP/FSDP issue anyway.

The model declares where this plugs in: ``DiT.sequence_parallel`` (token split after the patch
embedding, gather of the output) and ``SelfAttention.sequence_parallel`` (around the attention
core); both are ``None`` (one process holds every token) unless :func:`apply_sequence_parallel`
sets them, from outside the model (``videogen.parallel.strategy``, ``videogen sample --devices``).
"""

from __future__ import annotations

from typing import Any, Callable

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
    """This rank's place in its sequence group and the four operations the DiT calls.

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
        token; their outputs are dropped), so a bucket batch whose N does not divide takes the masked
        (block-diagonal) path, with the same result for its real tokens."""
        extra = -x.shape[1] % self.degree
        if not extra:
            return x, positions, segment_ids, block_diagonal
        batch = x.shape[0]
        x = torch.cat([x, x.new_zeros(batch, extra, x.shape[2])], dim=1)
        positions = torch.cat([positions, positions.new_zeros(batch, extra, positions.shape[2])], dim=1)
        segment_ids = torch.cat([segment_ids, segment_ids.new_full((batch, extra), -1)], dim=1)
        return x, positions, segment_ids, True

    def shard(self, x: Tensor, positions: Tensor, segment_ids: Tensor, cross_mask: Tensor | None):
        """This rank's contiguous 1/P of the tokens (B, N/P, ...), and of the cross-attention mask's
        query rows when it has one row per token. Plain slicing: its backward pads with zeros, and the
        replicated layers before it get this rank's share of their gradient (summed as above)."""
        n = x.shape[1]
        if n % self.degree:
            raise ValueError(f"{n} tokens do not split over sequence degree {self.degree}: pad() them first")
        local = n // self.degree
        sl = slice(self.rank * local, (self.rank + 1) * local)
        if cross_mask is not None and cross_mask.shape[2] == n:  # (B, 1, N, K): keep this rank's query rows
            cross_mask = cross_mask[:, :, sl]
        return x[:, sl], positions[:, sl], segment_ids[:, sl], cross_mask

    def gather(self, out: Tensor, n: int) -> Tensor:
        """(B, N/P, F) local outputs -> (B, n, F): all tokens, padding dropped."""
        return _GatherTokens.apply(out, self.group, self.rank)[:, :n]

    def attend(self, core: Callable[..., Tensor], q: Tensor, k: Tensor, v: Tensor, *args: Any) -> Tensor:
        """Run the attention ``core(q, k, v, *args)`` on all tokens for this rank's heads.

        q (B, heads, N/P, d); k, v (B, heads, M + N/P, d), where the first M keys (M = 0 for plain
        self-attention) are joint attention's text keys, the same on every rank, and the last N/P are
        the local tokens' own. Returns (B, heads, N/P, d)."""
        heads = q.shape[1]
        if heads % self.degree:
            raise ValueError(f"{heads} attention heads do not split over sequence degree {self.degree}: "
                             "choose a degree that divides the DiT's num_heads")
        m = k.shape[2] - q.shape[2]
        local_heads = slice(self.rank * heads // self.degree, (self.rank + 1) * heads // self.degree)

        def heads_of_all_tokens(x: Tensor) -> Tensor:  # (B, heads, [M +] N/P, d) -> (B, heads/P, [M +] N, d)
            tokens = _AllToAll.apply(x[:, :, m:], self.group, 1, 2)
            return torch.cat([x[:, local_heads, :m], tokens], dim=2) if m else tokens

        out = core(_AllToAll.apply(q, self.group, 1, 2), heads_of_all_tokens(k), heads_of_all_tokens(v), *args)
        return _AllToAll.apply(out, self.group, 2, 1)  # (B, heads/P, N, d) -> (B, heads, N/P, d)


def apply_sequence_parallel(model: nn.Module, shard: UlyssesShard | None) -> int:
    """Set ``shard`` on every submodule of ``model`` that declares a ``sequence_parallel`` hook point
    (``None`` undoes it); returns how many were set. Raises when none declares one."""
    count = 0
    for module in model.modules():
        if hasattr(type(module), "sequence_parallel"):
            module.sequence_parallel = shard
            count += 1
    if not count:
        raise ValueError(f"{type(model).__name__} declares no sequence_parallel hook point: sequence "
                         "parallelism supports the DiT (videogen.models.dit.DiT)")
    return count


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
