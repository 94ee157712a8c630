"""VAE losses: hinge GAN losses, adaptive weight, 3D patch discriminator, LPIPS-style perceptual loss."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.vgg import cfgs, make_layers

from videogen.losses.adversarial import adaptive_weight, hinge_d_loss, hinge_g_loss
from videogen.losses.perceptual import PerceptualLoss, load_perceptual_weights
from videogen.models.vae import PatchDiscriminator3D


def test_hinge_losses_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0])  # relu(1 + fake) = 0, 1 -> mean 0.5
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (5 / 6 + 0.5)))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(1.0))


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    nll = (3.0 * w).sum()  # grad (3, 3): norm 3 sqrt 2
    g = (w * torch.tensor([0.5, 0.0])).sum()  # grad (0.5, 0): norm 0.5
    weight = adaptive_weight(nll, g, w)
    torch.testing.assert_close(weight, torch.tensor(3 * 2**0.5 / (0.5 + 1e-4)))
    assert not weight.requires_grad
    assert adaptive_weight(nll, 0.0 * w.sum(), w, max=100.0).item() == 100.0  # clamped
    (nll + g).backward()  # graphs were kept
    assert w.grad is not None


def test_patch_discriminator_shapes_and_gradient():
    torch.manual_seed(0)
    disc = PatchDiscriminator3D(base_channels=8, num_layers=3)
    x = torch.randn(2, 3, 9, 64, 64, requires_grad=True)
    logits = disc(x)
    assert logits.shape == (2, 1, 2, 6, 6)  # one logit per spatio-temporal patch
    assert disc(torch.randn(1, 3, 1, 32, 32)).shape == (1, 1, 1, 2, 2)  # images too
    hinge_g_loss(logits).backward()
    assert x.grad.abs().sum() > 0 and disc.net[0].weight.grad.abs().sum() > 0
    assert sum(p.numel() for p in PatchDiscriminator3D().parameters()) == 8_293_185


@pytest.fixture(scope="module")
def lpips() -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss()


def test_perceptual_loss_zero_for_identical_positive_otherwise(lpips):
    x = torch.rand(2, 3, 2, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    torch.testing.assert_close(lpips(x, x), torch.zeros(2))
    d = lpips(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert (lpips(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)) < d).all()  # smaller change, smaller loss


def test_perceptual_loss_is_per_frame_and_gradient_reaches_the_input_only(lpips):
    x = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    y = (torch.rand(1, 3, 3, 32, 32) * 2 - 1).requires_grad_()
    d = lpips(x, y)
    per_frame = torch.stack([lpips(x[:, :, t : t + 1], y[:, :, t : t + 1]) for t in range(3)]).mean(dim=0)
    torch.testing.assert_close(d, per_frame)
    d.sum().backward()
    assert y.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in lpips.parameters())


def test_perceptual_weights_save_load_round_trip(lpips, tmp_path):
    torch.manual_seed(1)
    source = PerceptualLoss()
    with torch.no_grad():
        for lin in source.lins:
            lin.weight.uniform_(0.0, 1.0)
    path = tmp_path / "lpips.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = PerceptualLoss()
    load_perceptual_weights(loaded, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    x, y = torch.rand(2, 1, 3, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x, y), source(x, y))


def test_loads_torchvision_vgg16_and_lpips_linear_layers(tmp_path):
    torch.manual_seed(2)
    features = make_layers(cfgs["D"])  # same keys as torchvision.models.vgg16().features
    vgg_state = {f"features.{k}": v for k, v in features.state_dict().items()}
    vgg_state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    torch.save(vgg_state, tmp_path / "vgg16.pth")
    lins = {f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), 0.1 * (i + 1)) for i, c in
            enumerate((64, 128, 256, 512, 512))}
    torch.save(lins, tmp_path / "lpips_vgg.pth")
    loss = PerceptualLoss()
    load_perceptual_weights(loss, tmp_path / "vgg16.pth", tmp_path / "lpips_vgg.pth")
    torch.testing.assert_close(loss.net[28].weight, features[28].weight)
    torch.testing.assert_close(loss.lins[4].weight, torch.full((1, 512, 1, 1), 0.5))


def test_bad_weight_files_raise_clear_errors(tmp_path):
    loss = PerceptualLoss()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_perceptual_weights(loss, tmp_path / "nope.safetensors")
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "lins_only.pth")
    with pytest.raises(ValueError, match="VGG16 weights missing"):
        load_perceptual_weights(loss, tmp_path / "lins_only.pth")
    torch.save({"something.else": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unknown keys"):
        load_perceptual_weights(loss, tmp_path / "other.pth")
