"""Lightning strategies with a 2-D process layout: D data-parallel groups x P sequence-parallel ranks.

``configs/trainer/sequence_parallel.yaml`` selects one; ``sequence_parallel_size`` is P and
``trainer.devices x trainer.num_nodes`` = D x P. Global rank r is data rank r // P and sequence
rank r % P (a sequence group is P consecutive ranks, inside one node while P <= GPUs per node).

- **Data**: Lightning's ``distributed_sampler_kwargs`` name the data-parallel world (D) and rank
  (r // P); ``VideoDataModule`` and the DiT's noise, timesteps and caption dropout read them, so the
  P ranks of a group see the same batch and draw the same noise.
- **Model**: before DDP/FSDP wrap it, every DiT of the LightningModule (the model and its EMA copy)
  gets this rank's :class:`~videogen.parallel.sequence.UlyssesShard` (:func:`apply_sequence_parallel`).
- **Gradients**: DDP (or FSDP) reduces over all D x P ranks, once; see
  ``videogen/parallel/sequence.py`` for why that is the sum over the sequence group and the mean over
  the data groups. FSDP shards the weights over all D x P ranks (as torchtitan's ``dp_shard_cp``).

Everything else (launch, SLURM, checkpoints, logging on global rank 0) is Lightning's.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

from videogen.parallel.sequence import UlyssesShard, apply_sequence_parallel, sequence_groups


class _SequenceParallel:
    """What both strategies add: the sequence groups, the data-parallel rank, the model's shard."""

    def _init_sequence(self, sequence_parallel_size: int) -> None:
        if sequence_parallel_size < 1:
            raise ValueError(f"trainer.strategy.init_args.sequence_parallel_size={sequence_parallel_size} must be >= 1")
        self.sequence_parallel_size = sequence_parallel_size
        self.shard: UlyssesShard | None = None

    def setup_environment(self) -> None:
        super().setup_environment()  # the default process group over all ranks
        group, seq_rank, _ = sequence_groups(self.sequence_parallel_size)
        self.shard = UlyssesShard(group, seq_rank, self.sequence_parallel_size)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        world = self.num_nodes * self.num_processes
        return {"num_replicas": world // self.sequence_parallel_size,
                "rank": self.global_rank // self.sequence_parallel_size}

    def setup(self, trainer) -> None:
        dits = apply_sequence_parallel(self.lightning_module, self.shard)  # before DDP/FSDP wrap the module
        kw = self.distributed_sampler_kwargs
        print(f"sequence parallel: global rank {self.global_rank} = data rank {kw['rank']} of {kw['num_replicas']}, "
              f"sequence rank {self.shard.rank} of {self.shard.degree} ({dits} DiTs)", flush=True)
        super().setup(trainer)


class SequenceParallelStrategy(_SequenceParallel, DDPStrategy):
    """DDP over all ranks with Ulysses sequence parallelism inside groups of ``sequence_parallel_size``.

    Args:
        sequence_parallel_size: ranks that share one clip's tokens (P); must divide the number of
            processes and the DiT's ``num_heads``.
        **kwargs: Lightning's ``DDPStrategy`` arguments.
    """

    def __init__(self, sequence_parallel_size: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_sequence(sequence_parallel_size)


class SequenceParallelFSDPStrategy(_SequenceParallel, FSDPStrategy):
    """FSDP (weights, gradients and optimizer state sharded over all ranks) with Ulysses sequence
    parallelism inside groups of ``sequence_parallel_size``; ``**kwargs``: Lightning's ``FSDPStrategy``."""

    def __init__(self, sequence_parallel_size: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_sequence(sequence_parallel_size)
