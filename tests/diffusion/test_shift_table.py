"""docs/dit.md's shift table is benchmarks/shift_table.py's output for configs/dit/base_256p.yaml, and its
"t < 0.5" share is the share of the training timesteps DiTModule draws (sampled, not only the formula)."""

import sys
from pathlib import Path

import pytest
import torch

from videogen.diffusion import logit_normal, shift_timesteps, timestep_shift

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shift_table  # noqa: E402


BASE_TOKEN = (4, 16, 16)  # configs/vae/base_256p.yaml's 4x8x8 compression x configs/dit/base_256p.yaml's 1x2x2 patch


def test_docs_hold_the_table_of_the_base_config():
    table = shift_table.markdown(shift_table.rows(str(ROOT / "configs/dit/base_256p.yaml"), BASE_TOKEN))
    assert table in (ROOT / "docs/dit.md").read_text()


def test_share_below_half_is_the_sampled_training_timesteps():
    rows = shift_table.rows(str(ROOT / "configs/dit/quickstart.yaml"), token_shape=(2, 8, 8))
    assert [r["shift"] for r in rows] == pytest.approx([(96 * 5 / 256) ** 0.5] * 2 + [(64 * 5 / 256) ** 0.5])
    g = torch.Generator().manual_seed(0)
    for r in rows + shift_table.rows(str(ROOT / "configs/dit/base_256p.yaml"), BASE_TOKEN):
        t = logit_normal(200_000, r["mean"], r["std"], g)
        t = shift_timesteps(t, timestep_shift(torch.tensor([r["temporal"]]), torch.tensor([r["spatial"]])))
        assert (t < 0.5).float().mean().item() == pytest.approx(r["below_half"], abs=0.004)
