"""A pipeline config cannot write outside its state folder through a step name, and a deeply nested
filter expression is a filter error (one line), not a RecursionError."""

import subprocess
import sys

import pytest
import yaml

from reliability_helpers import ROOT, child_env, make_shards
from videogen.cli import main
from videogen.data.score_filter import FilterError, ScoreFilter

MAX_NESTING = 32  # videogen.data.score_filter.MAX_NESTING


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", "..", ".hidden", "", 7, "x" * 65, "a b"])
def test_a_step_name_that_is_not_a_plain_name_is_refused_and_nothing_runs(tmp_path, capsys, name):
    config = tmp_path / "work" / "p.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"state": str(tmp_path / "work" / "state"), "steps": [
        {"name": name, "run": f"make-synthetic --out {tmp_path}/made --num-samples 2 --seed 0",
         "outputs": [f"{tmp_path}/made/train/dataset.json"]}]}))
    rc = main(["pipeline", "--config", str(config)])
    out = capsys.readouterr().out.strip()
    assert rc == 2 and "\n" not in out and "is not a plain name" in out and f"{name!r}" in out, out
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["p.yaml", "work"]  # no state, no stamp, no step ran


def test_plain_step_names_of_the_shipped_pipelines_are_accepted():
    from videogen.commands.pipeline import load_steps

    for config in sorted((ROOT / "configs" / "pipeline").glob("*.yaml")):
        steps, _, _ = load_steps(config)
        assert steps and all(s.name for s in steps)


DEEP = {
    "parentheses": "(" * 5000 + "motion > 1" + ")" * 5000,
    "not": "not " * 5000 + "duplicate",
    "minus": "-" * 5000 + "1 < motion",
    "unclosed": "(" * 100000,
}


@pytest.mark.parametrize("kind", list(DEEP))
def test_a_deeply_nested_filter_is_a_filter_error(kind):
    with pytest.raises(FilterError, match=f"nested deeper than {MAX_NESTING} levels") as e:
        ScoreFilter(DEEP[kind])
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_nesting_up_to_the_limit_still_parses_and_evaluates():
    from videogen.data import score_filter

    assert score_filter.MAX_NESTING == MAX_NESTING
    f = ScoreFilter("(" * MAX_NESTING + "motion > 1" + ")" * MAX_NESTING, {"motion": "number"})
    assert f({"motion": 2.0}) and not f({"motion": 0.5})
    assert ScoreFilter("not " * MAX_NESTING + "duplicate", {"duplicate": "bool"})({"duplicate": True})  # even: itself


def test_videogen_curate_with_a_deep_filter_is_one_line(tmp_path, capsys):
    shards = make_shards(tmp_path / "data", n=2, shards=1)
    rc = main(["curate", "--data", str(shards), "--out", str(tmp_path / "o"), "--filter", DEEP["parentheses"],
               "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and f"nested deeper than {MAX_NESTING} levels" in err, err[:500]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_videogen_fit_with_a_deep_data_filter_is_one_line(tmp_path):
    shards = make_shards(tmp_path / "data", n=2, shards=1)
    cfg = yaml.safe_load((ROOT / "configs" / "vae" / "quickstart.yaml").read_text())
    cfg["data"]["init_args"].update(train_shards=str(shards), val_shards=None, filter=DEEP["not"])
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "videogen.cli", "fit", "--config", str(path),
                           "--trainer.default_root_dir", str(tmp_path / "run")], capture_output=True, text=True,
                          env=child_env(), cwd=tmp_path, timeout=240)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("videogen: error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert f"nested deeper than {MAX_NESTING} levels" in lines[0] and "RecursionError" not in proc.stderr
