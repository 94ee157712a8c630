"""A trained captioner at inference: captioning clips and upsampling prompts.

* :func:`load_captioner` -- a captioner export folder or checkpoint -> ``(export, tokens)``.
* :class:`CaptionRunner` -- a loaded captioner (and the frozen VAE it reads latents from, when it was
  trained on latents) that captions clips: what ``videogen recaption`` runs
  (:mod:`videogen.pipelines.recaption_module`).
* :func:`upsample_prompt` / :func:`upsample_with` -- a short user prompt -> a long caption in the
  recaption style, with a finetuned captioner's decoder (conditioned on the short caption, no video) or
  a causal LM (``videogen sample --upsampler``).

The tokenizer and the training examples are :mod:`videogen.captioning`'s.
"""

from __future__ import annotations

from pathlib import Path

import torch

from videogen.captioning import Tokens, load_tokenizer
from videogen.models.latent_grid import LatentGrid


def load_captioner(path: str | Path):
    """A captioner export folder or checkpoint -> (export, tokens). The export's ``stats.json`` names
    the tokenizer, the prompt templates and the frame size used in training."""
    from videogen.models.captioner import HFVisionCaptioner, VideoCaptioner
    from videogen.pretrained import load_stage

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such captioner export folder or checkpoint (train one with "
                                "`videogen fit --config configs/captioner/quickstart.yaml`)")
    export = load_stage(path, expect=(VideoCaptioner, HFVisionCaptioner))
    if export.stats.get("stage") != "captioner":
        raise TypeError(f"{path}: holds a {type(export.module).__name__} (stage {export.stats.get('stage')!r}), "
                        "not a captioner")
    return export, load_tokenizer(export.stats["tokenizer"], export.stats.get("token_map"))


@torch.no_grad()
def upsample_prompt(prompts: list[str] | str, captioner: str | Path | None = None, causal_lm: str | None = None,
                    max_new_tokens: int = 80, method: str = "greedy", seed: int = 0, device: str = "cpu",
                    instruction: str = "Expand this short description of a video into a detailed caption.\n"
                                       "Short: {txt}\nDetailed:") -> list[str]:
    """Short prompts -> long captions in the recaption style.

    ``captioner``: a captioner export/checkpoint trained with ``txt_prob`` and ``video_dropout`` > 0;
    its decoder writes a caption given the short caption and no video. ``causal_lm``: a local Hugging
    Face causal LM folder, prompted with ``instruction``. Give exactly one.
    """
    from videogen.models.captioner import generate_tokens

    single = isinstance(prompts, str)
    prompts = [prompts] if single else list(prompts)
    if (captioner is None) == (causal_lm is None):
        raise ValueError("upsample_prompt: give either captioner (an export folder) or causal_lm (a local folder)")
    gen = torch.Generator(device).manual_seed(seed)
    if captioner is not None:
        export, tokens = load_captioner(captioner)
        if not export.stats.get("text_only"):
            raise ValueError(f"{captioner}: this captioner was not trained to write captions without a video "
                             "(train with txt_prob > 0 and video_dropout > 0)")
        model = export.module.to(device).eval()
        rows = [tokens.prompt(export.stats["txt_prompt"], p) for p in prompts]
        out = generate_tokens(model, model.null_memory(len(rows)).to(device), rows, eos_id=tokens.eos,
                              pad_id=tokens.pad, max_new_tokens=max_new_tokens, method=method, generator=gen)
        captions = [tokens.decode(o) for o in out]
    else:
        from transformers import AutoModelForCausalLM

        tokens = load_tokenizer(causal_lm)
        lm = AutoModelForCausalLM.from_pretrained(str(causal_lm), local_files_only=True).to(device).eval()
        captions = []
        for p in prompts:
            ids = torch.tensor([tokens.text(instruction.format(txt=p))], device=device)
            kw = {"do_sample": method == "top-p", "num_beams": 4 if method == "beam" else 1}
            out = lm.generate(ids, max_new_tokens=max_new_tokens, pad_token_id=tokens.pad, **kw)
            captions.append(tokens.decode(out[0, ids.shape[1]:].tolist()).split("\n")[0].strip())
    return captions[0] if single else captions


class CaptionRunner:
    """A loaded captioner ready to caption clips: ``runner(clips) -> captions``.

    ``clips``: ``(C, T, H, W)`` float tensors in [-1, 1], sizes may differ (each is encoded on its own;
    the visual tokens have one length whatever the frame size, so generation is batched).
    """

    def __init__(self, export, tokens: Tokens, device: str | torch.device = "cpu"):
        self.export, self.tokens, self.stats = export, tokens, export.stats
        self.model = export.module.eval()
        self.num_frames = int(self.stats.get("num_frames") or getattr(self.model, "num_frames", 8))
        self.frame_size = int(self.stats.get("frame_size") or 64)
        self.vae = None
        if self.stats.get("vae"):
            from videogen.encoding import check_same_vae, load_vae

            recorded = self.stats["vae"]
            self.vae = load_vae(recorded["source"])
            check_same_vae(recorded, self.vae, f"the captioner at {export.folder} was trained with",
                           "restore that VAE, or train the captioner again")
        # frames to decode per clip: on latents, enough for num_frames latent frames (1 + k * tc pixels)
        self.grid = LatentGrid.from_stats(self.vae.stats) if self.vae is not None else None
        self.decode_frames = self.grid.frames_for(self.num_frames) if self.grid is not None else self.num_frames
        self.to(device)

    def to(self, device: str | torch.device) -> "CaptionRunner":
        """Move the captioner (and its VAE) to ``device``, where clips are captioned."""
        self.device = torch.device(device)
        self.model.to(self.device)
        if self.vae is not None:
            self.vae.module.to(self.device)
        return self

    @torch.no_grad()
    def memory(self, clips: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for clip in clips:
            x = clip[None].to(self.device)  # (1, C, T, H, W)
            if self.vae is not None:
                from videogen.encoding import encode_latents, normalize_latents

                x = x[:, :, : self.grid.usable_frames(x.shape[2])]  # the frames a causal VAE takes whole
                x = normalize_latents(encode_latents(self.vae.module, x), self.vae.stats)
            out.append(self.model.encode(x))
        return torch.cat(out)  # (B, N, D)

    @torch.no_grad()
    def __call__(self, clips: list[torch.Tensor], txts: list[str] | None = None, **generate_kw) -> list[str]:
        from videogen.models.captioner import generate_tokens

        prompts = ([self.tokens.prompt(self.stats["txt_prompt"], t) for t in txts] if txts is not None
                   else [self.tokens.prompt(self.stats["prompt"])] * len(clips))
        out = generate_tokens(self.model, self.memory(clips), prompts, eos_id=self.tokens.eos,
                              pad_id=self.tokens.pad, **generate_kw)
        return [self.tokens.decode(o) for o in out]


def upsample_with(path: str | Path, prompts: list[str], **kw) -> list[str]:
    """:func:`upsample_prompt` with whatever ``path`` holds: a captioner export folder or checkpoint
    (``stats.json`` / ``.ckpt``), or a Hugging Face causal LM folder (``config.json`` only)."""
    path = Path(path)
    if path.is_dir() and not (path / "stats.json").is_file() and (path / "config.json").is_file():
        return upsample_prompt(prompts, causal_lm=str(path), **kw)
    return upsample_prompt(prompts, captioner=str(path), **kw)
