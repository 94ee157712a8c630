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
    from conftest import tiny_export

    vae = tiny_vae_model()
    vae["init_args"]["max_bad_steps"] = max_bad_steps
    guard = {"class_path": "videogen.callbacks.guards.NumericGuard", "init_args": {"max_bad_steps": max_bad_steps}}
    dit = tiny_dit_model(str(tiny_export(tmp_path / "vae-export")), ema_decay=None)
    return {"vae": (vae, []), "dit": (dit, [guard])}


@pytest.mark.parametrize("stage, where, ranks", [
    ("vae", "input", "generator loss on rank 1 of 2"),  # the VAE checks its loss before the backward
    ("dit", "input", "the gradient of the loss on rank 0, 1 of 2"),  # DDP averaged the NaN into every gradient
    ("dit", "loss", "the loss on rank 1 of 2"),  # finite gradients, a NaN loss: the check at batch end
])
def test_nan_on_one_rank_is_skipped_on_both_and_too_many_stop_both_with_the_same_error(tmp_path, stage, where,
                                                                                        ranks):
    """Rank 1 is bad at batches 1, 3 and 4 with max_bad_steps=2: batch 1 is skipped on both ranks, batch
    2 trains (the run of bad steps resets), batches 3 and 4 are two in a row: both ranks stop there."""
    write_shards(tmp_path / "shards", [6, 6])
    model, callbacks = models(tmp_path, max_bad_steps=2)[stage]
    if where == "loss":  # a NaN loss after finite gradients: before the guard, which checks it at batch end
        callbacks = [{"class_path": "nan_rank.NaNLossOnRank", "init_args": {"rank": 1, "batches": [1, 3, 4]}},
                     *callbacks, nan_callback(tmp_path)]
    else:
        callbacks = [*callbacks, nan_callback(tmp_path, batches=[1, 3, 4])]
    cfg = fit_config(tmp_path / "fit.yaml", model, data_section(tmp_path / "shards"), tmp_path, max_epochs=1,
                     callbacks=callbacks)
    proc = fit(cfg)
    assert proc.returncode != 0
    r0, r1 = rank_rows(tmp_path)
    # batches 0-3 ended on both ranks with the same counts and the same weights
    assert [r["bad_steps"] for r in r0["rows"]] == [r["bad_steps"] for r in r1["rows"]] == [0, 1, 1, 2]
    assert [r["in_a_row"] for r in r0["rows"]] == [r["in_a_row"] for r in r1["rows"]] == [0, 1, 0, 1]
    w0, w1 = [r["weights"] for r in r0["rows"]], [r["weights"] for r in r1["rows"]]
    assert w0 == w1
    if where == "input":  # a skipped step changes no weight; the good one between did
        assert w0[0] == w0[1] != w0[2] == w0[3]
    # batch 4, the second bad one in a row, stopped both ranks with the same words
    assert r0["error"] and r0["error"] == r1["error"], (r0["error"], r1["error"])
    assert r0["error"].startswith("FloatingPointError: 2 non-finite losses in a row"), r0["error"]
    assert f"last: {ranks} at step" in r0["error"], r0["error"]
    assert r0["batches_seen"] == r1["batches_seen"] == 4
    assert "non-finite losses in a row" in proc.stderr
