"""GAN losses for the VAE (taming-transformers / LDM): hinge losses and the adaptive generator weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss against a hinge discriminator: -E[D(G(z))]."""
    return -logits_fake.mean()


def adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer_weight: torch.Tensor, max: float = 1e4
) -> torch.Tensor:
    """Weight of the GAN loss that balances its gradient with the reconstruction loss's (Esser et al. 2021).

    ``||d nll / d w|| / (||d g / d w|| + 1e-4)`` at the decoder's last layer ``w``, clamped to
    [0, max] and detached. Both losses must still have their graphs (they are kept).
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer_weight, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max).detach()
