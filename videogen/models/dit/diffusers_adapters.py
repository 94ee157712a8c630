"""Pretrained diffusers video transformers as the stage-3 network, behind the call signature of our DiT.

    net(x (B, C, T, H, W) normalised latents x_t, t (B,) in [0, 1], text (B, L, D), text_mask (B, L),
        cond=None, cond_mask=None) -> (B, C, T, H, W) the model's own prediction

One adapter per family, each loading exactly one diffusers class from a local folder (a model folder
with ``config.json`` and ``diffusion_pytorch_model*.safetensors``, or a downloaded pipeline folder,
whose ``transformer/`` is then used):

* :class:`WanTransformer` -- ``WanTransformer3DModel`` (Wan 2.1 text-to-video, and image-to-video when
  its config has ``image_dim``): flow matching, timestep ``1000 t`` (diffusers' ``sigma * 1000``), the
  caption's UMT5 tokens zero-padded without a mask (as ``WanPipeline`` gives them);
* :class:`CogVideoXTransformer` -- ``CogVideoXTransformer3DModel``: v-prediction DDPM on its integer
  timestep ``round(1000 t) - 1`` (:class:`videogen.diffusion.DiscreteDDPM`), T5 run unmasked over the
  padded caption (``text_attends_padding``), latents (B, T, C, H, W) inside;
* :class:`LTXVideoTransformer` -- ``LTXVideoTransformer3DModel``: flow matching, timestep ``1000 t``,
  T5 run unmasked with the caption mask given to the transformer, latents packed to tokens as
  ``LTXPipeline`` packs them.

Nothing from the folder picks code: the class is the adapter's own (``config.json``'s
``_class_name`` must name it), the weights load only from safetensors (a folder with only pickled
``.bin``/``.pt`` weights is refused), ``config.json`` is bounded in size.

LoRA (``lora_rank``): peft adapters are added to ``lora_target_modules`` of the frozen base; only
they train, and the module's ``state_dict`` holds only them (checkpoints and exports are the adapter
weights; the base is read from ``path`` again). :meth:`DiffusersTransformer.diffusers_lora` gives them
in the format diffusers' ``pipe.load_lora_weights`` loads (``videogen.pretrained.save_export`` writes
``pytorch_lora_weights.safetensors`` with the pipeline class's own ``save_lora_weights``);
:meth:`DiffusersTransformer.merge_lora` folds them into the base weights. Without ``lora_rank``
every weight trains (a full finetune) and is exported.

Packing several clips into one token row is refused: these models attend over all tokens of a row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from videogen.models.configurable import Configurable

MAX_CONFIG_BYTES = 1 << 20  # a model's config.json is a few KB
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _model_folder(path: str, class_name: str) -> tuple[Path, dict[str, Any]]:
    """The folder holding the transformer's config.json and safetensors weights, and that config, checked:
    its ``_class_name`` is ``class_name`` and its weights are safetensors."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (init arg path: a local diffusers {class_name} folder, "
                                "or a downloaded pipeline folder with a transformer/ subfolder)")
    if not (folder / "config.json").is_file() and (folder / "transformer" / "config.json").is_file():
        folder = folder / "transformer"
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: has no config.json: point init arg path at a diffusers {class_name} "
                                "folder (config.json + diffusion_pytorch_model.safetensors)")
    if config_file.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{config_file}: {config_file.stat().st_size} bytes, more than a model config holds; refused")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{config_file}: not readable JSON ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: not a JSON object")
    if config.get("_class_name") != class_name:
        raise ValueError(f"{config_file}: _class_name {config.get('_class_name')!r} is not {class_name}, the only "
                         "class this adapter loads: use the adapter of that model's family, or the right folder")
    if not ((folder / WEIGHTS_NAME).is_file() or (folder / f"{WEIGHTS_NAME}.index.json").is_file()):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise ValueError(f"{folder}: has only pickled weights ({', '.join(pickled[:3])}), which videogen never "
                             "loads: convert them to safetensors (diffusers' save_pretrained(safe_serialization=True))")
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (or its .index.json): download the model's weights")
    return folder, config


def _read_config_key(path: str, class_name: str, key: str) -> Any:
    return _model_folder(path, class_name)[1].get(key)


