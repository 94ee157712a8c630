"""Two real DDP processes (gloo, CPU) through ``videogen fit`` on real shards: the VAE and DiT stages
keep identical weights on both ranks, ranks read disjoint samples, and epochs over unequal shards
end together (the loader's equal batches per rank)."""

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from launch import (data_section, env, fit_config, keys_by_epoch, records, run_fit, tiny_dit_model,  # noqa: E402
                    tiny_vae_model, write_shards)

pytestmark = pytest.mark.slow


def test_vae_ddp_two_ranks_sync_weights_split_data_and_end_epochs_together(tmp_path):
    owner = write_shards(tmp_path / "shards", [5, 3, 2])  # 3 shards of unequal size over 2 ranks
    cfg = fit_config(tmp_path / "vae.yaml", tiny_vae_model(), data_section(tmp_path / "shards"), tmp_path,
                     max_epochs=2)
    run_fit(cfg)
    r0, r1 = records(tmp_path)
    assert (r0["rank"], r1["rank"]) == (0, 1) and r0["world_size"] == r1["world_size"] == 2
    assert r0["strategy"] == "DDPStrategy"
    # equal epochs: 10 samples / 2 ranks / batch 1 = 5 steps per epoch on both ranks, whoever holds 1 or 2 shards
    assert r0["end_step"] == r1["end_step"] == 10 and len(r0["batches"]) == len(r1["batches"]) == 10
    e0, e1 = keys_by_epoch(r0), keys_by_epoch(r1)
    assert sorted(e0) == sorted(e1) == [0, 1]
    for epoch in (0, 1):
        assert len(e0[epoch]) == len(e1[epoch]) == 5
        assert not set(e0[epoch]) & set(e1[epoch])  # disjoint ...
        assert sorted(e0[epoch] + e1[epoch]) == sorted(owner)  # ... and together every sample exactly once
        # whole shards per rank: a shard's samples all went to one rank
        shards0 = {owner[k] for k in e0[epoch]}
        assert not shards0 & {owner[k] for k in e1[epoch]}
    # gradients are averaged: both ranks hold the same weights, which moved, though their losses differ
    assert r0["weights_at_start"] == r1["weights_at_start"]
    assert r0["weights_at_end"] == r1["weights_at_end"] != r0["weights_at_start"]
    assert r0["losses"] != r1["losses"]


