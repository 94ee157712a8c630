"""``VAEModule``: stage 1, training the causal video VAE.

Losses: L1 + L2 reconstruction, an optional LPIPS-style perceptual term (weights from a local path;
off with one notice when none is given), KL, and from ``gan_start_step`` on a 3D patch-GAN with hinge
loss and the adaptive weight of taming/LDM. Manual optimisation with two optimizers (generator,
discriminator), each update through one guarded step (:meth:`VAEModule._guarded_update`): gradient
clipping; a NaN/Inf loss or gradient skips the update and is counted, ``max_bad_steps`` of them in a
row stop the run, loss spikes are logged (``videogen/callbacks/guards.py``). Optional EMA of the
autoencoder's weights, used for validation and export. Latent statistics (per-channel mean and std of
the posterior mean) are measured with the exported weights (the EMA when on, in eval mode) over each
validation run and again by :class:`~videogen.callbacks.export.StageExport` at fit end when the weights
moved since; they live in buffers, so a checkpoint alone is enough to export the stage. Without
validation data the export falls back to a running mean of the online encoder on training batches
(``stats.json`` says which).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from videogen.callbacks.guards import StepGuard, bad_ranks, reliability_callbacks
from videogen.callbacks.media_logging import log_videos, side_by_side
from videogen.encoding import LatentMoments, decode_latents, encode_latents
from videogen.evaluation.reconstruction import psnr, ssim
from videogen.losses.adversarial import adaptive_weight, hinge_d_loss, hinge_g_loss
from videogen.models.configurable import to_config
from videogen.models.latent_grid import LatentGrid
from videogen.models.vae import PatchDiscriminator3D, VideoAutoencoder
from videogen.modules.ema import ema_of, update_ema
from videogen.modules.lr_schedule import WarmupCosine, clip_gradients, optimizer_config
from videogen.modules.randomness import step_generator

log = logging.getLogger("videogen.vae")


def vae_adamw(params) -> torch.optim.Optimizer:
    """The VAE's default optimizer, for the autoencoder and the discriminator (a named function, not a
    lambda: jsonargparse writes it into a run's config.yaml by name; a lambda with tuple betas it cannot)."""
    return torch.optim.AdamW(params, lr=1e-3, betas=(0.5, 0.9), weight_decay=0.0)


