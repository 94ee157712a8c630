"""A tiny LightningModule for CLI and resume tests (the real stages have their own modules).

It records, per training step, a hash of the batch and the loss to a JSON-lines file, so a test
can compare an interrupted-and-resumed run with an uninterrupted one step by step.
"""

from __future__ import annotations

import hashlib
import json

import torch
from lightning.pytorch import LightningModule


class TinyVideoModel(LightningModule):
    def __init__(self, channels: int = 3, lr: float = 1e-2, record_to: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["record_to"])  # LightningCLI restores hparams from ckpt_path
        self.net = torch.nn.Conv3d(channels, channels, kernel_size=1)
        self.record_to = record_to

    def training_step(self, batch, batch_idx):
        video = batch["video"]  # (B, C, T, H, W) in [-1, 1]
        loss = torch.nn.functional.mse_loss(self.net(video), video.flip(1))
        if self.record_to:
            h = hashlib.sha256("|".join(batch["key"]).encode() + video.numpy().tobytes()).hexdigest()[:16]
            with open(self.record_to, "a") as f:
                f.write(json.dumps({"step": self.global_step, "batch": h, "loss": loss.item()}) + "\n")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        video = batch["video"]
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(video), video.flip(1)), batch_size=video.shape[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
