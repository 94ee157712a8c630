"""Hostile export folders and checkpoints: a downloaded stage builds only videogen model classes,
runs no code, and is refused with one line (``videogen: error: <file>: ...``, exit 2) before
anything is constructed, through every command that loads a stage."""

import json
import logging
import subprocess
import sys

import pytest
import torch
import yaml

from reliability_helpers import ROOT, child_env, make_shards
from videogen.cli import main
from videogen.errors import RefusedFile
from videogen.models.vae import VideoAutoencoder
from videogen.pretrained import CONFIG, MANIFEST, WEIGHTS, load_export, save_export

STATS = {"latent_channels": 4, "latent_mean": [0.0] * 4, "latent_std": [1.0] * 4, "temporal_compression": 4,
         "spatial_compression": 4}


def tiny_vae(seed: int = 0) -> VideoAutoencoder:
    torch.manual_seed(seed)
    return VideoAutoencoder(latent_channels=4, base_channels=8, channel_mult=(1, 2), temporal_compression=4,
                            spatial_compression=4, patch_size=2, patch_size_t=2)


def gadget(marker) -> dict:
    """The record that, built as a stage, runs a shell command: a data-pipeline helper opening a pipe: URL."""
    return {"class_path": "videogen.data.stages._open_url", "init_args": {"url": f"pipe:touch {marker}"}}


def hostile_export(folder, config: dict):
    """A real export folder whose config.yaml was replaced (the other files as `videogen export` writes them)."""
    save_export(folder, tiny_vae(), STATS)
    (folder / CONFIG).write_text(yaml.safe_dump(config))
    return folder


def run_cli(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(rc, err, file, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"videogen: error: {file}"), err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("hostile") / "shards", n=2, shards=1)


def stage_commands(stage, shards, tmp_path):
    """Every command that loads a stage, given ``stage`` where it takes one."""
    return {
        "sample": ["sample", "--ckpt", stage, "--prompt", "a cat", "--out", tmp_path / "o.mp4"],
        "sample --upsampler": ["sample", "--ckpt", tmp_path / "none", "--prompt", "a cat", "--out", tmp_path / "o.mp4",
                               "--upsample-prompt", "--upsampler", stage],
        "encode": ["encode", "--vae", stage, "--data", shards, "--out", tmp_path / "lat", "--num-workers", "0",
                   "--accelerator", "cpu", "--devices", "1"],
        "eval-vae": ["eval-vae", "--vae", stage, "--data", shards, "--no-progress"],
        "recaption": ["recaption", "--ckpt", stage, "--data", shards, "--out", tmp_path / "rc", "--device", "cpu",
                      "--no-progress"],
    }


@pytest.mark.parametrize("command", ["sample", "sample --upsampler", "encode", "eval-vae", "recaption"])
def test_an_export_naming_a_pipe_gadget_runs_nothing(tmp_path, shards, capsys, command):
    marker = tmp_path / "PWNED"
    export = hostile_export(tmp_path / "evil", gadget(marker))
    rc, out, err = run_cli(stage_commands(export, shards, tmp_path)[command], capsys)
    assert not marker.exists()
    assert_refused(rc, err, export / CONFIG, "videogen.data.stages._open_url", "not a videogen model class")


