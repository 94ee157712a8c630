"""``VideoEvaluation``: the metrics of ``videogen evaluate`` during DiT training, every N validations.

Every rank samples its share of the prompts through ``DiTModule.sample_across_ranks`` (the
module's ``val_shape``, ``val_steps``, ``val_cfg``; the videos are all-gathered), rank 0 computes the
metrics (videogen/evaluation/suite.py) and logs them to every logger as ``eval/<metric>``, with the
prompt x frames grid as an image (``eval/grid``) and the first ``log_videos`` videos
(``eval/samples``). Its own cost is measured and logged: ``eval/seconds`` (this evaluation, wall
clock on rank 0) and ``eval/time_share`` (all evaluations so far / time since the fit started).

Prompts: ``prompts`` (a list) or ``prompts_from`` (a text file or a shard set's captions, with the
ground-truth attributes the judge uses). Distribution metrics compare with ``reference`` (a shard
set; its statistics are cached in ``cache_dir``) using the module's own VAE (``vae_fd``) and, when
given, ``i3d`` (``fvd``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from lightning.pytorch import Callback

log = logging.getLogger("videogen.evaluate")


class VideoEvaluation(Callback):
    def __init__(self, prompts: list[str] | None = None, prompts_from: str | None = None,
                 num_prompts: int | None = None, caption: str = "txt", every_n_validations: int = 1,
                 metrics: list[str] | None = None, reference: str | None = None, reference_limit: int | None = None,
                 i3d: str | None = None, clip: str | None = None, image_encoder: str | None = None,
                 cache_dir: str | None = None,
                 log_videos: int = 4):
        """
        Args:
            prompts: the prompts to sample, or
            prompts_from: a text file (one prompt a line) or a shard set whose ``caption`` are the prompts.
            num_prompts: use the first N.
            caption: with ``prompts_from`` shards: ``txt`` or a json caption name (``long``).
            every_n_validations: evaluate at validations N, 2N, ... (sanity checks are not counted).
            metrics: metric groups (see ``videogen evaluate --metrics``); None: every group that can run.
            reference, reference_limit: real clips for ``vae_fd`` / ``fvd``.
            i3d, clip: local weights for ``fvd`` / ``clip_score`` (and CLIP frame features).
            image_encoder: a local image model folder (DINO) for the consistency features.
            cache_dir: where reference statistics are cached (None: recomputed once per run, in memory).
            log_videos: how many of the sampled videos are logged as videos.
        """
        if not prompts and not prompts_from:
            raise ValueError("VideoEvaluation needs prompts or prompts_from")
        if every_n_validations < 1:
            raise ValueError(f"VideoEvaluation every_n_validations={every_n_validations}: must be >= 1")
        self.prompts, self.prompts_from, self.num_prompts, self.caption = prompts, prompts_from, num_prompts, caption
        self.every, self.metrics, self.log_videos = every_n_validations, metrics, log_videos
        self.reference, self.reference_limit, self.i3d, self.clip = reference, reference_limit, i3d, clip
        self.image_encoder = image_encoder
        self.cache_dir = cache_dir
        self.validations = 0
        self.total_seconds = 0.0
        self.last: dict[str, Any] | None = None
        self._targets: list[tuple[str, Any]] | None = None
        self._tools = None
        self._fit_began: float | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_began = time.perf_counter()

    def _setup(self, pl_module) -> None:
        from videogen.data.stages import Skips
        from videogen.evaluation.features import CLIPFeatures, I3DFeatures, ImageEncoderFeatures, VAEFeatures
        from videogen.evaluation.runner import read_prompts
        from videogen.evaluation.suite import Tools

        self._skips = Skips(max_logged=20)
        if self.prompts:
            self._targets = [(p, None) for p in self.prompts[: self.num_prompts]]
        else:
            self._targets = read_prompts(self.prompts_from, self.caption, self.num_prompts, False, self._skips)
        device = pl_module.device
        self._tools = Tools(i3d=I3DFeatures(self.i3d, device) if self.i3d else None,
                            vae=VAEFeatures(pl_module.vae_export, device), clip=CLIPFeatures(self.clip, device)
                            if self.clip else None, image_encoder=ImageEncoderFeatures(self.image_encoder, device)
                            if self.image_encoder else None, reference=self.reference, reference_limit=self.reference_limit,
                            cache_dir=self.cache_dir, shape=tuple(pl_module.hparams.val_shape), progress=False)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every:
            return
        began = time.perf_counter()
        if self._targets is None:
            self._setup(pl_module)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            clips = pl_module.sample_across_ranks([p for p, _ in self._targets])  # (P, 3, T, H, W), every rank
        pl_module.train(was_training)
        if trainer.is_global_zero:
            self._evaluate_and_log(trainer, pl_module, clips.float().cpu())
        self.total_seconds += time.perf_counter() - began
        if trainer.is_global_zero:
            elapsed = time.perf_counter() - (self._fit_began or began)
            self._log_scalars(trainer, {"eval/seconds": time.perf_counter() - began,
                                        "eval/time_share": self.total_seconds / max(elapsed, 1e-9)})

    def _evaluate_and_log(self, trainer, pl_module, clips: torch.Tensor) -> None:
        from videogen.callbacks.media_logging import log_image, log_videos
        from videogen.evaluation.report import grid_image
        from videogen.evaluation.suite import evaluate, plan_metrics
        from videogen.evaluation.videos import EvalVideo, to_frames

        videos = [EvalVideo(f"{i:03d}", to_frames(c), p, a) for i, (c, (p, a)) in enumerate(zip(clips, self._targets))]
        groups, _ = plan_metrics(self.metrics, self._tools, True)
        metrics, _ = evaluate(videos, groups, self._tools, self._skips)
        self.last = metrics
        self._log_scalars(trainer, {f"eval/{k}": float(v) for k, v in metrics.items()
                                    if isinstance(v, (int, float)) and v is not None})
        log_image(trainer, "eval/grid", grid_image(videos), trainer.global_step)
        if self.log_videos:
            log_videos(trainer, "eval/samples", list(clips[: self.log_videos]), step=trainer.global_step)

    @staticmethod
    def _log_scalars(trainer, scalars: dict[str, float]) -> None:
        for logger in trainer.loggers:
            try:
                logger.log_metrics(scalars, step=trainer.global_step)
            except Exception as e:  # a logging failure must never stop training
                log.warning("could not log evaluation metrics to %s: %s", type(logger).__name__, e)
