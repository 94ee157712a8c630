"""Two real DDP processes (gloo, CPU) through ``videogen fit`` where only rank 1 sees NaN inputs: both
ranks skip the same steps and keep equal weights, and when ``max_bad_steps`` in a row are exceeded
both stop with the same one error instead of one raising while the other waits in a collective."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "distributed"))  # launch.py, and nan_rank.py for the ranks
from launch import VIDEOGEN, data_section, env, fit_config, tiny_dit_model, tiny_vae_model, write_shards  # noqa: E402

pytestmark = pytest.mark.slow


def nan_callback(tmp_path: Path, **kw) -> dict:
    return {"class_path": "nan_rank.NaNOnRank", "init_args": {"out": str(tmp_path / "nan"), "rank": 1, **kw}}


def fit(cfg: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    # a hang (one rank raised, the other waits in a collective) ends here as a TimeoutExpired
    return subprocess.run([VIDEOGEN, "fit", "--config", str(cfg)], env=env(), capture_output=True, text=True,
                          timeout=timeout, cwd=cfg.parent)


def rank_rows(tmp_path: Path) -> list[dict]:
    return [json.loads((tmp_path / "nan" / f"nan-rank{r}.json").read_text()) for r in (0, 1)]


def models(tmp_path: Path, max_bad_steps: int):
    from test_encode import tiny_export

    vae = tiny_vae_model()
    vae["init_args"]["max_bad_steps"] = max_bad_steps
    guard = {"class_path": "videogen.modules.guards.NumericGuard", "init_args": {"max_bad_steps": max_bad_steps}}
    dit = tiny_dit_model(str(tiny_export(tmp_path / "vae-export")), ema_decay=None)
    return {"vae": (vae, []), "dit": (dit, [guard])}


@pytest.mark.parametrize("stage", ["vae", "dit"])
def test_nan_on_one_rank_is_skipped_on_both_with_equal_weights(tmp_path, stage):
    write_shards(tmp_path / "shards", [4, 4])
    model, callbacks = models(tmp_path, max_bad_steps=3)[stage]
    cfg = fit_config(tmp_path / "fit.yaml", model, data_section(tmp_path / "shards"), tmp_path, max_epochs=1,
                     callbacks=[*callbacks, nan_callback(tmp_path, batches=[1, 2])])
    proc = fit(cfg)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = rank_rows(tmp_path)
    assert r0["batches_seen"] == r1["batches_seen"] == 4  # 8 samples / 2 ranks / batch 1
    assert [r["bad_steps"] for r in r0["rows"]] == [r["bad_steps"] for r in r1["rows"]] == [0, 1, 2, 2]
    assert [r["in_a_row"] for r in r0["rows"]] == [r["in_a_row"] for r in r1["rows"]] == [0, 1, 2, 0]
    w0, w1 = [r["weights"] for r in r0["rows"]], [r["weights"] for r in r1["rows"]]
    assert w0 == w1  # equal on both ranks after every batch
    assert w0[0] == w0[1] == w0[2] != w0[3]  # the skipped batches changed no weight; the next one did


@pytest.mark.parametrize("stage, where, ranks", [
    ("vae", "input", "generator loss on rank 1 of 2"),  # the VAE checks its loss before the backward
    ("dit", "input", "the gradient of the loss on rank 0, 1 of 2"),  # DDP averaged the NaN into every gradient
    ("dit", "loss", "the loss on rank 1 of 2"),  # finite gradients, a NaN loss: the check at batch end
])
def test_too_many_nan_steps_on_one_rank_stop_both_with_the_same_error(tmp_path, stage, where, ranks):
    write_shards(tmp_path / "shards", [6, 6])
    model, callbacks = models(tmp_path, max_bad_steps=2)[stage]
    if where == "loss":  # a NaN loss after finite gradients: before the guard, which checks it at batch end
        callbacks = [{"class_path": "nan_rank.NaNLossOnRank", "init_args": {"rank": 1, "from_batch": 1}},
                     *callbacks, nan_callback(tmp_path)]
    else:
        callbacks = [*callbacks, nan_callback(tmp_path, from_batch=1)]
    cfg = fit_config(tmp_path / "fit.yaml", model, data_section(tmp_path / "shards"), tmp_path, max_epochs=1,
                     callbacks=callbacks)
    proc = fit(cfg)
    assert proc.returncode != 0
    r0, r1 = rank_rows(tmp_path)
    assert r0["error"] and r0["error"] == r1["error"], (r0["error"], r1["error"])
    assert r0["error"].startswith("FloatingPointError: 2 non-finite losses in a row"), r0["error"]
    assert f"last: {ranks} at step" in r0["error"], r0["error"]
    assert r0["batches_seen"] == r1["batches_seen"] <= 3  # stopped at the second bad batch, together
    assert "non-finite losses in a row" in proc.stderr