@pytest.mark.slow
def test_a_dit_config_whose_vae_is_hostile_runs_nothing(tmp_path, shards):
    """`videogen fit` of a DiT whose `vae:` names a hostile export: the real command, in its own process."""
    marker = tmp_path / "PWNED"
    export = hostile_export(tmp_path / "evil", gadget(marker))
    cfg = yaml.safe_load((ROOT / "configs/dit/quickstart.yaml").read_text())
    cfg["model"]["init_args"]["vae"] = str(export)
    cfg["data"]["init_args"]["train_shards"] = str(shards)
    path = tmp_path / "dit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "videogen.cli", "fit", "--config", str(path),
                           "--trainer.default_root_dir", str(tmp_path / "run")], capture_output=True, text=True,
                          env=child_env(), cwd=tmp_path, timeout=300)
    assert not marker.exists()
    lines = [line for line in proc.stderr.splitlines() if line.startswith("videogen: error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert str(export / CONFIG) in lines[0] and "not a videogen model class" in lines[0]
    assert "Traceback" not in proc.stderr


def test_videogen_sample_refuses_a_pipe_gadget_export_in_a_real_process(tmp_path):
    marker = tmp_path / "PWNED"
    export = hostile_export(tmp_path / "evil", gadget(marker))
    proc = subprocess.run([sys.executable, "-m", "videogen.cli", "sample", "--ckpt", str(export), "--prompt", "x",
                           "--out", str(tmp_path / "o.mp4")], capture_output=True, text=True, env=child_env(),
                          timeout=120)
    assert not marker.exists()
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"videogen: error: {export / CONFIG}: class_path 'videogen.data.stages._open_url' is not a videogen model "
        f"class (only classes under videogen.models.* are built from export folders and checkpoints)"), proc.stderr


def hostile_checkpoint(path, config: dict, stage: str = "vae"):
    torch.save({"videogen": {"stage": stage, "config": config, "stats": dict(STATS), "export_prefix": "vae."},
                "state_dict": {f"vae.{k}": v for k, v in tiny_vae().state_dict().items()}, "global_step": 3}, path)
    return path


def test_videogen_export_of_a_checkpoint_carrying_a_gadget_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    ckpt = hostile_checkpoint(tmp_path / "evil.ckpt", gadget(marker))
    rc, out, err = run_cli(["export", "--ckpt", ckpt, "--out", tmp_path / "export"], capsys)
    assert not marker.exists() and not (tmp_path / "export").exists()
    assert_refused(rc, err, ckpt, "videogen.data.stages._open_url")


def test_a_checkpoint_gadget_is_refused_where_a_stage_checkpoint_is_taken(tmp_path, shards, capsys):
    marker = tmp_path / "PWNED"
    ckpt = hostile_checkpoint(tmp_path / "evil.ckpt", gadget(marker))
    for name, argv in stage_commands(ckpt, shards, tmp_path).items():
        rc, out, err = run_cli(argv, capsys)
        assert not marker.exists(), name
        assert_refused(rc, err, ckpt, "videogen.data.stages._open_url")


@pytest.mark.parametrize("nested", ["bottleneck", "list"])
def test_a_gadget_nested_inside_a_model_class_is_refused_before_anything_is_built(tmp_path, shards, capsys, nested):
    """The VAE itself is allowed; a gadget as one of its arguments (or inside a list) is found first."""
    marker = tmp_path / "PWNED"
    inner = gadget(marker) if nested == "bottleneck" else [1, {"class_path": "videogen.data.writer.TarShardWriter",
                                                               "init_args": {"path": str(marker)}}]
    export = hostile_export(tmp_path / "evil", {"class_path": "videogen.models.vae.VideoAutoencoder",
                                                "init_args": {"latent_channels": 4, "bottleneck": inner}})
    rc, out, err = run_cli(["export", "--ckpt", hostile_checkpoint(tmp_path / "e.ckpt", yaml.safe_load(
        (export / CONFIG).read_text())), "--out", tmp_path / "x"], capsys)
    assert not marker.exists()
    assert_refused(rc, err, tmp_path / "e.ckpt", "VideoAutoencoder.bottleneck", "not a videogen model class")
    rc, out, err = run_cli(["eval-vae", "--vae", export, "--data", shards], capsys)
    assert not marker.exists()
    assert_refused(rc, err, export / CONFIG, "VideoAutoencoder.bottleneck")


def test_expect_is_checked_before_the_class_is_constructed(tmp_path, capsys):
    """A captioner whose constructor would read `path` is named where a DiT is expected: the refusal
    names the mismatch, not the constructor's own error (it never ran)."""
    export = hostile_export(tmp_path / "cap", {"class_path": "videogen.models.captioner.HFVisionCaptioner",
                                               "init_args": {"path": str(tmp_path / "no-such-folder")}})
    rc, out, err = run_cli(["sample", "--ckpt", export, "--prompt", "x", "--out", tmp_path / "o.mp4"], capsys)
    assert_refused(rc, err, export / CONFIG, "holds a HFVisionCaptioner, expected a DiT")


@pytest.mark.parametrize("class_path", [
    "videogen.pretrained.save_export",           # a function of the package
    "videogen.models.configurable.Configurable",  # a class of the model package, not a model
    "videogen.checkpoint_io.atomic_torch_save",  # overwrites files
    "os.system",                                 # not videogen at all
    "videogen.models.vae.autoencoder.torch.load",  # reached through a model module's namespace
    "videogen.models.vae.autoencoder.nn.Linear",   # an nn.Module, not one of ours
])
def test_only_model_classes_of_the_package_are_built(tmp_path, shards, capsys, class_path):
    export = hostile_export(tmp_path / "evil", {"class_path": class_path, "init_args": {}})
    rc, out, err = run_cli(["eval-vae", "--vae", export, "--data", shards], capsys)
    assert_refused(rc, err, export / CONFIG, repr(class_path))


def test_unknown_init_args_are_refused(tmp_path, shards, capsys):
    export = hostile_export(tmp_path / "evil", {"class_path": "videogen.models.vae.VideoAutoencoder",
                                                "init_args": {"latent_channels": 4, "url": "pipe:true"}})
    rc, out, err = run_cli(["eval-vae", "--vae", export, "--data", shards], capsys)
    assert_refused(rc, err, export / CONFIG, "VideoAutoencoder takes no argument 'url'")


def test_retired_init_args_load_with_a_warning_and_no_other(tmp_path, caplog):
    """An export written while VideoAutoencoder still took scaling_factor / shift_factor loads (they are
    dropped, with one warning); a truly unknown argument beside them is still refused."""
    folder = save_export(tmp_path / "old", tiny_vae(), STATS)
    config = yaml.safe_load((folder / CONFIG).read_text())
    config["init_args"].update(scaling_factor=0.5, shift_factor=0.1)
    (folder / CONFIG).write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING, logger="videogen"):
        export = load_export(folder)
    warned = [r.getMessage() for r in caplog.records if "no longer takes" in r.getMessage()]
    assert warned == [f"{folder / CONFIG}: VideoAutoencoder no longer takes scaling_factor, shift_factor; ignored "
                      "(export the stage again to drop them)"]
    assert all(torch.equal(v, tiny_vae().state_dict()[k]) for k, v in export.module.state_dict().items())
    config["init_args"]["scale"] = 2.0
    (folder / CONFIG).write_text(yaml.safe_dump(config))
    with pytest.raises(RefusedFile, match="VideoAutoencoder takes no argument 'scale'"):
        load_export(folder)


