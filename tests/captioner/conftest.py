"""Fixtures for the captioner tests: a small real synthetic set and a tiny captioner export."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory):
    """12 synthetic clips (real mp4s in real tars): train 9 in 3 shards, val 3 in 1 shard."""
    from data_recipes.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_samples=12, seed=0, val_fraction=0.25, shard_size=3)
    return out


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """A randomly initialised tiny captioner exported the way `videogen fit` exports one."""
    import torch

    from videogen.models.captioner import captioner_tiny
    from videogen.modules.captioner import CaptionerModule
    from videogen.pretrained import save_export

    torch.manual_seed(0)
    module = CaptionerModule(captioner_tiny(), txt_prob=0.5, video_dropout=0.5)
    return save_export(tmp_path_factory.mktemp("captioner") / "export", module.export_module(), module.export_stats())
