"""Gradient clipping under ``bf16-mixed`` with a fused optimizer (``fused: true`` AdamW, as the quickstart
configs ship): Lightning refuses that pair for any AMP precision, although bf16 has no loss scaler and
nothing to unscale; :func:`videogen.modules.lr_schedule.clip_gradients` clips there directly."""

from functools import partial

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.optim import AdamW

from videogen.modules.lr_schedule import clip_gradients


class Probe(LightningModule):
    """One linear layer; records the gradient norm before and after each clip, and the largest entry after."""

    def __init__(self, fused: bool):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(16, 16)
        self.fused, self.norms, self.peaks = fused, [], []

    def training_step(self, batch, batch_idx):
        return (self.net(batch[0]) - 3.0).pow(2).mean()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        before = torch.nn.utils.get_total_norm([p.grad for p in self.parameters()]).item()
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.norms.append((before, torch.nn.utils.get_total_norm([p.grad for p in self.parameters()]).item()))
        self.peaks.append(max(p.grad.abs().max().item() for p in self.parameters()))

    def configure_optimizers(self):
        return AdamW(self.parameters(), lr=1e-2, fused=self.fused)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(1)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 16, generator=g)), batch_size=4)


def fit(precision: str, fused: bool, clip: float = 0.05, algorithm: str = "norm") -> Probe:
    module = Probe(fused)
    Trainer(accelerator="cpu", max_steps=3, precision=precision, gradient_clip_val=clip,
            gradient_clip_algorithm=algorithm, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).fit(module)
    return module


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_a_fused_optimizer_has_its_gradients_clipped(precision):
    module = fit(precision, fused=True)
    assert len(module.norms) == 3
    for before, after in module.norms:
        assert before > 0.5 and after == pytest.approx(0.05, rel=1e-3)  # the clip bound, every step


def test_bf16_fused_clipping_matches_the_unfused_optimizer():
    """The fused path clips as Lightning clips an unfused optimizer: the same weights after 3 steps."""
    fused, plain = fit("bf16-mixed", fused=True), fit("bf16-mixed", fused=False)
    assert [a for _, a in fused.norms] == pytest.approx([a for _, a in plain.norms], rel=1e-4)
    torch.testing.assert_close(fused.net.weight, plain.net.weight, rtol=1e-4, atol=1e-5)


def test_clipping_by_value_under_bf16():
    module = fit("bf16-mixed", fused=True, clip=1e-3, algorithm="value")
    assert len(module.peaks) == 3 and module.peaks == pytest.approx([1e-3] * 3)
    assert all(before > 1e-2 for before, _ in module.norms)
