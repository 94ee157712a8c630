"""Numerical faults in every stage: a NaN/Inf loss or gradient skips the update and is counted; too
many in a row stop the run with a clear error and a checkpoint from before the fault; loss spikes are
logged; an out-of-memory error names the settings to change."""

from functools import partial

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.optim import AdamW

from reliability_helpers import make_shards
from videogen.callbacks.guards import OOM_ADVICE, NumericGuard, OOMAdvice, StepGuard
from videogen.data import Bucket, Bucketer, LoaderOptions, VideoDataModule
from videogen.errors import ConfigError
from videogen.models.dit import DiT
from videogen.models.vae import VideoAutoencoder
from videogen.modules.lr_schedule import WarmupCosine


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("num") / "shards", n=4, shards=1)


def datamodule(shards):
    return VideoDataModule(str(shards), bucketer=Bucketer([Bucket(9, 32, 48), Bucket(9, 32, 32)], batch_size=2),
                           loader=LoaderOptions(num_workers=0, shuffle_buffer=0))


def trainer(tmp_path, steps, callbacks=()):
    return Trainer(accelerator="cpu", max_steps=steps, enable_progress_bar=False, enable_model_summary=False,
                   logger=False, default_root_dir=str(tmp_path), limit_val_batches=0, callbacks=list(callbacks))


def dit_module(vae_export):
    from videogen.modules.dit import DiTModule

    torch.manual_seed(0)
    dit = DiT(in_channels=4, hidden_size=32, depth=1, num_heads=2, text_dim=384)
    return DiTModule(dit, vae=str(vae_export), text_max_length=16, ema_decay=None,
                     optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0),
                     lr_scheduler=partial(WarmupCosine, warmup=1))


def vae_module(**kw):
    from videogen.modules.vae import VAEModule

    torch.manual_seed(0)
    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                           spatial_compression=4, patch_size=2, patch_size_t=2)
    return VAEModule(vae, optimizer=partial(AdamW, lr=1e-3, betas=(0.5, 0.9), weight_decay=0.0),
                     lr_scheduler=partial(WarmupCosine, warmup=1), **kw)


class Poison(Callback):
    """Makes the network's output NaN (or scales it) at the given steps (counted by forward calls)."""

    def __init__(self, net, steps, value=float("nan")):
        self.steps, self.value, self.calls, self.weights = set(steps), value, 0, {}
        net.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        self.calls += 1
        if self.calls - 1 in self.steps and module.training:
            return output * self.value if self.value == self.value and abs(self.value) > 1 else output + self.value
        return output

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        net = next(getattr(pl_module, name) for name in ("dit", "captioner", "vae") if hasattr(pl_module, name))
        self.weights[trainer.global_step] = {k: v.clone() for k, v in net.state_dict().items()}


def captioner_module():
    from videogen.models.captioner import captioner_tiny
    from videogen.modules.captioner import CaptionerModule

    torch.manual_seed(0)
    return CaptionerModule(captioner_tiny(), caption_key="txt",
                           optimizer=partial(AdamW, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01),
                           lr_scheduler=partial(WarmupCosine, warmup=1))


@pytest.mark.parametrize("stage", ["dit", "captioner"])
def test_nan_loss_skips_the_step_and_counts_it(tmp_path, shards, vae_export, stage):
    """Automatic-optimisation stages: the guard comes from the module's ``configure_callbacks``."""
    if stage == "dit":
        module = dit_module(vae_export)
        net = poisoned = module.dit
    else:
        module = captioner_module()
        net, poisoned = module.captioner, module.captioner.encoder
    poison = Poison(poisoned, steps=[1])
    t = trainer(tmp_path, 4, [poison])
    t.fit(module, datamodule=datamodule(shards))
    guard = next(c for c in t.callbacks if isinstance(c, NumericGuard))
    assert guard.guard.bad_steps == 1 and t.logged_metrics["train/bad_steps"] == 1
    w = poison.weights
    assert all(torch.equal(w[1][k], w[2][k]) for k in w[1])  # the poisoned step changed no weight
    assert any(not torch.equal(w[2][k], w[3][k]) for k in w[2])  # the next one trained again
    assert all(torch.isfinite(v).all() for v in net.state_dict().values())


