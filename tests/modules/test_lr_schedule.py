import math
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml

from videogen.modules.lr_schedule import WarmupCosine, optimizer_config, warmup_cosine

CONFIGS = Path(__file__).parents[2] / "configs"


def test_warmup_then_cosine_to_floor():
    f = lambda s: warmup_cosine(s, warmup=10, decay=110, floor=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)  # stays at the floor after decay
    assert all(f(s) >= f(s + 1) for s in range(10, 120))
    assert warmup_cosine(1000, warmup=10, decay=None, floor=0.1) == 1.0
    assert math.isclose(warmup_cosine(4, warmup=10, decay=None, floor=0.1), 0.5)


def test_warmup_cosine_scheduler_steps_the_factor():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = WarmupCosine(opt, warmup=3, decay=10, floor=0.2)
    for step in range(14):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * warmup_cosine(step, 3, 10, 0.2))
        opt.step()
        sched.step()


def test_optimizer_config_trains_only_what_requires_grad():
    net = torch.nn.Linear(3, 2)
    net.bias.requires_grad_(False)  # a frozen base weight (LoRA)
    conf = optimizer_config(partial(torch.optim.AdamW, lr=0.1), partial(WarmupCosine, warmup=2), net.parameters())
    assert conf["optimizer"].param_groups[0]["params"] == [net.weight]
    assert conf["lr_scheduler"]["interval"] == "step" and isinstance(conf["lr_scheduler"]["scheduler"], WarmupCosine)


def test_yaml_optimizer_and_schedule_reach_the_optimizer(tmp_path):
    """A config's optimizer: and lr_scheduler: (here overrides of a shipped one) are what the stage trains with."""
    from videogen.cli import lightning_cli

    cli = lightning_cli(["--config", str(CONFIGS / "vae" / "smoke.yaml"), "--trainer.logger=false",
                         "--model.init_args.optimizer.init_args.lr=0.02",
                         "--model.init_args.optimizer.init_args.betas=[0.8, 0.95]",
                         "--model.init_args.lr_scheduler.init_args.warmup=3",
                         "--model.init_args.lr_scheduler.init_args.decay=10",
                         "--model.init_args.lr_scheduler.init_args.floor=0.2"], run=False)
    conf = cli.model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.AdamW) and group["initial_lr"] == 0.02 and group["betas"] == (0.8, 0.95)
    assert group["weight_decay"] == 0.0  # as the config says, not torch's default
    for step in range(12):
        assert group["lr"] == pytest.approx(0.02 * warmup_cosine(step, 3, 10, 0.2))
        opt.step()
        sched.step()


def test_stage_defaults_are_the_stages_adamw_and_warmup():
    from videogen.models.vae import PatchDiscriminator3D, VideoAutoencoder
    from videogen.modules.vae import VAEModule

    vae = VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1,), spatial_compression=4,
                           temporal_compression=2, patch_size=4, patch_size_t=2)
    module = VAEModule(vae, discriminator=PatchDiscriminator3D(base_channels=8, num_layers=2), disc_lr=5e-4)
    generator, discriminator = module.configure_optimizers()
    g, d = generator["optimizer"].param_groups[0], discriminator["optimizer"].param_groups[0]
    assert (g["initial_lr"], g["betas"], g["weight_decay"]) == (1e-3, (0.5, 0.9), 0.0)
    assert (d["lr"], d["betas"], d["weight_decay"]) == (5e-4, (0.5, 0.9), 0.0) and "lr_scheduler" not in discriminator
    assert g["lr"] == pytest.approx(1e-3 * warmup_cosine(0, 100, None, 0.1))


def test_a_resumed_fit_goes_on_with_the_optimizer_and_schedule(tmp_path, clip_shards, capsys):
    """`videogen fit --ckpt_path` on one of its own checkpoints ends where an uninterrupted fit does: both
    optimizers' states and the schedule go on where they stopped. The checkpoint is plain data: the optimizer
    and schedule are in the run's config, not in its hyper-parameters."""
    from conftest import tiny_vae_model
    from videogen.cli import main

    def fit(root, steps, *extra):
        model = tiny_vae_model(discriminator={"class_path": "videogen.models.vae.PatchDiscriminator3D",
                                              "init_args": {"base_channels": 8, "num_layers": 2}}, gan_start_step=1)
        model["init_args"]["lr_scheduler"]["init_args"] = {"warmup": 2, "decay": 6, "floor": 0.2}
        config = {"seed_everything": 0, "model": model,
                  "trainer": {"accelerator": "cpu", "max_steps": steps, "logger": False, "enable_progress_bar": False,
                              "enable_model_summary": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                              "default_root_dir": str(root),
                              "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                             "init_args": {"dirpath": str(root / "ckpt"), "save_last": True}}]},
                  "data": {"class_path": "videogen.data.VideoDataModule",
                           "init_args": {"train_shards": str(clip_shards),
                                         "loader": {"num_workers": 0, "shuffle_buffer": 0},
                                         "bucketer": {"batch_size": 2,
                                                      "buckets": [{"num_frames": 9, "height": 32, "width": 48}]}}}}
        root.mkdir(exist_ok=True)
        (root / "c.yaml").write_text(yaml.safe_dump(config))
        assert main(["fit", "--config", str(root / "c.yaml"), *extra]) == 0
        return torch.load(root / "ckpt" / "last.ckpt", weights_only=True)

    reference = fit(tmp_path / "a", 8)
    first = fit(tmp_path / "b", 4)  # Lightning counts both networks' steps: G at batch 1, G + D from batch 2 on
    assert "optimizer" not in first["hyper_parameters"] and "lr_scheduler" not in first["hyper_parameters"]
    assert int(first["state_dict"]["generator_steps"]) == 3
    resumed = fit(tmp_path / "b", 8, f"--ckpt_path={tmp_path / 'b' / 'ckpt' / 'last.ckpt'}")
    (sched,) = resumed["lr_schedulers"]  # the generator's; the discriminator's learning rate is constant
    assert sched["last_epoch"] == int(resumed["state_dict"]["generator_steps"]) == 5
    assert sched["_last_lr"][0] == pytest.approx(3e-3 * warmup_cosine(5, 2, 6, 0.2))
    assert resumed["lr_schedulers"] == reference["lr_schedulers"]
    for key, value in reference["state_dict"].items():
        assert torch.allclose(value.float(), resumed["state_dict"][key].float(), atol=1e-6), key
    # a checkpoint written before the optimizer was injected (lr, warmup_steps... in its hyper-parameters): one line
    first["hyper_parameters"].update(lr=3e-3, warmup_steps=1)
    torch.save(first, tmp_path / "old.ckpt")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(tmp_path / "b" / "c.yaml"), f"--ckpt_path={tmp_path / 'old.ckpt'}"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "videogen: error: VAEModule.__init__() got an unexpected keyword argument 'lr'" in err
    assert "before lr was retired: it is now model.init_args.optimizer.init_args.lr" in err
