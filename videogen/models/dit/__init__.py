"""Stage 3: the latent Diffusion Transformer (pure torch.nn)."""

from videogen.models.dit.model import DiT, dit_b, dit_l, dit_s, dit_tiny
from videogen.models.dit.patchify import PackedTokens, pack, patchify, unpack, unpatchify
from videogen.models.dit.rope import RotaryEmbedding3D, apply_rotary

__all__ = [
    "DiT",
    "PackedTokens",
    "RotaryEmbedding3D",
    "apply_rotary",
    "dit_b",
    "dit_l",
    "dit_s",
    "dit_tiny",
    "pack",
    "patchify",
    "unpack",
    "unpatchify",
]