def test_dit_too_many_bad_steps_stop_with_a_checkpoint_from_before_the_fault(tmp_path, shards, vae_export):
    module = dit_module(vae_export)
    poison = Poison(module.dit, steps=range(2, 100))
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    t = trainer(tmp_path, 10, [NumericGuard(max_bad_steps=3), poison, ckpt])
    with pytest.raises(FloatingPointError, match="3 non-finite losses in a row"):
        t.fit(module, datamodule=datamodule(shards))
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    good = poison.weights[2]  # after the last good step
    saved = {k[len("dit."):]: v for k, v in last["state_dict"].items() if k.startswith("dit.")}
    assert all(torch.equal(saved[k], good[k]) for k in good)
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_vae_nan_gradient_with_a_finite_loss_is_skipped(tmp_path, shards):
    module = vae_module()
    hits = iter([False, True, False, False])
    module.vae.last_layer_weight.register_hook(lambda g: g * float("nan") if next(hits, False) else g)
    seen = []

    class Weights(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append({k: v.clone() for k, v in pl_module.vae.state_dict().items()})

    t = trainer(tmp_path, 3, [Weights()])
    t.fit(module, datamodule=datamodule(shards))
    assert module.bad_steps == 1 and t.global_step == 3  # 4 batches: one skipped, three trained
    assert [k for k in seen[0] if not torch.equal(seen[0][k], seen[1][k])] == []
    assert all(torch.isfinite(v).all() for v in module.vae.state_dict().values())


def test_spike_is_logged_by_both_stages(tmp_path, shards, vae_export):
    class Spikes(Callback):
        def __init__(self):
            self.values = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.values.append(float(trainer.callback_metrics["train/loss_spike"]))

    module = dit_module(vae_export)
    record = Spikes()
    Poison(module.dit, steps=[5], value=1e3)  # finite, far above the running loss
    trainer(tmp_path / "dit", 6, [NumericGuard(spike_warmup=3), record]).fit(module, datamodule=datamodule(shards))
    assert record.values == [0, 0, 0, 0, 0, 1]

    module = vae_module()
    module.guard.spike_warmup = 3
    record = Spikes()
    Poison(module.vae.decoder, steps=[5], value=1e3)
    trainer(tmp_path / "vae", 6, [record]).fit(module, datamodule=datamodule(shards))
    assert record.values == [0, 0, 0, 0, 0, 1] and module.guard.spikes == 1


def test_a_manual_loop_gets_no_numeric_guard_and_refuses_one(tmp_path, shards):
    """The VAE guards its own updates: its run adds out-of-memory advice but no (idle) NumericGuard, and a
    NumericGuard configured for it is refused before any step."""
    t = trainer(tmp_path / "a", 1)
    t.fit(vae_module(), datamodule=datamodule(shards))
    assert any(isinstance(c, OOMAdvice) for c in t.callbacks)
    assert not any(isinstance(c, NumericGuard) for c in t.callbacks)
    with pytest.raises(ConfigError, match="VAEModule optimises manually"):
        trainer(tmp_path / "b", 1, [NumericGuard()]).fit(vae_module(), datamodule=datamodule(shards))


def test_spike_detector_on_known_sequences():
    guard = StepGuard(spike_warmup=5, spike_sigmas=6)
    assert not any(guard.passed(1.0 + 0.01 * (i % 3), i) for i in range(20))
    assert guard.passed(5.0, 20) and guard.spikes == 1
    assert not guard.passed(1.02, 21)  # a spike does not move the baseline
    with pytest.raises(ValueError, match="max_bad_steps"):
        StepGuard(max_bad_steps=0)


@pytest.mark.parametrize("stage", ["vae", "dit"])
def test_out_of_memory_names_the_settings_to_change(tmp_path, shards, vae_export, stage):
    module = vae_module() if stage == "vae" else dit_module(vae_export)
    net = module.vae.encoder if stage == "vae" else module.dit

    def oom(mod, inputs, output):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    net.register_forward_hook(oom)
    with pytest.raises(torch.OutOfMemoryError) as e:
        trainer(tmp_path, 2).fit(module, datamodule=datamodule(shards))
    text = str(e.value)
    assert "Tried to allocate 20.00 GiB" in text and OOM_ADVICE in text
    assert "batch_size" in text and "token_budget" in text and "activation checkpointing" in text
