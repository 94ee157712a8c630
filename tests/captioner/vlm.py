"""A tiny randomly initialised VisionEncoderDecoderModel folder (ViT + BERT decoder, MiniLM's tokenizer)."""

from __future__ import annotations

from pathlib import Path


def make_tiny_vlm(folder) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    from videogen.models.text import default_text_encoder_path

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(default_text_encoder_path(), local_files_only=True)
    enc = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64)
    dec = BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=64, is_decoder=True, add_cross_attention=True)
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
