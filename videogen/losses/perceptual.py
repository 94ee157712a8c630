"""LPIPS-style perceptual loss over VGG16 features, applied per frame (Zhang et al. 2018).

The feature net is torchvision's VGG16 ``features`` (conv layers up to relu5_3) with random
weights; the caller loads real weights from a local file with :func:`load_perceptual_weights`
(nothing is ever downloaded). Accepted files (safetensors, or a torch state dict read with
``weights_only=True``): this module's own ``state_dict``; torchvision's ``vgg16`` state dict
(``features.N.*``, the classifier is ignored); the LPIPS repository's ``vgg.pth`` linear layers
(``linK.model.1.weight``) and its network (``net.sliceK.N.*``). Without linear-layer weights the
loss is the uncalibrated LPIPS baseline (every channel weighted 1).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from einops import rearrange
from safetensors.torch import load_file
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16().features
_WIDTHS = (64, 128, 256, 512, 512)


class PerceptualLoss(nn.Module):
    """LPIPS distance between two videos (B, C, T, H, W) in [-1, 1], per frame: returns (B,).

    Frozen: its parameters never train (``requires_grad`` is off), gradients flow to the inputs.
    The per-frame distances are averaged over T.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = make_layers(cfgs["D"])[: _TAPS[-1] + 1]  # == torchvision.models.vgg16().features[:30]
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in _WIDTHS)
        for lin in self.lins:
            nn.init.ones_(lin.weight)
        # LPIPS input scaling of [-1, 1] images to the ImageNet statistics VGG was trained with
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in _TAPS:
                feats.append(h)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 5:
            raise ValueError(f"PerceptualLoss: expected two (B, C, T, H, W) videos, got {tuple(x.shape)}, {tuple(y.shape)}")
        b = x.shape[0]
        frames = rearrange(torch.cat([x, y]), "b c t h w -> (b t) c h w")  # both videos, frame by frame
        total = 0.0
        for feat, lin in zip(self._features(frames), self.lins):
            feat = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
            fx, fy = feat.chunk(2)
            total = total + lin((fx - fy).pow(2)).mean(dim=(1, 2, 3))  # (B T,)
        return rearrange(total, "(b t) -> b t", b=b).mean(dim=1)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"perceptual weights file {path} does not exist: give a local .safetensors or .pth file")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _to_own_key(key: str) -> str | None:
    """Map a key of any accepted format to this module's key; None for keys to ignore."""
    if key.startswith(("net.", "lins.")) and not key.startswith("net.slice"):
        return key
    if m := re.fullmatch(r"features\.(\d+)\.(weight|bias)", key):  # torchvision vgg16
        return f"net.{m[1]}.{m[2]}" if int(m[1]) <= _TAPS[-1] else None
    if m := re.fullmatch(r"(?:net\.)?slice\d\.(\d+)\.(weight|bias)", key):  # LPIPS repo network
        return f"net.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"lin(\d)\.model\.1\.weight", key):  # LPIPS repo linear layers
        return f"lins.{m[1]}.weight"
    if key.startswith(("classifier.", "scaling_layer.")):
        return None
    return key  # unknown: reported below


def load_perceptual_weights(loss: PerceptualLoss, *paths: str | os.PathLike) -> None:
    """Load VGG16 (and optionally LPIPS linear-layer) weights from local files into ``loss``.

    All VGG16 conv weights must be present across ``paths``; linear layers are optional.
    Raises ValueError naming the file(s) and the missing or unknown keys.
    """
    if not paths:
        raise ValueError("load_perceptual_weights: give at least one weights file")
    merged: dict[str, torch.Tensor] = {}
    for path in map(Path, paths):
        for key, value in _read_state_dict(path).items():
            own = _to_own_key(key)
            if own is not None:
                merged[own] = value
    expected = loss.state_dict()
    unknown = sorted(set(merged) - set(expected))
    missing = sorted(k for k in expected if k.startswith("net.") and k not in merged)
    names = ", ".join(str(p) for p in paths)
    if unknown:
        raise ValueError(f"{names}: unknown keys {unknown[:5]}: give a VGG16 / LPIPS state dict or this loss's own")
    if missing:
        raise ValueError(
            f"{names}: VGG16 weights missing {missing[:5]} ({len(missing)} keys): add torchvision's vgg16 state dict"
        )
    for key, value in merged.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{names}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    loss.load_state_dict(merged, strict=False)
