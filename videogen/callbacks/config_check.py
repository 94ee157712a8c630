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
(``videogen fit`` prints it as one line and exits with status 2). The stage is read from the module
as it is: ``module.vae`` (a ``VideoAutoencoder``: the VAE stage) or ``module.vae_export.stats`` +
``module.dit.patch_size`` (the DiT stage); other modules get the shard check only.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from lightning.pytorch import Callback

from videogen.errors import ConfigError


def _requirements(module: Any) -> tuple[int, int, tuple[int, int, int], str, int] | None:
    """(temporal, spatial compression, DiT patch (pt, ph, pw), what, frame multiple) of the stage, or None.

    The frame multiple is the step between clip lengths the VAE takes (``1 + k * frame_multiple``): its
    temporal compression, or more where the VAE needs it (CogVideoX's decoder: an odd latent count)."""
    dit, export = getattr(module, "dit", None), getattr(module, "vae_export", None)
    if dit is not None and export is not None and hasattr(dit, "patch_size"):
        s = export.stats
        tc = int(s["temporal_compression"])
        return tc, int(s["spatial_compression"]), tuple(dit.patch_size), \
            f"the VAE at {export.folder} x DiT patch_size={tuple(dit.patch_size)}", int(s.get("frame_multiple", tc))
    vae = getattr(module, "vae", None)
    if vae is not None and hasattr(vae, "temporal_compression") and hasattr(vae, "spatial_compression"):
        return int(vae.temporal_compression), int(vae.spatial_compression), (1, 1, 1), \
            f"VideoAutoencoder(temporal_compression={vae.temporal_compression}, " \
            f"spatial_compression={vae.spatial_compression})", int(getattr(vae, "frame_multiple", vae.temporal_compression))
    return None


def bucket_problem(frames: int, height: int, width: int, tc: int, sc: int, patch: tuple[int, int, int],
                   frame_multiple: int | None = None) -> str | None:
    """Why a (frames, height, width) clip cannot pass through the stage, or None."""
    pt, ph, pw = patch
    fm = frame_multiple or tc
    if (frames - 1) % fm:
        lo = frames - (frames - 1) % fm
        return f"num_frames={frames} is not 1 + k*{fm} (use {lo} or {lo + fm})"
    latent_t = 1 + (frames - 1) // tc
    if latent_t % pt:
        return f"num_frames={frames} gives {latent_t} latent frames, not a multiple of the patch's {pt}"
    for name, size, p in (("height", height, ph), ("width", width, pw)):
        m = sc * p
        if size % m:
            return f"{name}={size} is not a multiple of {m} (use {max(m, size - size % m)} or {size - size % m + m})"
    return None


def check_shapes(module: Any, datamodule: Any) -> None:
    """Raise :class:`ConfigError` for the first bucket (or packing multiple) the stage cannot take."""
    need = _requirements(module)
    bucketer = getattr(datamodule, "bucketer", None)
    if need is None or bucketer is None:
        return
    tc, sc, patch, what, vae_fm = need
    if getattr(bucketer, "packing", False):
        fm, sm = bucketer.frame_multiple, bucketer.size_multiple
        problem = bucket_problem(1 + fm, sm, sm, tc, sc, patch, vae_fm)
        if problem:
            raise ConfigError(f"data.init_args.bucketer.frame_multiple={fm} / size_multiple={sm} (packing): "
                              f"{problem} for {what}; make frame_multiple a multiple of {math.lcm(vae_fm, tc * patch[0])} and size_multiple a "
                              f"multiple of {sc * max(patch[1:])}")
        return
    for i, b in enumerate(bucketer.buckets):
        problem = bucket_problem(b.num_frames, b.height, b.width, tc, sc, patch, vae_fm)
        if problem:
            raise ConfigError(f"data.init_args.bucketer.buckets[{i}] ({b.name}): {problem}, as {what} needs")


def check_token_shape(module: Any, datamodule: Any) -> None:
    """Give the datamodule's bucketer the DiT stage's token shape when the config leaves it unset; raise
    :class:`ConfigError` when a typed one disagrees (or the stage's shape breaks the token budget)."""
    need = _requirements(module)
    bucketer = getattr(datamodule, "bucketer", None)
    if need is None or bucketer is None or getattr(module, "dit", None) is None:  # tokens are the DiT's
        return
    tc, sc, (pt, ph, pw), what, _ = need
    shape = (tc * pt, sc * ph, sc * pw)
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
