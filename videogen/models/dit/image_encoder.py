"""Frozen CLIP image encoder for Wan 2.1 image-to-video: the image tokens its transformer cross-attends to.

``FrozenImageEncoder(folder)(images (B, 3, H, W) in [-1, 1]) -> (B, N, D)``: the images as uint8 through the
folder's ``CLIPImageProcessor`` (resize, centre crop, CLIP normalisation) and ``CLIPVisionModel``, the
penultimate hidden state, exactly ``WanImageToVideoPipeline.encode_image``. ``folder`` is the model's
``image_encoder/`` (config.json of a CLIP vision model + safetensors); the processor's
``preprocessor_config.json`` is read from the same folder or its sibling ``image_processor/`` (the layout
of a downloaded Wan i2v pipeline). Only CLIP vision models load (the class is fixed, never read from the
folder's code), weights only from safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

CLIP_VISION_TYPES = ("clip_vision_model", "clip")


class FrozenImageEncoder(nn.Module):
    """Args:
        path: the CLIP vision model folder (e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers/image_encoder).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        from transformers import CLIPImageProcessor, CLIPVisionModel

        folder = Path(path).expanduser()
        if (folder / "image_encoder" / "config.json").is_file() and not (folder / "config.json").is_file():
            folder = folder / "image_encoder"
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder}: no config.json: point image_encoder at a CLIP vision model folder "
                                    "(a Wan i2v download's image_encoder/)")
        try:
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (UnicodeDecodeError, ValueError, AttributeError) as e:
            raise ValueError(f"{config_file}: not a JSON object ({str(e).splitlines()[0][:200]})") from None
        if model_type not in CLIP_VISION_TYPES:
            raise ValueError(f"{config_file}: model_type {model_type!r} is not a CLIP vision model")
        if not any(folder.glob("*.safetensors")):
            raise ValueError(f"{folder}: no safetensors weights (pickled weights are never loaded): convert them")
        processor_folder = folder if (folder / "preprocessor_config.json").is_file() \
            else folder.parent / "image_processor"
        if not (processor_folder / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"{folder}: no preprocessor_config.json here or in {processor_folder}")
        self.processor = CLIPImageProcessor.from_pretrained(str(processor_folder), local_files_only=True)
        self.encoder = CLIPVisionModel.from_pretrained(str(folder), use_safetensors=True, local_files_only=True)
        self.encoder.eval().requires_grad_(False)
        self.path = str(folder)

    def train(self, mode: bool = True) -> "FrozenImageEncoder":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N, D) fp32 CLIP tokens (penultimate layer)."""
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()  # b c h w
        inputs = self.processor(images=list(pixels), return_tensors="pt")
        weight = next(self.encoder.parameters())
        pixel_values = inputs["pixel_values"].to(weight.device, weight.dtype)
        out = self.encoder(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[-2].float().to(images.device)
