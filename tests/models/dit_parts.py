"""The tiny DiT and the packed clips with captions that the DiT model tests share (one home, so no test module
imports another)."""

import pytest
import torch

from videogen.models.dit import DiT, dit_tiny

TEXT_ATTENTION = ["cross", "joint"]
C, TEXT_DIM = 4, 8


def tiny(**kwargs) -> DiT:
    """dit_tiny with every weight random, so outputs are not the adaLN-Zero zeros."""
    torch.manual_seed(0)
    model = dit_tiny(in_channels=C, text_dim=TEXT_DIM, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def clips_and_text(seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = [torch.randn(C, 3, 8, 8, generator=g), torch.randn(C, 1, 4, 6, generator=g), torch.randn(C, 2, 6, 4, generator=g)]
    t = torch.tensor([0.2, 0.5, 0.9])
    text = torch.randn(3, 5, TEXT_DIM, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return latents, t, text, text_mask


@pytest.fixture(params=TEXT_ATTENTION)
def packed(request):
    """(model, latents, t, text, text_mask): :func:`tiny` with each text attention, and :func:`clips_and_text`."""
    return tiny(text_attention=request.param), *clips_and_text()