class VAEModule(LightningModule):
    def __init__(
        self,
        vae: VideoAutoencoder,
        discriminator: PatchDiscriminator3D | None = None,
        perceptual_weights: str | None = None,
        l1_weight: float = 1.0,
        l2_weight: float = 1.0,
        perceptual_weight: float = 0.1,
        kl_weight: float = 1e-6,
        gan_weight: float = 0.5,
        gan_start_step: int = 2000,
        optimizer: OptimizerCallable = vae_adamw,
        lr_scheduler: LRSchedulerCallable = lambda optimizer: WarmupCosine(optimizer, warmup=100),
        disc_lr: float | None = None,
        grad_clip: float = 1.0,
        ema_decay: float | None = None,
        max_bad_steps: int = 20,
        stats_momentum: float = 0.01,
        num_log_videos: int = 4,
    ):
        """
        Args:
            vae: the autoencoder (a ``videogen.models.vae.VideoAutoencoder``).
            discriminator: a 3D patch discriminator; None trains without the GAN term.
            perceptual_weights: local path(s) to VGG16/LPIPS weights (comma separated); None: no
                perceptual term (one notice is logged). Never downloads.
            l1_weight, l2_weight, perceptual_weight, kl_weight, gan_weight: loss weights.
            gan_start_step: the generator step at which the discriminator and the GAN term start.
                (Lightning's ``trainer.max_steps`` counts the steps of both optimizers once the
                GAN runs: two per batch.)
            optimizer: builds the optimizer of each network (default AdamW, lr 1e-3, betas (0.5, 0.9), no
                weight decay).
            lr_scheduler: the generator's learning-rate schedule, stepped every generator step (default
                ``WarmupCosine`` with 100 warm-up steps, then constant); the discriminator's is constant.
            disc_lr: the discriminator's learning rate (None: the optimizer's).
            grad_clip: gradient norm clip for both networks (0 disables).
            ema_decay: keep an EMA of the autoencoder (used for validation and export); None: off.
            max_bad_steps: NaN/Inf losses or gradients in a row before the run stops with an error.
            stats_momentum: momentum of the running latent mean/std measured on training batches.
            num_log_videos: validation clips logged as original | reconstruction videos.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["vae", "discriminator", "optimizer", "lr_scheduler"])
        self.automatic_optimization = False
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.vae, self.discriminator = vae, discriminator
        self.perceptual = None
        if perceptual_weights and perceptual_weight > 0:
            from videogen.losses.perceptual import PerceptualLoss, load_perceptual_weights

            self.perceptual = PerceptualLoss()
            load_perceptual_weights(self.perceptual, *[p.strip() for p in perceptual_weights.split(",")])
        elif perceptual_weight > 0:
            log.info("VAEModule: no perceptual_weights given, training without the perceptual loss "
                     "(give a local VGG16/LPIPS weights file to enable it; nothing is downloaded)")
        self.ema = ema_of(vae, ema_decay)  # validation and export
        c = vae.latent_channels
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_var", torch.ones(c))
        self.register_buffer("stats_count", torch.zeros((), dtype=torch.long))
        # moments measured with the export weights: (mean, var) per channel, clips, and the step they belong to
        self.register_buffer("export_mean", torch.zeros(c))
        self.register_buffer("export_var", torch.ones(c))
        self.register_buffer("export_clips", torch.zeros((), dtype=torch.long))
        self.register_buffer("export_step", torch.full((), -1, dtype=torch.long))
        self._moments = LatentMoments(c)
        # Lightning's global_step counts every optimizer step (both networks once the GAN runs);
        # the schedule counts generator steps.
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        self.guard = StepGuard(max_bad_steps)  # NaN/Inf steps and loss spikes (saved in checkpoints)
        self._val_videos: list[torch.Tensor] = []

    # ---- the networks used for evaluation and export -----------------------------------------

    @property
    def latent_grid(self) -> LatentGrid:
        """The VAE's own compression (no patch): the setup check reads it."""
        vae = self.vae
        return LatentGrid.of_vae(vae, f"VideoAutoencoder(temporal_compression={vae.temporal_compression}, "
                                      f"spatial_compression={vae.spatial_compression})")

    @property
    def export_vae(self) -> VideoAutoencoder:
        return self.ema.module if self.ema is not None else self.vae

    def latent_stats(self) -> dict[str, Any]:
        """What the next stage needs: per-channel latent mean/std, scaling and compression; measured with
        the export weights when a validation run or the export measured them, else the running mean."""
        measured = int(self.export_clips) > 0
        mean, var = (self.export_mean, self.export_var) if measured else (self.latent_mean, self.latent_var)
        vae = self.export_vae
        return {"latent_channels": vae.latent_channels, "latent_mean": mean.tolist(),
                "latent_std": var.clamp_min(1e-12).sqrt().tolist(), "shift_factor": float(mean.mean()),
                "scaling_factor": float(1.0 / var.mean().clamp_min(1e-12).sqrt()),
                "temporal_compression": vae.temporal_compression, "spatial_compression": vae.spatial_compression,
                "measured_batches": int(self.stats_count),
                "measured_with": "export weights" if measured else "online encoder, running mean (no validation data)",
                "measured_clips": int(self.export_clips), "measured_step": int(self.export_step)}

    @property
    def stats_are_current(self) -> bool:
        """True when the export-weight statistics were measured at the current step."""
        return int(self.export_clips) > 0 and int(self.export_step) == self.global_step

    @torch.no_grad()
    def measure_latent_stats(self, batches) -> None:
        """Measure the per-channel moments of the export weights' posterior mean over ``batches`` (dicts
        with a ``video`` (B, 3, T, H, W)); exact, pooled over every latent element."""
        moments, vae = LatentMoments(self.export_vae.latent_channels), self.export_vae
        was_training = vae.training
        vae.eval()
        for batch in batches:  # as the loader yields them (uint8) or as transferred (float in [-1, 1])
            video = batch.get("video")
            for v in (video if isinstance(video, list) else [] if video is None else [video]):
                v = v.to(self.device)
                v = v.float().div_(127.5).sub_(1.0) if v.dtype == torch.uint8 else v
                moments.add(encode_latents(vae, v if v.ndim == 5 else v[None]))
        vae.train(was_training)
        self._store_moments(moments)

    def _store_moments(self, moments: "LatentMoments") -> None:
        if moments.clips == 0:
            return
        mean, var = moments.result()
        self.export_mean.copy_(mean)
        self.export_var.copy_(var)
        self.export_clips.fill_(moments.clips)
        self.export_step.fill_(self.global_step)

    @torch.no_grad()
    def _update_latent_stats(self, z: torch.Tensor) -> None:
        # z: (B, C, t, h, w) posterior means -> per-channel moments
        zc = z.detach().float().transpose(0, 1).flatten(1)  # c (b t h w)
        mean, var = zc.mean(1), zc.var(1, unbiased=False)
        m = 1.0 if int(self.stats_count) == 0 else self.hparams.stats_momentum
        self.latent_mean.lerp_(mean, m)
        self.latent_var.lerp_(var, m)
        self.stats_count += 1

    # ---- training ------------------------------------------------------------------------------

    def _gan_active(self) -> bool:
        return self.discriminator is not None and int(self.generator_steps) >= self.hparams.gan_start_step

    def reconstruction_losses(self, x: torch.Tensor, rec: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.hparams
        losses = {"l1": (x - rec).abs().mean(), "l2": F.mse_loss(rec, x)}
        nll = h.l1_weight * losses["l1"] + h.l2_weight * losses["l2"]
        if self.perceptual is not None:
            losses["perceptual"] = self.perceptual(x, rec).mean()
            nll = nll + h.perceptual_weight * losses["perceptual"]
        losses["nll"] = nll
        return losses

    def _check(self, loss: torch.Tensor | None, what: str, parameters=None) -> bool:
        """The guard's decision for this step, taken across ranks (all ranks skip and stop together)."""
        ranks = functools.partial(bad_ranks, self.trainer.strategy)
        return self.guard.check(loss, self.global_step, what, parameters, ranks, self.trainer.world_size)

    @property
    def bad_steps(self) -> int:
        """Updates skipped for a NaN/Inf loss or gradient so far (``train/bad_steps``)."""
        return self.guard.bad_steps

    def _guarded_update(self, optimizer, loss: torch.Tensor, what: str, parameters) -> bool:
        """One network's update: zero the gradients, check the loss, backward, check the gradients, clip,
        step. False when the guard skipped it (counted; no weight or moment moves)."""
        optimizer.zero_grad(set_to_none=True)
        if self._check(loss, what):
            return False
        self.manual_backward(loss)
        if self._check(None, what, parameters):
            optimizer.zero_grad(set_to_none=True)
            return False
        if self.hparams.grad_clip:
            clip_gradients(self, optimizer, self.hparams.grad_clip, "norm")
        optimizer.step()
        return True

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers() if self.discriminator is not None else (self.optimizers(), None)
        x = batch["video"]  # (B, 3, T, H, W) in [-1, 1]
        gan = self._gan_active()
        posterior = self.vae.encode(x)
        rec = self.vae.decode(posterior.sample(step_generator(x.device, self.generator_steps, self.global_rank)))
        losses = self.reconstruction_losses(x, rec)
        kl = posterior.kl().mean() / x[0].numel()  # per pixel, like the reconstruction terms
        loss = losses["nll"] + self.hparams.kl_weight * kl
        if gan:
            g_loss = hinge_g_loss(self.discriminator(rec))
            weight = adaptive_weight(losses["nll"], g_loss, self.vae.last_layer_weight)
            loss = loss + self.hparams.gan_weight * weight * g_loss
            losses.update(g=g_loss, gan_weight=weight)
        if not self._guarded_update(opt_g, loss, "generator loss", self.vae.parameters()):
            return
        self.lr_schedulers().step()  # the schedule counts generator steps
        self.generator_steps += 1
        update_ema(self.ema, self.vae)
        self._update_latent_stats(posterior.mode())
        if gan:
            d_loss = hinge_d_loss(self.discriminator(x), self.discriminator(rec.detach()))
            if self._guarded_update(opt_d, d_loss, "discriminator loss", self.discriminator.parameters()):
                losses["d"] = d_loss
        spike = self.guard.passed(loss.item(), self.global_step)
        bs = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/kl", kl, batch_size=bs)
        self.log("train/psnr", psnr(x.detach(), rec.detach()).mean(), prog_bar=True, batch_size=bs)
        for k, v in losses.items():
            self.log(f"train/{k}", v, batch_size=bs)
        self.log("train/bad_steps", float(self.bad_steps), batch_size=bs)
        self.log("train/loss_spike", float(spike), batch_size=bs)

    # ---- validation ----------------------------------------------------------------------------

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = batch["video"]
        vae = self.export_vae
        z = encode_latents(vae, x)  # chunked and tiled from the memory budget
        self._moments.add(z)
        rec = decode_latents(vae, z)
        bs = x.shape[0]
        self.log("val/psnr", psnr(x, rec).mean(), prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val/ssim", ssim(x, rec).mean(), batch_size=bs, sync_dist=True)
        self.log("val/l1", (x - rec).abs().mean(), batch_size=bs, sync_dist=True)
        room = self.hparams.num_log_videos - len(self._val_videos)
        if room > 0:
            self._val_videos += list(side_by_side(x[:room], rec[:room]).cpu())

    def on_validation_epoch_start(self) -> None:
        self._moments = LatentMoments(self.export_vae.latent_channels)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            m = self._moments
            if self.trainer.world_size > 1:  # every rank's clips: sum the raw moments
                packed = torch.cat([m.sum, m.sq, torch.tensor([m.count, m.clips], dtype=torch.float64)])
                packed = self.trainer.strategy.reduce(packed.to(self.device), reduce_op="sum").cpu()
                c = m.sum.numel()
                m.sum, m.sq, m.count, m.clips = packed[:c], packed[c: 2 * c], int(packed[-2]), int(packed[-1])
            self._store_moments(m)
        if self._val_videos and not self.trainer.sanity_checking:
            log_videos(self.trainer, "val/reconstruction", self._val_videos, step=self.global_step)
        self._val_videos = []

    # ---- optimizers, checkpoints ----------------------------------------------------------------

    def configure_optimizers(self):
        generator = optimizer_config(self.optimizer, self.lr_scheduler, self.vae.parameters())
        if self.discriminator is None:
            return generator
        opt_d = self.optimizer(self.discriminator.parameters())
        for group in opt_d.param_groups:
            group["lr"] = self.hparams.disc_lr or group["lr"]
        return generator, {"optimizer": opt_d}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Everything `videogen export` needs, in plain types (loadable with weights_only=True)."""
        checkpoint["videogen"] = {"stage": "vae", "config": to_config(self.export_vae),
                                  "stats": self.latent_stats(), "export_prefix": "ema.module." if self.ema else "vae."}
        checkpoint["videogen_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.load_state_dict(checkpoint.get("videogen_guard", {}))

    def configure_callbacks(self):
        return reliability_callbacks(self)  # out-of-memory advice, bucket shape check; no NumericGuard
