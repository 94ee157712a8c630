"""Stage 1: the causal video VAE (pure torch.nn modules)."""

from videogen.models.vae.autoencoder import VideoAutoencoder
from videogen.models.vae.bottleneck import FSQ, DiagonalGaussian, DiagonalGaussianPosterior, QuantizedLatent
from videogen.models.vae.causal_conv import CausalCache, CausalConv3d
from videogen.models.vae.decoder import Decoder
from videogen.models.vae.discriminator import PatchDiscriminator3D
from videogen.models.vae.encoder import Encoder
from videogen.models.vae.presets import vae_base, vae_tiny

__all__ = [
    "CausalCache",
    "CausalConv3d",
    "Decoder",
    "DiagonalGaussian",
    "DiagonalGaussianPosterior",
    "Encoder",
    "FSQ",
    "PatchDiscriminator3D",
    "QuantizedLatent",
    "VideoAutoencoder",
    "vae_base",
    "vae_tiny",
]