def test_dit_ddp_two_ranks_sync_weights(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import tiny_export

    owner = write_shards(tmp_path / "shards", [4, 2, 2])
    vae = tiny_export(tmp_path / "vae")
    cfg = fit_config(tmp_path / "dit.yaml", tiny_dit_model(str(vae), ema_decay=None), data_section(tmp_path / "shards"),
                     tmp_path, max_steps=4)
    run_fit(cfg)
    r0, r1 = records(tmp_path)
    assert r0["end_step"] == r1["end_step"] == 4
    k0, k1 = keys_by_epoch(r0)[0], keys_by_epoch(r1)[0]
    assert len(k0) == len(k1) == 4 and not set(k0) & set(k1) and sorted(k0 + k1) == sorted(owner)
    assert r0["weights_at_end"] == r1["weights_at_end"] != r0["weights_at_start"]
    assert r0["losses"] != r1["losses"]


def test_captioner_ddp_two_ranks_sync_weights(tmp_path):
    from data_recipes.synthetic import write_synthetic

    write_synthetic(tmp_path / "synthetic", num_samples=8, seed=0, val_fraction=0.0, shard_size=3)  # 3, 3, 2
    model = {"class_path": "videogen.modules.captioner.CaptionerModule",
             "init_args": {"captioner": {"class_path": "videogen.models.captioner.VideoCaptioner",
                                         "init_args": {"vocab_size": 30522, "dim": 32, "depth": 1, "heads": 2,
                                                       "max_length": 64, "channels": [8, 16], "num_frames": 4,
                                                       "grid": [2, 2]}},
                           "max_length": 64,
                           "lr_scheduler": {"class_path": "videogen.modules.lr_schedule.WarmupCosine",
                                            "init_args": {"warmup": 1}}}}
    buckets = [{"num_frames": 5, "height": 32, "width": 48}, {"num_frames": 5, "height": 48, "width": 32},
               {"num_frames": 5, "height": 32, "width": 32}]
    data = data_section(tmp_path / "synthetic" / "train", bucketer={"buckets": buckets}, clips={"frame_stride": 2})
    # steps without video (video_dropout) or without some decoder inputs leave parameters unused: DDP must look
    cfg = fit_config(tmp_path / "captioner.yaml", model, data, tmp_path, max_steps=3,
                     strategy="ddp_find_unused_parameters_true")
    run_fit(cfg)
    r0, r1 = records(tmp_path)
    assert r0["end_step"] == r1["end_step"] == 3 and len(r0["batches"]) == len(r1["batches"]) == 3
    k0, k1 = keys_by_epoch(r0)[0], keys_by_epoch(r1)[0]
    assert not set(k0) & set(k1)
    assert r0["weights_at_end"] == r1["weights_at_end"] != r0["weights_at_start"]
    assert r0["losses"] != r1["losses"]


def test_dit_ddp_trains_from_caption_embeddings_with_no_encoder_on_any_rank(tmp_path):
    """A latent cache with caption embeddings (tiny T5): no rank builds a text encoder for training; rank 0
    alone builds one at setup for the validation prompts and every rank gets the same tokens."""
    import json

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from models.pretrained_parts import tiny_t5
    from conftest import tiny_export
    from videogen.pipelines.encode import encode

    write_shards(tmp_path / "shards", [2, 2])
    vae, t5 = tiny_export(tmp_path / "vae"), tiny_t5(tmp_path / "t5")
    cache = encode(str(vae), str(tmp_path / "shards"), tmp_path / "cache", max_area=32 * 32, max_frames=9,
                   text_encoder=str(t5), text_max_length=8, num_workers=0, accelerator="cpu", devices=1,
                   progress=False)
    model = tiny_dit_model(str(vae), ema_decay=None, text_encoder=str(t5), text_max_length=8,
                           text_embeddings="cache", val_prompts=["a red square", "a blue circle", "a red circle"],
                           val_steps=1, val_shape=[9, 32, 32])
    model["init_args"]["dit"]["init_args"]["text_dim"] = 32
    cfg = fit_config(tmp_path / "dit.yaml", model, data_section(cache, val_shards=str(cache), loader={"val_batches": 1}),
                     tmp_path, max_steps=2, val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=1,
                     num_sanity_val_steps=0,
                     callbacks=[{"class_path": "text_counter.TextEncoderCounter",
                                 "init_args": {"out": str(tmp_path / "records")}}])
    run_fit(cfg)
    r0, r1 = records(tmp_path)
    assert r0["end_step"] == r1["end_step"] == 2 and r0["gathered"] == r1["gathered"] and len(r0["gathered"][0]) == 3
    t0, t1 = (json.loads((tmp_path / "records" / f"text-rank{r}.json").read_text()) for r in (0, 1))
    assert (t0["built"], t1["built"]) == (1, 0)  # the validation prompts, on rank 0, once
    assert t0["from_cache"] and t1["from_cache"] and not t0["holds_encoder"] and not t1["holds_encoder"]
    assert t0["prompts"] == t1["prompts"] and len(t0["prompts"]) == 3


def test_fit_closes_its_gloo_process_group_before_exit(tmp_path):
    """Lightning destroys the process group at exit only for NCCL: a gloo group left to interpreter
    finalisation can abort a run that succeeded ("terminate called without an active exception", rc -6).
    ``videogen fit`` closes it itself, so nothing distributed is left open when ``main`` returns."""
    write_shards(tmp_path / "shards", [2])
    cfg = fit_config(tmp_path / "vae.yaml", tiny_vae_model(), data_section(tmp_path / "shards"), tmp_path,
                     devices=1, max_steps=1)
    driver = tmp_path / "driver.py"
    driver.write_text("import sys\nimport torch.distributed as dist\nfrom videogen.cli import main\n"
                      "rc = main(['fit', '--config', sys.argv[1]])\n"
                      "print('group open after main:', dist.is_initialized())\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, str(driver), str(cfg)], env=env(), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert records(tmp_path)[0]["strategy"] == "DDPStrategy"  # the run did open a group
    assert "group open after main: False" in proc.stdout