@pytest.mark.parametrize("depth", [40, 100000])
def test_a_config_nested_without_end_is_one_line(tmp_path, shards, capsys, depth):
    export = save_export(tmp_path / "vae", tiny_vae(), STATS)
    if depth < 1000:  # nested mappings that the tree walk would follow
        value = 1
        for _ in range(depth):
            value = {"a": value}
        (export / CONFIG).write_text(yaml.safe_dump({"class_path": "videogen.models.vae.VideoAutoencoder",
                                                     "init_args": {"bottleneck": value}}))
    else:  # flow-style lists deeper than the YAML reader's recursion
        (export / CONFIG).write_text("[" * depth + "]" * depth)
    rc, out, err = run_cli(["eval-vae", "--vae", export, "--data", shards], capsys)
    assert_refused(rc, err, export / CONFIG, "nested deeper than 32 levels" if depth < 1000 else "not readable YAML")


def test_tampered_weights_are_refused_by_their_sha256(tmp_path, shards, capsys):
    export = save_export(tmp_path / "vae", tiny_vae(), STATS)
    data = bytearray((export / WEIGHTS).read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (export / WEIGHTS).write_bytes(bytes(data))
    rc, out, err = run_cli(["eval-vae", "--vae", export, "--data", shards], capsys)
    assert_refused(rc, err, export / WEIGHTS, "sha256", str(export / MANIFEST))


def test_weights_of_another_config_are_one_line_naming_the_keys(tmp_path, shards, capsys):
    """config.yaml edited to another size (manifest hash still matching the weights)."""
    export = save_export(tmp_path / "vae", tiny_vae(), STATS)
    config = yaml.safe_load((export / CONFIG).read_text())
    config["init_args"]["base_channels"] = 16
    (export / CONFIG).write_text(yaml.safe_dump(config))
    rc, out, err = run_cli(["eval-vae", "--vae", export, "--data", shards], capsys)
    assert_refused(rc, err, export / WEIGHTS, "do not fit the VideoAutoencoder", "shape-mismatched (")


def test_an_untouched_export_still_loads(tmp_path):
    vae = tiny_vae(seed=3)
    export = load_export(save_export(tmp_path / "vae", vae, STATS), expect=VideoAutoencoder)
    assert all(torch.equal(a, b) for a, b in zip(export.module.state_dict().values(), vae.state_dict().values()))
    assert json.loads((tmp_path / "vae" / MANIFEST).read_text())["weights_sha256"] == export.manifest["weights_sha256"]


def test_a_checkpoint_whose_weights_are_not_tensors_is_one_line(tmp_path, capsys):
    """A record of the right model, its state dict holding a number where a weight belongs."""
    from videogen.models.configurable import to_config

    vae = tiny_vae()
    ckpt = tmp_path / "odd.ckpt"
    state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    first = next(iter(state))
    state[first] = 3
    torch.save({"videogen": {"stage": "vae", "config": to_config(vae), "stats": dict(STATS), "export_prefix": "vae."},
                "state_dict": state}, ckpt)
    rc, out, err = run_cli(["export", "--ckpt", ckpt, "--out", tmp_path / "export"], capsys)
    assert_refused(rc, err, ckpt, f"{first[len('vae.'):]} (a int, not a tensor)")
    assert not (tmp_path / "export").exists()


RSS_CHILD = r"""
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(proc.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)  # MiB
"""


def peak_rss_of(argv, tmp_path):
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, sys.executable, "-m", "videogen.cli", *map(str, argv)],
                          capture_output=True, text=True, env=child_env(), timeout=300)
    rc, mib = map(int, proc.stdout.split())
    return rc, mib, proc.stderr


@pytest.mark.slow
def test_a_config_sized_unlike_its_weights_takes_no_memory(tmp_path, shards):
    """config.yaml says base_channels=512 (1.2 GiB of weights once built) beside the weights of an
    8-channel VAE: refused from a meta-device build, before the constructor allocates anything."""
    export = save_export(tmp_path / "vae", tiny_vae(), STATS)
    config = yaml.safe_load((export / CONFIG).read_text())
    config["init_args"]["base_channels"] = 512
    (export / CONFIG).write_text(yaml.safe_dump(config))
    _, baseline, _ = peak_rss_of(["eval-vae", "--vae", tmp_path / "none", "--data", shards], tmp_path)
    rc, mib, err = peak_rss_of(["eval-vae", "--vae", export, "--data", shards], tmp_path)
    assert rc == 2 and err.strip().startswith(f"videogen: error: {export / WEIGHTS}: the weights do not fit"), err
    print(f"peak RSS: {mib} MiB (a command refusing a missing VAE: {baseline} MiB)")
    assert mib < baseline + 300  # the 1.2 GiB model was never allocated
