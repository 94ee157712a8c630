"""``ConfigCheck``: refuse a configuration the run cannot use at ``setup``, before the first step.

* **Shards**: ``data.init_args.train_shards`` / ``val_shards`` must name shards that exist (local
  folders, globs and files are looked up; URLs are left to the stream).
* **Bucket shapes**: a clip of ``T x H x W`` pixels goes through the VAE as ``1 + k *
  temporal_compression`` frames with ``H`` and ``W`` multiples of ``spatial_compression``; the DiT then
  cuts the latent into ``patch_size`` patches, so its latent frames and sides must be multiples of the
  patch too. A table that breaks this would fail at the first batch of that bucket, possibly hours
  into a run.
* **Token shape** (DiT stage): a token is ``temporal x spatial x spatial`` compression times the DiT
  patch in pixels. A config's ``data.init_args.bucketer.token_shape`` left unset is set from the stage
  here (a token budget sizes batches by it); a typed one that disagrees is refused.

Each problem raises :class:`~videogen.errors.ConfigError` naming the key, what it holds and what would work
(``videogen fit`` prints it as one line and exits with status 2). The stage is asked for its grid,
``module.latent_grid`` (a :class:`~videogen.models.latent_grid.LatentGrid`: the VAE's own, the DiT's VAE x
patch, the captioner's VAE when it reads latents); a stage whose grid is None (a captioner on pixels) gets
the shard check only, and a module with no ``latent_grid`` at all is refused (AttributeError), never
silently left unchecked.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from lightning.pytorch import Callback

from videogen.errors import ConfigError


def check_shapes(module: Any, datamodule: Any) -> None:
    """Raise :class:`ConfigError` for the first bucket (or packing multiple) the stage cannot take."""
    grid = module.latent_grid  # every stage has one: a stage without it fails here, not silently unchecked
    bucketer = getattr(datamodule, "bucketer", None)
    if grid is None or bucketer is None:
        return
    if getattr(bucketer, "packing", False):
        fm, sm = bucketer.frame_multiple, bucketer.size_multiple
        problem = grid.problem(1 + fm, sm, sm)
        if problem:
            tt, th, tw = grid.token_shape
            raise ConfigError(f"data.init_args.bucketer.frame_multiple={fm} / size_multiple={sm} (packing): "
                              f"{problem} for {grid.source}; make frame_multiple a multiple of "
                              f"{math.lcm(grid.frame_multiple, tt)} and size_multiple a multiple of {max(th, tw)}")
        return
    for i, b in enumerate(bucketer.buckets):
        problem = grid.problem(b.num_frames, b.height, b.width)
        if problem:
            raise ConfigError(f"data.init_args.bucketer.buckets[{i}] ({b.name}): {problem}, as {grid.source} needs")


def check_token_shape(module: Any, datamodule: Any) -> None:
    """Give the datamodule's bucketer the DiT stage's token shape when the config leaves it unset; raise
    :class:`ConfigError` when a typed one disagrees (or the stage's shape breaks the token budget)."""
    grid, bucketer = module.latent_grid, getattr(datamodule, "bucketer", None)
    if grid is None or bucketer is None or getattr(module, "dit", None) is None:  # tokens are the DiT's
        return
    shape, what = grid.token_shape, grid.source
    if bucketer.token_shape is None:
        try:
            datamodule.bucketer = replace(bucketer, token_shape=shape)
        except ValueError as e:
            raise ConfigError(f"data.init_args.bucketer with token_shape={list(shape)} ({what}): {e}") from None
    elif tuple(bucketer.token_shape) != shape:
        raise ConfigError(f"data.init_args.bucketer.token_shape={list(bucketer.token_shape)}, but {what} makes "
                          f"tokens of {list(shape)} pixels: leave token_shape out (it is taken from the model)")


def check_shards(datamodule: Any) -> None:
    """Raise :class:`ConfigError` when a shard setting names nothing that exists."""
    from videogen.data.shards import expand_urls

    for key in ("train_shards", "val_shards"):
        spec = getattr(datamodule, key, None)
        if spec is None:
            continue
        try:
            expand_urls(spec)
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"data.init_args.{key}={spec!r}: {e}") from e


class ConfigCheck(Callback):
    """Check the datamodule's shards, buckets and token shape against the stage at ``setup`` (see module doc)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None:
            return
        check_shards(datamodule)
        check_shapes(pl_module, datamodule)
        check_token_shape(pl_module, datamodule)