class DiffusersTransformer(nn.Module):
    """What every family shares: loading, LoRA, gradient checkpointing, the wrap unit. Subclasses set
    ``diffusers_class``, ``pipeline_class`` and ``block_name``, and define ``forward``."""

    diffusers_class = ""  # the one diffusers model class the adapter loads (config.json's _class_name)
    pipeline_class = ""  # the diffusers pipeline whose save_lora_weights writes the LoRA file
    block_name = ""  # the transformer block class: FSDP / activation-checkpointing / compile unit
    timestep_scale = 1000.0  # the network's timestep = timestep_scale * t
    text_dim_key = "text_dim"  # the config key of the text tokens' width
    sequence_parallel = None  # our Ulysses hook does not reach into diffusers' attention
    retired_init_args = ("gradient_checkpointing",)  # now DiTModule(activation_checkpointing), from outside

    def _setup(self, path: str, lora_rank: int | None, lora_alpha: float | None,
               lora_target_modules: list[str] | None, dtype: str) -> None:
        import diffusers

        if dtype not in DTYPES:
            raise ValueError(f"{type(self).__name__} init arg dtype={dtype!r}: use {', '.join(DTYPES)}")
        if lora_rank is not None and lora_rank < 1:
            raise ValueError(f"{type(self).__name__} init arg lora_rank={lora_rank}: a positive rank, or null for a "
                             "full finetune")
        folder, config = _model_folder(path, self.diffusers_class)
        cls = getattr(diffusers, self.diffusers_class)  # the adapter's own class, never one a file names
        if torch.get_default_device().type == "meta":  # a shape check (videogen.pretrained): structure only
            self.transformer = cls.from_config(config)
        else:
            self.transformer = cls.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                                   torch_dtype=DTYPES[dtype])
        self.transformer.train()  # from_pretrained leaves it in eval mode; the enclosing module decides
        self.config = dict(self.transformer.config)
        self.lora_rank = lora_rank
        self._frozen_names: frozenset[str] = frozenset()
        if lora_rank is not None:
            from peft import LoraConfig

            self.transformer.requires_grad_(False)
            targets = list(lora_target_modules or self.default_lora_targets)
            try:
                self.transformer.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_alpha or lora_rank,
                                                        target_modules=targets, init_lora_weights=True))
            except ValueError as e:  # peft: target modules not found
                raise ValueError(f"{type(self).__name__} init arg lora_target_modules={targets} matched no layer of "
                                 f"{self.diffusers_class} ({str(e).splitlines()[0][:120]}): name its Linear layers "
                                 f"(e.g. {list(self.default_lora_targets)})") from None
            self._frozen_names = frozenset(f"transformer.{n}" for n, p in self.transformer.named_parameters()
                                           if not p.requires_grad)
            self.register_state_dict_post_hook(self._drop_frozen)
            self.register_load_state_dict_post_hook(self._ignore_missing_frozen)

    default_lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    # ---- LoRA: only the adapters are state ----------------------------------------------------

    @staticmethod
    def _drop_frozen(module: "DiffusersTransformer", state: dict[str, Any], prefix: str, local_metadata) -> None:
        for name in module._frozen_names:
            state.pop(prefix + name, None)

    @staticmethod
    def _ignore_missing_frozen(module: "DiffusersTransformer", incompatible) -> None:
        frozen = module._frozen_names
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                        if not any(k == n or k.endswith("." + n) for n in frozen)]

    def diffusers_lora(self) -> tuple[Any, dict[str, Tensor], dict[str, Any]] | None:
        """``(pipeline class, LoRA layers, adapter metadata)`` for ``pipeline_class.save_lora_weights``
        (peft's key names, which diffusers prefixes with ``transformer.``); None without LoRA."""
        if self.lora_rank is None:
            return None
        import diffusers
        from peft.utils import get_peft_model_state_dict

        layers = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.transformer).items()}
        return getattr(diffusers, self.pipeline_class), layers, self.transformer.peft_config["default"].to_dict()

    def merge_lora(self) -> "DiffusersTransformer":
        """Fold the LoRA adapters into the base weights in place: afterwards this is a plain finetuned model
        (every weight is state, ``lora_rank`` None in its config)."""
        if self.lora_rank is None:
            return self
        self.transformer.fuse_lora()
        self.transformer.unload_lora()
        self._frozen_names = frozenset()
        self.lora_rank = None
        self.__dict__["_init_args"] = {**self._init_args, "lora_rank": None, "lora_alpha": None,
                                       "lora_target_modules": None}
        return self

    # ---- what DiTModule, sampling and the strategies read -------------------------------------

    @property
    def in_channels(self) -> int:
        """Latent channels (the VAE's); the network's own input may be wider (Wan i2v's conditioning)."""
        return int(self.config["out_channels"] or self.config["in_channels"])

    @property
    def text_dim(self) -> int:
        """Width of the text tokens the transformer takes (the text encoder's)."""
        return int(self.config[self.text_dim_key])

    @property
    def block_class(self) -> type:
        import diffusers.models.transformers as transformers

        for module in self.transformer.modules():
            if type(module).__name__ == self.block_name:
                return type(module)
        return getattr(transformers, self.block_name)

    def _refuse_pack(self, x) -> None:
        if isinstance(x, (list, tuple)):
            raise ValueError(f"{self.diffusers_class} cannot train on packed rows (its attention spans every token "
                             "of a row): give the data buckets (data.init_args.bucketer.buckets), not a token_budget")

    def _text_to_video_only(self, x, cond) -> None:
        """A text-to-video network's inputs: one bucket batch (no packs), no given frames."""
        self._refuse_pack(x)
        if cond is not None:
            raise ValueError(f"cond given to a text-to-video {self.diffusers_class}")

    def _net_dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype


