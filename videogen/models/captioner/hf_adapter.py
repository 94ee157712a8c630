"""``HFVisionCaptioner``: finetune a pretrained Hugging Face image-to-text model on video clips.

Any ``VisionEncoderDecoderModel`` folder works (a ViT/Swin/BEiT/... image encoder with a GPT-2/BERT/...
text decoder, e.g. a ViT-GPT2 image captioner). Each of ``num_frames`` evenly sampled frames is given
to the image encoder as the model expects it (resized to its ``image_size``, normalised with its
processor's mean/std); the frames' tokens, each plus a learned time embedding (zero at the start, so
the pretrained model is unchanged until it learns to use time), are concatenated, and the text
decoder cross-attends to all of them. With ``lora_rank > 0`` the pretrained weights are frozen and
LoRA adapters are trained (``peft``: ``pip install 'videogen[lora]'``).

Like :mod:`videogen.models.text`, it is built from a local folder (``local_files_only``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from videogen.models.captioner.encoder import sample_indices
from videogen.models.configurable import Configurable

LORA_TARGETS = ("query", "value", "q_proj", "v_proj", "c_attn", "qkv")


class HFVisionCaptioner(Configurable, nn.Module):
    def __init__(self, path: str, num_frames: int = 4, lora_rank: int = 0, lora_alpha: float = 16.0,
                 lora_dropout: float = 0.0, lora_target_modules: list[str] | None = None,
                 freeze_vision: bool = False):
        """
        Args:
            path: a local folder holding a ``VisionEncoderDecoderModel`` (config.json, weights) and its tokenizer.
            num_frames: frames sampled evenly from each clip, each encoded as one image.
            lora_rank: > 0: train LoRA adapters of this rank instead of the full model.
            lora_alpha, lora_dropout: LoRA scaling and dropout.
            lora_target_modules: module names to adapt (default: the attention projections found among
                ``query``/``value``/``q_proj``/``v_proj``/``c_attn``/``qkv``).
            freeze_vision: keep the image encoder fixed (full finetuning of the decoder only).
        """
        super().__init__()
        from transformers import AutoConfig, VisionEncoderDecoderModel

        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"HFVisionCaptioner path={path!r}: no config.json there; give a local folder "
                                    "holding a Hugging Face VisionEncoderDecoderModel (save_pretrained output)")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type != "vision-encoder-decoder":
            raise ValueError(f"HFVisionCaptioner path={path!r} holds a {config.model_type!r} model; it takes "
                             "vision-encoder-decoder models (an image encoder + a text decoder)")
        model = VisionEncoderDecoderModel.from_pretrained(folder, local_files_only=True)
        self.path, self.num_frames, self.in_channels = str(folder), num_frames, 3
        self.vocab_size = model.decoder.config.vocab_size
        dec = model.decoder.config
        self.max_length = getattr(dec, "max_position_embeddings", None) or getattr(dec, "n_positions", None)
        enc = model.config.encoder
        self.image_size = enc.image_size if isinstance(enc.image_size, int) else int(enc.image_size[0])
        mean, std = [0.5] * 3, [0.5] * 3
        processor = folder / "preprocessor_config.json"
        if processor.is_file():
            p = json.loads(processor.read_text())
            mean, std = p.get("image_mean", mean), p.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.time = nn.Parameter(torch.zeros(num_frames, enc.hidden_size))
        if freeze_vision:
            model.encoder.requires_grad_(False)
        if lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            targets = list(lora_target_modules or [t for t in LORA_TARGETS if t in names])
            if not targets:
                raise ValueError(f"HFVisionCaptioner: no LoRA target modules found in {path}; set lora_target_modules "
                                 f"(linear layers there: {sorted(names)[:12]})")
            model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                     target_modules=targets))
        self.model = model

    @property
    def _base(self):
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def encode(self, video: Tensor) -> Tensor:
        b, _, t = video.shape[:3]
        x = video[:, :, sample_indices(t, self.num_frames, video.device)]  # (B, 3, F, H, W)
        f = x.shape[2]
        x = rearrange(x, "b c f h w -> (b f) c h w")
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> the processor's normalisation
        base = self._base
        hidden = base.encoder(pixel_values=x).last_hidden_state  # (BF, N, De)
        hidden = rearrange(hidden, "(b f) n d -> b f n d", b=b) + self.time[:f, None]
        hidden = rearrange(hidden, "b f n d -> b (f n) d")
        if getattr(base, "enc_to_dec_proj", None) is not None:
            hidden = base.enc_to_dec_proj(hidden)
        return hidden  # (B, F*N, D)

    def null_memory(self, batch: int) -> Tensor:
        raise ValueError("HFVisionCaptioner has no text-only mode: set video_dropout: 0, and upsample prompts with "
                         "the built-in captioner or a causal LM (videogen.pipelines.captioning.upsample_prompt)")

    def decode(self, memory: Tensor, ids: Tensor, key_mask: Tensor | None = None, positions: Tensor | None = None,
               cache=None):
        kw = {}
        if positions is not None:
            kw["position_ids"] = positions
        out = self._base.decoder(input_ids=ids, attention_mask=key_mask.long() if key_mask is not None else None,
                                 encoder_hidden_states=memory, cache=cache, use_cache=True, **kw)
        return out.logits, getattr(out, "cache", None) if hasattr(out, "cache") else out.past_key_values

    @staticmethod
    def reorder_cache(cache, rows: Tensor):
        cache.reorder_cache(rows)
        return cache

    def state_dict(self, *args, **kwargs):
        """Tied weights (a decoder's embedding and output layer) as separate tensors: safetensors keeps no aliases."""
        state = super().state_dict(*args, **kwargs)
        seen: set[int] = set()
        for k, v in state.items():
            if v.data_ptr() in seen:
                state[k] = v.clone()
            seen.add(v.data_ptr())
        return state
