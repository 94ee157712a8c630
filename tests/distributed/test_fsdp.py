"""FSDP as configured in configs/trainer/fsdp_dit.yaml (full shard, one FSDP unit and one activation
checkpoint per DiT block), run on two CPU processes with gloo: in fp32 it trains the DiT exactly as
DDP does (same losses on each rank, step by step, and the same weights after). bf16-mixed cannot run
on a CPU (Lightning's FSDP precision autocasts CUDA only): see docs/cluster.md."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from launch import data_section, fit_config, records, run_fit, tiny_dit_model, write_shards  # noqa: E402

pytestmark = pytest.mark.slow
FRAGMENT = Path(__file__).parents[2] / "configs" / "trainer" / "fsdp_dit.yaml"


def fsdp_strategy() -> dict:
    """The shipped strategy settings, on the CPU variant of Lightning's FSDPStrategy (tests/distributed/cpu_fsdp.py)."""
    strategy = yaml.safe_load(FRAGMENT.read_text())["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    return {"class_path": "cpu_fsdp.CPUFSDPStrategy", "init_args": strategy["init_args"]}


def test_fsdp_full_shard_with_checkpointing_matches_ddp(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from test_encode import tiny_export

    write_shards(tmp_path / "shards", [4, 4])
    vae = str(tiny_export(tmp_path / "vae"))
    runs = {}
    for name, strategy in (("ddp", "ddp"), ("fsdp", fsdp_strategy())):
        out = tmp_path / name
        cfg = fit_config(tmp_path / f"{name}.yaml", tiny_dit_model(vae, ema_decay=None), data_section(tmp_path / "shards"),
                         out, strategy=strategy, precision="32-true", max_steps=3, save_weights=True)
        run_fit(cfg)
        runs[name] = (records(out), torch.load(out / "records" / "weights-rank0.pt", weights_only=True))
    (ddp0, ddp1), ddp_weights = runs["ddp"]
    (fsdp0, fsdp1), fsdp_weights = runs["fsdp"]
    assert fsdp0["strategy"] == "CPUFSDPStrategy" and ddp0["strategy"] == "DDPStrategy"
    assert fsdp0["fsdp_units"] == 3 and fsdp0["checkpoint_wrappers"] == 2  # root + one per block (depth 2)
    assert ddp0["fsdp_units"] == 0
    for d, f in ((ddp0, fsdp0), (ddp1, fsdp1)):
        assert [b["keys"] for b in d["batches"]] == [b["keys"] for b in f["batches"]]  # the same data per rank
        assert f["losses"] == pytest.approx(d["losses"], rel=1e-5, abs=1e-6)
    assert ddp0["losses"] != ddp1["losses"]
    dit_keys = [k for k in ddp_weights if k.startswith("dit.")]
    assert dit_keys and sorted(ddp_weights) == sorted(fsdp_weights)
    for k in dit_keys:
        assert torch.allclose(ddp_weights[k], fsdp_weights[k], atol=1e-5), k
