"""Stage 2 networks: the built-in video captioner and the adapter for Hugging Face image-to-text models."""

from videogen.models.captioner.decoder import CaptionDecoder, KVCache
from videogen.models.captioner.encoder import FrameEncoder, sample_indices
from videogen.models.captioner.generate import METHODS, generate_tokens
from videogen.models.captioner.hf_adapter import HFVisionCaptioner
from videogen.models.captioner.model import VideoCaptioner, captioner_tiny

__all__ = ["CaptionDecoder", "FrameEncoder", "HFVisionCaptioner", "KVCache", "METHODS", "VideoCaptioner",
           "captioner_tiny", "generate_tokens", "sample_indices"]