class WanTransformer(Configurable, DiffusersTransformer):
    """Wan 2.1's ``WanTransformer3DModel`` (text-to-video; image-to-video when its config has ``image_dim``).

    Args:
        path: the local transformer folder (or the downloaded pipeline folder, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers).
        lora_rank: LoRA rank; None: full finetune (every weight trains).
        lora_alpha: LoRA scale numerator (the update is alpha / rank * B A); default: the rank.
        lora_target_modules: module names (peft's ``target_modules``) that get adapters; default the
            attention projections ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of self- and cross-attention
            (image-to-video: also the image cross-attention's ``add_k_proj``, ``add_v_proj``).
        dtype: the weights' dtype as loaded (float32 for mixed precision training).
    """

    diffusers_class = "WanTransformer3DModel"
    pipeline_class = "WanPipeline"
    block_name = "WanTransformerBlock"

    def __init__(self, path: str, lora_rank: int | None = None, lora_alpha: float | None = None,
                 lora_target_modules: list[str] | None = None, dtype: str = "float32") -> None:
        super().__init__()
        image_to_video = _read_config_key(path, self.diffusers_class, "image_dim") is not None
        if image_to_video:  # the image cross-attention's own key/value projections too
            self.default_lora_targets = self.default_lora_targets + ("add_k_proj", "add_v_proj")
        self._setup(path, lora_rank, lora_alpha, lora_target_modules, dtype)
        self.image_to_video = image_to_video
        if self.image_to_video:
            self.pipeline_class = "WanImageToVideoPipeline"
            self.mask_channels = self.config["in_channels"] - 2 * self.config["out_channels"]
            if self.mask_channels < 1:
                raise ValueError(f"{path}: an image-to-video Wan (image_dim set) with in_channels "
                                 f"{self.config['in_channels']}, not 2 x out_channels + the mask channels")
        self.frame_conditioning = self.image_to_video

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(self.config["patch_size"])

    def forward(
        self,
        x: Tensor,  # (B, C, T, H, W) noisy latents
        t: Tensor,  # (B,) in [0, 1]
        text: Tensor,  # (B, L, D) UMT5 tokens, zero at padding (Wan takes no text mask)
        text_mask: Tensor,  # (B, L) unused: the zero padding is what WanPipeline gives the model
        cond: Tensor | None = None,  # i2v: (B, C, T, H, W) normalised latents of the clip [image, zero frames...]
        cond_mask: Tensor | None = None,  # i2v: (B, 1, T, H, W) 1 on the given latent frames (frame 0)
        pad_to: int | None = None,
        image_embeds: Tensor | None = None,  # i2v: (B, N, image_dim) CLIP image tokens
    ) -> Tensor:
        self._refuse_pack(x)
        dtype = self._net_dtype()
        hidden = x
        if self.image_to_video:
            if cond is None or cond_mask is None or image_embeds is None:
                raise ValueError("an image-to-video WanTransformer needs cond, cond_mask and image_embeds (the first "
                                 "frame's latents, its mask and its CLIP tokens)")
            b, _, frames, h, w = x.shape
            mask = cond_mask.to(x.dtype).expand(b, self.mask_channels, frames, h, w)  # the pipeline's mask_lat_size
            hidden = torch.cat([x, mask, cond.to(x.dtype)], dim=1)  # b (C + m + C) t h w
            image_embeds = image_embeds.to(dtype)
        elif cond is not None or image_embeds is not None:
            raise ValueError("cond / image_embeds given to a text-to-video WanTransformer3DModel (no image_dim)")
        return self.transformer(hidden_states=hidden.to(dtype), timestep=t * self.timestep_scale,
                                encoder_hidden_states=text.to(dtype), encoder_hidden_states_image=image_embeds,
                                return_dict=False)[0]


