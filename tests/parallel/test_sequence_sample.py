"""``videogen sample --devices N``: N gloo processes sample each clip together (its tokens split over
them by sequence parallelism) and give the one-process videos; rank 0's videos are written."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import tiny_export  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from videogen.models.dit import DiT
    from videogen.modules.dit import DiTModule
    from videogen.pretrained import save_export

    tmp = tmp_path_factory.mktemp("sp_sample")
    torch.manual_seed(0)
    module = DiTModule(DiT(in_channels=4, hidden_size=32, depth=2, num_heads=2, text_dim=384, frame_conditioning=True),
                       vae=str(tiny_export(tmp / "vae")), text_max_length=16, ema_decay=None)
    with torch.no_grad():  # an untrained DiT outputs 0 (zero-initialised final layer): give it weights that matter
        for p in module.dit.parameters():
            p.normal_(0, 0.1)
    return save_export(tmp / "export", module.dit, module.export_stats())


def args_for(export, out, **kw) -> argparse.Namespace:
    from videogen.commands.sample import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--ckpt", str(export), "--prompt", "a red square moving right", "--out", str(out), "--num-frames", "9",
            "--height", "32", "--width", "48", "--steps", "3"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parser.parse_args(argv)


def test_two_processes_sample_the_one_process_videos(export, tmp_path):
    from videogen.cli import main
    from videogen.commands.sample import sample_parallel, sample_videos
    from videogen.data.decode import PyAVDecoder

    prompts = ["a red square moving right", "a blue circle moving up"]
    one = sample_videos(args_for(export, tmp_path / "a.mp4"), prompts)
    two = sample_parallel(args_for(export, tmp_path / "b.mp4", devices=2), prompts)
    assert one.shape == two.shape == (2, 3, 9, 32, 48)
    assert one.std() > 0.01  # the videos depend on the weights, so equality means something
    assert torch.allclose(one, two, atol=1e-4), (one - two).abs().max()
    out = tmp_path / "cli.mp4"
    assert main(["sample", "--ckpt", str(export), "--prompt", prompts[0], "--out", str(out), "--num-frames", "9",
                 "--height", "32", "--width", "48", "--steps", "3", "--devices", "2"]) == 0
    info = PyAVDecoder().probe(out.read_bytes())
    assert (info.width, info.height, info.num_frames) == (48, 32, 9)


def test_a_degree_that_does_not_divide_the_heads_is_one_line(export, tmp_path, capsys):
    from videogen.cli import main

    assert main(["sample", "--ckpt", str(export), "--prompt", "x", "--out", str(tmp_path / "o.mp4"), "--height", "32",
                 "--width", "48", "--steps", "1", "--devices", "3"]) == 2
    assert "2 attention heads do not split over sequence degree 3" in capsys.readouterr().out
