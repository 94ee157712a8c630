"""Every YAML shipped under configs/ parses and builds its objects (house rule 8)."""

from pathlib import Path

import pytest
import yaml

from videogen.data.config_section import build_datamodule
from videogen.cli import lightning_cli

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


def make_vae_export(folder, latent_channels):
    from videogen.models.vae import VideoAutoencoder
    from videogen.pretrained import save_export

    vae = VideoAutoencoder(latent_channels=latent_channels, base_channels=8, channel_mult=(1,), spatial_compression=4,
                           temporal_compression=2, patch_size=4, patch_size_t=2)
    stats = {"latent_channels": latent_channels, "latent_mean": [0.0] * latent_channels,
             "latent_std": [1.0] * latent_channels, "temporal_compression": 2, "spatial_compression": 4}
    return save_export(folder, vae, stats)


def test_there_are_configs():
    assert any(p.parent.name == "data" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[1])) for p in CONFIGS])
def test_config_parses_and_instantiates(path, tmp_path):
    cfg = yaml.safe_load(path.read_text())
    if "model" in cfg:  # a full training config: LightningCLI builds trainer, model and data
        # GPU configs are built on this CPU: the hardware settings are overridden, the rest is as shipped
        cpu = ["--trainer.logger=false", "--trainer.accelerator=cpu", "--trainer.devices=1",
               "--trainer.strategy=auto", "--trainer.precision=32", "--trainer.num_nodes=1"]
        init = cfg["model"].get("init_args", {})
        dit_args = (init.get("dit") or {}).get("init_args", {})
        if "path" in dit_args:  # a pretrained diffusers transformer: tiny local stand-ins for the downloaded parts
            from models.pretrained_parts import tiny_stand_ins

            parts = tiny_stand_ins(init["dit"]["class_path"], tmp_path / "pretrained", bool(init.get("image_encoder")))
            cpu += [f"--model.init_args.{k}={v}" for k, v in parts.items() if k.startswith("dit.") or k in init]
            dit_args = {"in_channels": 4}  # the stand-ins' latent channels
        if "vae" in init and isinstance(init["vae"], str):  # a stage given the VAE export: a tiny one of the same width
            vae = make_vae_export(tmp_path / "vae", dit_args["in_channels"])
            cpu.append(f"--model.init_args.vae={vae}")
        if "path" in (init.get("captioner") or {}).get("init_args", {}):  # a pretrained HF captioner: a tiny one
            from tests.captioner.vlm import make_tiny_vlm

            cpu.append(f"--model.init_args.captioner.init_args.path={make_tiny_vlm(tmp_path / 'vlm')}")
        cli = lightning_cli(["--config", str(path), *cpu], run=False)
        assert cli.model is not None and cli.datamodule is not None
    elif "data" in cfg:
        dm = build_datamodule([str(path)], [])
        assert dm.bucketer.buckets or dm.bucketer.packing
    elif "steps" in cfg:  # a pipeline: its steps load (tests/test_pipeline.py runs one)
        from videogen.commands.pipeline import load_steps

        assert load_steps(path)[0]
    else:  # a fragment: test_fragment_merges_into_a_training_config
        assert path.parent.name == "trainer" and set(cfg) == {"trainer"}, f"{path}: a config of no known kind"


FRAGMENTS = [p for p in CONFIGS if p.parent.name == "trainer"]
BASE = next(p for p in CONFIGS if p.name == "base_256p.yaml" and p.parent.name == "dit")


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: p.name)
def test_fragment_merges_into_a_training_config(fragment, tmp_path):
    """A trainer fragment merged after the DiT config it is documented with keeps the config's model and
    data and brings its strategy; the values derived at build time agree (the DiT's input channels are the
    VAE's latent channels; a mismatch is refused at construction)."""
    import importlib

    base = yaml.safe_load(BASE.read_text())
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import Strategy

    strategy = yaml.safe_load(fragment.read_text())["trainer"]["strategy"]
    channels = base["model"]["init_args"]["dit"]["init_args"]["in_channels"]
    vae = make_vae_export(tmp_path / "vae", channels)
    # the fragment's strategy as jsonargparse builds it (FSDP refuses a CPU Trainer: the run below uses auto)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Strategy, "strategy")
    built = parser.instantiate_classes(parser.parse_object({"strategy": strategy}))["strategy"]
    module, cls = strategy["class_path"].rsplit(".", 1)
    assert isinstance(built, getattr(importlib.import_module(module), cls))
    cpu = ["--trainer.logger=false", "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32",
           "--trainer.num_nodes=1", "--trainer.strategy=auto", f"--model.init_args.vae={vae}"]
    cli = lightning_cli(["--config", str(BASE), "--config", str(fragment), *cpu], run=False)
    assert cli.model.dit.in_channels == channels == cli.model.vae_export.stats["latent_channels"]
    assert len(cli.model.dit.blocks) == base["model"]["init_args"]["dit"]["init_args"]["depth"]
    assert [b.name for b in cli.datamodule.bucketer.buckets] == [
        f"{b['num_frames']}x{b['height']}x{b['width']}" for b in base["data"]["init_args"]["bucketer"]["buckets"]]
    wrong = make_vae_export(tmp_path / "wrong", channels + 1)
    with pytest.raises(SystemExit):  # the linked value: a VAE of other latent channels is refused, one line
        lightning_cli(["--config", str(BASE), "--config", str(fragment), *cpu, f"--model.init_args.vae={wrong}"],
                      run=False)