class CogVideoXTransformer(Configurable, DiffusersTransformer):
    """CogVideoX's ``CogVideoXTransformer3DModel`` (text-to-video, 1.0 and 1.5), trained with
    ``process: ddpm_discrete`` (v-prediction on its integer timesteps). Its text is T5 run over the padded
    caption without a mask (``text_attends_padding``: the text encoder keeps the padding's outputs, as
    ``CogVideoXPipeline`` does) at exactly ``max_text_seq_length`` tokens (226) when the model adds
    positional embeddings; its latents are (B, T, C, H, W) inside and RoPE (5b, 1.5) is built from the
    latent grid as the pipeline builds it.

    Args: as :class:`WanTransformer` (``path`` e.g. THUDM/CogVideoX-2b's folder).
    """

    diffusers_class = "CogVideoXTransformer3DModel"
    pipeline_class = "CogVideoXPipeline"
    block_name = "CogVideoXBlock"
    text_dim_key = "text_embed_dim"
    text_attends_padding = True
    frame_conditioning = False
    default_lora_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, path: str, lora_rank: int | None = None, lora_alpha: float | None = None,
                 lora_target_modules: list[str] | None = None, dtype: str = "float32") -> None:
        super().__init__()
        self._setup(path, lora_rank, lora_alpha, lora_target_modules, dtype)
        if self.config.get("ofs_embed_dim") or self.config["in_channels"] != self.config["out_channels"]:
            raise ValueError(f"{path}: a CogVideoX image-to-video transformer (in_channels {self.config['in_channels']}"
                             f", out_channels {self.config['out_channels']}); only text-to-video CogVideoX trains here")

    @property
    def patch_size(self) -> tuple[int, int, int]:
        p = int(self.config["patch_size"])
        return int(self.config.get("patch_size_t") or 1), p, p

    def _rotary(self, t: int, h: int, w: int, device) -> tuple[Tensor, Tensor] | None:
        """CogVideoXPipeline._prepare_rotary_positional_embeddings for a latent grid (t, h, w)."""
        if not self.config["use_rotary_positional_embeddings"]:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        c = self.config
        p, p_t = c["patch_size"], c.get("patch_size_t")
        grid_h, grid_w = h // p, w // p
        base_w, base_h = c["sample_width"] // p, c["sample_height"] // p
        if p_t is None:
            return get_3d_rotary_pos_embed(embed_dim=c["attention_head_dim"],
                                           crops_coords=_crop_region((grid_h, grid_w), base_w, base_h),
                                           grid_size=(grid_h, grid_w), temporal_size=t, device=device)
        return get_3d_rotary_pos_embed(embed_dim=c["attention_head_dim"], crops_coords=None, grid_size=(grid_h, grid_w),
                                       temporal_size=(t + p_t - 1) // p_t, grid_type="slice",
                                       max_size=(base_h, base_w), device=device)

    def forward(
        self,
        x: Tensor,  # (B, C, T, H, W) noisy latents
        t: Tensor,  # (B,) in [0, 1]: the integer timestep round(1000 t) - 1 (videogen.diffusion.DiscreteDDPM)
        text: Tensor,  # (B, L, D) T5 outputs over the padded caption (padding kept)
        text_mask: Tensor,  # (B, L) unused: CogVideoX attends to every text position
        cond: Tensor | None = None,
        cond_mask: Tensor | None = None,
        pad_to: int | None = None,
    ) -> Tensor:
        self._text_to_video_only(x, cond)
        c = self.config
        positional = c["use_learned_positional_embeddings"] or not c["use_rotary_positional_embeddings"]
        if positional and text.shape[1] != c["max_text_seq_length"]:
            raise ValueError(f"CogVideoX takes exactly max_text_seq_length={c['max_text_seq_length']} text tokens "
                             f"(got {text.shape[1]}): set model.init_args.text_max_length: {c['max_text_seq_length']}")
        dtype = self._net_dtype()
        timestep = torch.round(t.double() * self.timestep_scale).long() - 1
        rotary = self._rotary(*x.shape[2:], x.device)
        out = self.transformer(hidden_states=x.transpose(1, 2).to(dtype),  # b c t h w -> b t c h w
                               encoder_hidden_states=text.to(dtype), timestep=timestep,
                               image_rotary_emb=rotary, return_dict=False)[0]
        return out.transpose(1, 2)  # b t c h w -> b c t h w


