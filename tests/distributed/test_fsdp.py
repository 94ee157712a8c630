"""FSDP as configured in configs/trainer/fsdp_dit.yaml (full shard, one FSDP unit and one activation
checkpoint per DiT block), run on two CPU processes with gloo: in fp32 it trains the DiT exactly as
DDP does (same losses on each rank, step by step, the same weights after, the same export, the same
validation videos, sampled by both ranks). bf16-mixed cannot run
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
    """The shipped strategy settings, on the CPU variant of Lightning's FSDPStrategy (tests/distributed/cpu_fsdp.py),
    in fp32: the fragment's bf16 ``mixed_precision`` cannot run on a CPU (see the module docstring; tests/test_configs.py
    checks that it reaches the strategy)."""
    strategy = yaml.safe_load(FRAGMENT.read_text())["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    init_args = dict(strategy["init_args"])
    assert init_args.pop("mixed_precision")["init_args"]["reduce_dtype"] == "torch.float32"
    return {"class_path": "cpu_fsdp.CPUFSDPStrategy", "init_args": init_args}


PROMPTS = ["a red circle moves left", "a blue square moves up", "a green triangle moves down"]


def test_fsdp_full_shard_with_checkpointing_matches_ddp(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import tiny_export

    write_shards(tmp_path / "shards", [4, 4])
    vae = str(tiny_export(tmp_path / "vae"))
    model = tiny_dit_model(vae, ema_decay=0.5, val_prompts=PROMPTS, val_shape=[5, 16, 16], val_steps=2)
    runs = {}
    for name, strategy in (("ddp", "ddp"), ("fsdp", fsdp_strategy())):
        out = tmp_path / name
        export = {"class_path": "videogen.callbacks.export.StageExport", "init_args": {"dirpath": str(out / "export")}}
        cfg = fit_config(tmp_path / f"{name}.yaml", model, data_section(tmp_path / "shards", val_shards=str(tmp_path / "shards")),
                         out, strategy=strategy, precision="32-true", max_steps=3, save_weights=True,
                         callbacks=[export], val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=1,
                         num_sanity_val_steps=0)
        run_fit(cfg)
        runs[name] = (records(out), torch.load(out / "records" / "weights-rank0.pt", weights_only=True))
    (ddp0, ddp1), ddp_weights = runs["ddp"]
    (fsdp0, fsdp1), fsdp_weights = runs["fsdp"]
    assert fsdp0["strategy"] == "CPUFSDPStrategy" and ddp0["strategy"] == "DDPStrategy"
    # units: the root, the DiT and its 2 blocks, the EMA's DiT and its 2 blocks; checkpointing per block
    assert fsdp0["fsdp_units"] == 7 and fsdp0["checkpoint_wrappers"] == 4
    assert ddp0["fsdp_units"] == 0
    for d, f in ((ddp0, fsdp0), (ddp1, fsdp1)):
        assert [b["keys"] for b in d["batches"]] == [b["keys"] for b in f["batches"]]  # the same data per rank
        assert f["losses"] == pytest.approx(d["losses"], rel=1e-5, abs=1e-6)
    assert ddp0["losses"] != ddp1["losses"]
    dit_keys = [k for k in ddp_weights if k.startswith("dit.")]
    assert dit_keys and sorted(ddp_weights) == sorted(fsdp_weights)
    for k in dit_keys:
        assert torch.allclose(ddp_weights[k], fsdp_weights[k], atol=1e-5), k

    # the EMA copy (what validation samples and the export holds) is averaged shard by shard: the same as DDP's
    ema_keys = [k for k in ddp_weights if k.startswith("ema.module.")]
    assert len(ema_keys) == len(dit_keys)
    for k in ema_keys:
        assert torch.allclose(ddp_weights[k], fsdp_weights[k], atol=1e-5), k
        assert not torch.equal(fsdp_weights[k], fsdp_weights["dit." + k[len("ema.module."):]]), k  # it averages

    # the export at the end of fit: the EMA's whole weights gathered from the shards, the same as DDP's
    from safetensors.torch import load_file

    ddp_export, fsdp_export = (load_file(str(tmp_path / n / "export" / "model.safetensors")) for n in ("ddp", "fsdp"))
    assert sorted(ddp_export) == sorted(k[len("dit."):] for k in dit_keys) == sorted(fsdp_export)
    for k in ddp_export:
        assert torch.allclose(ddp_export[k], fsdp_export[k], atol=1e-5), k
    assert torch.equal(fsdp_export["x_embedder.weight"], fsdp_weights["ema.module.x_embedder.weight"])

    # validation sampling is spread over the ranks (prompt i on rank i % 2; rank 1 repeats one to keep
    # step with rank 0) and gathered to every rank in prompt order
    for rank0, rank1 in ((ddp0, ddp1), (fsdp0, fsdp1)):
        assert [s["prompts"] for s in rank0["sampled"]] == [[PROMPTS[0], PROMPTS[2]]]
        assert [s["prompts"] for s in rank1["sampled"]] == [[PROMPTS[1], PROMPTS[0]]]
        mine0, mine1 = rank0["sampled"][0]["sums"], rank1["sampled"][0]["sums"]
        assert rank0["gathered"] == rank1["gathered"] == [[mine0[0], mine1[0], mine0[1]]]
    assert fsdp0["gathered"][0] == pytest.approx(ddp0["gathered"][0], rel=1e-4, abs=0.05)


def test_fsdp_packed_batches_match_ddp(tmp_path):
    """Packed batches (the loader's packing mode: several clips in one token row) go through the FSDP-wrapped
    DiT's own forward, not around it: training losses, the weights, the EMA (validated on packs too) and the
    export equal DDP's. The joint text attention covers the packed layout with text keys in the softmax."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import tiny_export

    write_shards(tmp_path / "shards", [4, 4])
    vae = str(tiny_export(tmp_path / "vae"))
    model = tiny_dit_model(vae, ema_decay=0.5)
    model["init_args"]["dit"]["init_args"]["text_attention"] = "joint"
    # 9 x 32 x 32 clips are 3 x 4 x 4 = 48 tokens (VAE 4 x 4 x 4, patch 1 x 2 x 2): two clips per 100-token pack
    data = data_section(tmp_path / "shards", val_shards=str(tmp_path / "shards"),
                        bucketer={"buckets": [], "packing": True, "token_budget": 100, "max_area": 32 * 32,
                                  "max_frames": 9, "size_multiple": 16, "frame_multiple": 4})
    runs = {}
    for name, strategy in (("ddp", "ddp"), ("fsdp", fsdp_strategy())):
        out = tmp_path / name
        export = {"class_path": "videogen.callbacks.export.StageExport", "init_args": {"dirpath": str(out / "export")}}
        cfg = fit_config(tmp_path / f"{name}.yaml", model, data, out, strategy=strategy, precision="32-true",
                         max_steps=3, save_weights=True, callbacks=[export], val_check_interval=2,
                         check_val_every_n_epoch=None, limit_val_batches=1, num_sanity_val_steps=0)
        run_fit(cfg)
        runs[name] = (records(out), torch.load(out / "records" / "weights-rank0.pt", weights_only=True))
    (ddp0, ddp1), ddp_weights = runs["ddp"]
    (fsdp0, fsdp1), fsdp_weights = runs["fsdp"]
    assert fsdp0["strategy"] == "CPUFSDPStrategy" and fsdp0["fsdp_units"] == 7
    for d, f in ((ddp0, fsdp0), (ddp1, fsdp1)):
        assert [b["keys"] for b in d["batches"]] == [b["keys"] for b in f["batches"]]
        assert all(len(b["keys"]) == 2 for b in f["batches"])  # packs of two clips
        assert f["losses"] == pytest.approx(d["losses"], rel=1e-5, abs=1e-6)
    assert ddp0["losses"] != ddp1["losses"]
    keys = [k for k in ddp_weights if k.startswith(("dit.", "ema.module."))]
    assert len(keys) > 20 and sorted(ddp_weights) == sorted(fsdp_weights)
    for k in keys:
        assert torch.allclose(ddp_weights[k], fsdp_weights[k], atol=1e-5), k
    from safetensors.torch import load_file

    ddp_export, fsdp_export = (load_file(str(tmp_path / n / "export" / "model.safetensors")) for n in ("ddp", "fsdp"))
    assert sorted(ddp_export) == sorted(fsdp_export)
    for k in ddp_export:
        assert torch.allclose(ddp_export[k], fsdp_export[k], atol=1e-5), k