@pytest.mark.parametrize("path", [p for p in CONFIGS if "model" in yaml.safe_load(p.read_text())],
                         ids=lambda p: str(p.relative_to(p.parents[1])))
def test_training_configs_name_every_optimizer_figure(path):
    """The optimizer and schedule are given in full: an init arg left out would be the class's own default
    (torch's AdamW: betas (0.9, 0.999), weight_decay 0.01), not the stage's."""
    init = yaml.safe_load(path.read_text())["model"]["init_args"]
    assert init["optimizer"]["class_path"] == "torch.optim.AdamW"
    assert {"lr", "betas", "weight_decay"} <= set(init["optimizer"]["init_args"])
    assert init["lr_scheduler"]["class_path"] == "videogen.modules.lr_schedule.WarmupCosine"
    assert set(init["lr_scheduler"]["init_args"]) == {"warmup", "decay", "floor"}


def test_data_overrides_apply():
    path = next(p for p in CONFIGS if p.name == "quickstart.yaml" and p.parent.name == "data")
    dm = build_datamodule([str(path)], ["--data.loader.num_workers=0", "--data.bucketer.batch_size=7"])
    assert dm.loader.num_workers == 0 and dm.bucketer.batch_size == 7


def test_sequence_parallel_fragment_merges_after_a_dit_config(tmp_path):
    """configs/trainer/sequence_parallel.yaml after the quickstart DiT: the strategy and its degree (an option)."""
    from videogen.parallel.strategy import SequenceParallelStrategy

    root = Path(__file__).parent.parent / "configs"
    vae = make_vae_export(tmp_path / "vae", 8)
    for extra, degree in (([], 2), (["--trainer.strategy.init_args.sequence_parallel_size=4"], 4)):
        cli = lightning_cli(["--config", str(root / "dit" / "quickstart.yaml"), "--config",
                             str(root / "trainer" / "sequence_parallel.yaml"), "--trainer.logger=false",
                             f"--trainer.devices={degree}", f"--model.init_args.vae={vae}", *extra], run=False)
        strategy = cli.trainer.strategy
        assert isinstance(strategy, SequenceParallelStrategy) and strategy.sequence_parallel_size == degree
        assert cli.trainer.num_devices == degree


def test_fsdp_fragment_reduces_gradients_in_fp32(tmp_path, monkeypatch):
    """configs/trainer/fsdp_dit.yaml merged after a DiT config: Lightning's FSDPStrategy gets the fragment's
    MixedPrecision (bf16 compute, fp32 gradient reduction and buffers), not bf16-mixed's bf16 reduction."""
    import sys

    import torch
    from lightning.pytorch.strategies import FSDPStrategy

    sys.path.insert(0, str(Path(__file__).parent / "distributed"))  # Lightning's FSDPStrategy, allowed on a CPU
    root = Path(__file__).parent.parent / "configs"
    vae = make_vae_export(tmp_path / "vae", 8)
    # the CPU stands in for GPUs here: keep bf16-mixed on a CPU without bf16 instructions too (cli.cpu_precision)
    monkeypatch.setattr("videogen.cli.cpu_has_native_bf16", lambda: True)
    cli = lightning_cli(["--config", str(root / "dit" / "quickstart.yaml"), "--config", str(root / "trainer" / "fsdp_dit.yaml"),
                         "--trainer.logger=false", "--trainer.accelerator=cpu", "--trainer.devices=1",
                         "--trainer.strategy.class_path=cpu_fsdp.CPUFSDPStrategy", f"--model.init_args.vae={vae}"], run=False)
    strategy = cli.trainer.strategy
    assert isinstance(strategy, FSDPStrategy) and cli.trainer.precision == "bf16-mixed"
    assert strategy.sharding_strategy.name == "FULL_SHARD"  # the fragment's other settings came through too
    mp = strategy.mixed_precision_config
    assert (mp.param_dtype, mp.reduce_dtype, mp.buffer_dtype) == (torch.bfloat16, torch.float32, torch.float32)