class LTXVideoTransformer(Configurable, DiffusersTransformer):
    """LTX-Video's ``LTXVideoTransformer3DModel`` (text-to-video), trained with flow matching (timestep
    ``1000 t``) and its resolution-dependent shift (``DiTModule(dynamic_shift=[1024, 4096, 0.95, 2.05])``,
    linear spacing: ``LTXPipeline``'s sigmas). Its latents enter as tokens packed as ``LTXPipeline._pack_latents``
    packs them, its T5 runs over the padded caption without a mask (``text_attends_padding``) and the mask goes
    to the transformer; RoPE is scaled by (VAE temporal compression / frame rate, VAE spatial compression x 2),
    as the pipeline scales it.

    Args: as :class:`WanTransformer` (``path`` e.g. Lightricks/LTX-Video's folder), and
        frame_rate: the frame rate the RoPE scale assumes (LTXPipeline's ``frame_rate``, 25).
        vae_temporal_compression, vae_spatial_compression: LTX-Video's VAE's (8 and 32): the RoPE scale.
    """

    diffusers_class = "LTXVideoTransformer3DModel"
    pipeline_class = "LTXPipeline"
    block_name = "LTXVideoTransformerBlock"
    text_dim_key = "caption_channels"
    text_attends_padding = True
    frame_conditioning = False

    def __init__(self, path: str, lora_rank: int | None = None, lora_alpha: float | None = None,
                 lora_target_modules: list[str] | None = None, dtype: str = "float32", frame_rate: float = 25.0,
                 vae_temporal_compression: int = 8, vae_spatial_compression: int = 32) -> None:
        super().__init__()
        self._setup(path, lora_rank, lora_alpha, lora_target_modules, dtype)
        self.rope_scale = (vae_temporal_compression / frame_rate, vae_spatial_compression, vae_spatial_compression)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        p = int(self.config["patch_size"])
        return int(self.config["patch_size_t"]), p, p

    def forward(
        self,
        x: Tensor,  # (B, C, T, H, W) noisy latents
        t: Tensor,  # (B,) in [0, 1]
        text: Tensor,  # (B, L, D) T5 outputs over the padded caption (padding kept)
        text_mask: Tensor,  # (B, L) True on the caption's tokens: the transformer's encoder_attention_mask
        cond: Tensor | None = None,
        cond_mask: Tensor | None = None,
        pad_to: int | None = None,
    ) -> Tensor:
        self._text_to_video_only(x, cond)
        b, c, frames, h, w = x.shape
        pt, ph, pw = self.patch_size
        # b c (t pt) (h ph) (w pw) -> b (t h w) (c pt ph pw), LTXPipeline._pack_latents
        tokens = x.reshape(b, c, frames // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        tokens = tokens.flatten(4, 7).flatten(1, 3)
        dtype = self._net_dtype()
        out = self.transformer(hidden_states=tokens.to(dtype), encoder_hidden_states=text.to(dtype),
                               timestep=t * self.timestep_scale, encoder_attention_mask=text_mask,
                               num_frames=frames // pt, height=h // ph, width=w // pw,
                               rope_interpolation_scale=self.rope_scale, return_dict=False)[0]
        # b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw), LTXPipeline._unpack_latents
        out = out.reshape(b, frames // pt, h // ph, w // pw, -1, pt, ph, pw)
        return out.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def _crop_region(src: tuple[int, int], tgt_width: int, tgt_height: int):
    """diffusers' get_resize_crop_region_for_grid (CogVideoX 1.0's RoPE crop of the base grid)."""
    th, tw = tgt_height, tgt_width
    h, w = src
    if h / w > th / tw:
        resize_height, resize_width = th, int(round(th / h * w))
    else:
        resize_width, resize_height = tw, int(round(tw / w * h))
    top, left = int(round((th - resize_height) / 2.0)), int(round((tw - resize_width) / 2.0))
    return (top, left), (top + resize_height, left + resize_width)
