"""The videogen command: help, config merging and interpolation, a real fit, exact resume mid-epoch."""

import json

import pytest
import yaml

from videogen.cli import EXTRA_COMMANDS, TRAINER_COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*TRAINER_COMMANDS, *EXTRA_COMMANDS]:
        assert f"  {name} " in out, name
    assert "unavailable" not in out


def test_unknown_command_is_an_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def write_configs(tmp_path, shards, **trainer):
    base = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 4, "logger": False, "enable_progress_bar": False,
                    "limit_val_batches": 0, "default_root_dir": str(tmp_path / "run"), **trainer},
        "model": {"class_path": "cli_fixtures.TinyVideoModel", "init_args": {"lr": 0.05}},
        "data": {"class_path": "videogen.data.VideoDataModule",
                 "init_args": {"train_shards": str(shards), "loader": {"num_workers": 2, "shuffle_buffer": 8},
                               "bucketer": {"batch_size": 2,
                                            "buckets": [{"num_frames": 9, "height": 64, "width": 96},
                                                        {"num_frames": 9, "height": 64, "width": 64}]}}},
    }
    override = {"model": {"init_args": {"lr": "${data.init_args.bucketer.batch_size}"}},  # omegaconf interpolation
                "data": {"init_args": {"bucketer": {"batch_size": 3}}}}
    a, b = tmp_path / "base.yaml", tmp_path / "override.yaml"
    a.write_text(yaml.safe_dump(base))
    b.write_text(yaml.safe_dump(override))
    return a, b


def test_configs_merge_in_order_with_interpolation(tmp_path, clip_shards, capsys):
    a, b = write_configs(tmp_path, clip_shards)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(a), "--config", str(b), "--print_config"])
    assert e.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["init_args"]["bucketer"]["batch_size"] == 3  # the second file wins
    assert len(cfg["data"]["init_args"]["bucketer"]["buckets"]) == 2  # the first file's other keys stay
    assert cfg["data"]["init_args"]["loader"]["num_workers"] == 2
    assert cfg["model"]["init_args"]["lr"] == 3  # ${data.init_args.bucketer.batch_size}, resolved


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_trains_in_fp32(tmp_path, clip_shards, capsys, monkeypatch, native):
    import videogen.cli as cli

    monkeypatch.setattr(cli, "cpu_has_native_bf16", lambda: native)
    a, _ = write_configs(tmp_path, clip_shards, precision="bf16-mixed")
    built = cli.lightning_cli(["--config", str(a)], run=False)
    assert built.trainer.precision == ("bf16-mixed" if native else "32-true")
    told = "on a CPU without bf16 instructions (AVX512-BF16 or AMX)" in capsys.readouterr().err
    assert told is not native


def test_wrong_config_value_is_a_clear_error(tmp_path, clip_shards, capsys):
    a, _ = write_configs(tmp_path, clip_shards)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(a), "--data.init_args.bucketer.batch_size=many"])
    assert e.value.code != 0
    assert "batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("old, name, new", [
    ("lr: 0.001", "lr", "model.init_args.optimizer.init_args.lr"),
    ("dit: {init_args: {gradient_checkpointing: true}}", "gradient_checkpointing", "model.init_args.activation_checkpointing")])
def test_a_retired_config_key_names_the_key_it_became(tmp_path, capsys, old, name, new):
    """A config written before the optimizer was injected (or before activation checkpointing moved out of the
    DiT) is refused as jsonargparse refuses any unknown key, after one line naming the key that replaced it."""
    from pathlib import Path

    old_config = tmp_path / "old.yaml"
    old_config.write_text(f"model:\n  init_args:\n    {old}\n")
    smoke = Path(__file__).parents[1] / "configs/dit/smoke.yaml"
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(smoke), "--config", str(old_config), "--print_config"])
    assert e.value.code == 2
    assert f"videogen: a config or checkpoint from before {name} was retired: it is now {new}" in capsys.readouterr().err


def run_fit(tmp_path, shards, record, max_steps, ckpt=None, every=None):
    tmp_path.mkdir(exist_ok=True)
    a, _ = write_configs(tmp_path, shards, max_steps=max_steps)
    args = ["fit", "--config", str(a), f"--model.init_args.record_to={record}"]
    if every:
        args += ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                 f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}", f"--trainer.callbacks.every_n_train_steps={every}",
                 "--trainer.callbacks.save_last=true"]
    if ckpt:
        args += [f"--ckpt_path={ckpt}"]
    main(args)
    return [json.loads(line) for line in open(record)]


@pytest.mark.slow
def test_fit_resumes_mid_epoch_with_identical_batches_and_losses(tmp_path, clip_shards):
    # 12 batches per epoch; stop at step 10 (mid-epoch 0), resume, go on to step 16 (mid-epoch 1)
    reference = run_fit(tmp_path / "a", clip_shards, tmp_path / "a.jsonl", 16)
    first = run_fit(tmp_path / "b", clip_shards, tmp_path / "b.jsonl", 10, every=10)
    assert (tmp_path / "b" / "ckpt" / "last.ckpt").exists()
    assert (tmp_path / "b" / "run" / "config.yaml").exists() or list((tmp_path / "b").rglob("config.yaml"))
    resumed = run_fit(tmp_path / "b", clip_shards, tmp_path / "c.jsonl", 16, ckpt=tmp_path / "b" / "ckpt" / "last.ckpt")
    assert [r["step"] for r in resumed] == list(range(10, 16))
    assert [r["batch"] for r in first + resumed] == [r["batch"] for r in reference]
    assert [r["loss"] for r in first + resumed] == pytest.approx([r["loss"] for r in reference], rel=1e-6, abs=1e-7)
    assert len({r["batch"] for r in reference}) == 16
