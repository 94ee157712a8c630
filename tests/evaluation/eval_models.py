"""Tiny randomly initialised stand-ins for the weights `videogen evaluate` loads from local paths:
an I3D-shaped 3D conv net (TorchScript, and an InceptionI3d state dict) and a CLIP folder
(transformers CLIPConfig + a WordLevel tokenizer built with the `tokenizers` package)."""

import torch
from torch import nn


class TinyVideoNet(nn.Module):
    """(B, 3, T, H, W) -> (B, 12): two strided 3D convs and a global average (what an I3D feature does)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv3d(8, 12, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3, 4))


def torchscript_i3d(path):
    torch.manual_seed(0)
    torch.jit.script(TinyVideoNet()).save(str(path))
    return path


def state_dict_i3d(path, width=1 / 16, num_classes=10):
    from videogen.evaluation.i3d import InceptionI3d

    torch.manual_seed(0)
    net = InceptionI3d(num_classes=num_classes, width=width)
    torch.save(net.state_dict(), path)
    return path


WORDS = ("a red green blue yellow white magenta circle square triangle small large moves left right up down "
         "slow fast the to of background").split()


def tiny_clip(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 2)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]",
                            model_max_length=32).save_pretrained(folder)
    config = CLIPConfig(text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32,
                                     "eos_token_id": 2, "pad_token_id": 0},
                        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    return folder


def tiny_dino(folder):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                             image_size=32, patch_size=8)).save_pretrained(folder)
    return folder
