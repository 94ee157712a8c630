"""videogen pipeline: steps run in order in their own processes, finished steps are skipped, a changed
config reruns the step and everything after it, a failed run restarts at the failed step, --only and
--from select steps, and a fit step resumes from its checkpoint."""

import io
import json
from pathlib import Path

import pytest

from videogen.commands.pipeline import Step, command_line, load_steps, run_pipeline


def write_config(path, tmp, third="make-synthetic --out {tmp}/c --num-samples 2 --seed 2"):
    path.write_text(f"""
state: {tmp}/state
report: [{tmp}/c]
steps:
  - name: a
    run: make-synthetic --out {tmp}/a --num-samples 2 --seed 0
    outputs: [{tmp}/a/train/dataset.json]
  - name: b
    run: make-synthetic --out {tmp}/b --num-samples 2 --seed 1
    outputs: [{tmp}/b/train/dataset.json]
  - name: c
    run: {third.format(tmp=tmp)}
    outputs: [{tmp}/c/train/dataset.json]
""")
    return path


def ran(capsys):
    out = capsys.readouterr().out
    return [line.split()[1].rstrip(":") for line in out.splitlines()
            if line.startswith("[pipeline]") and "skipped" not in line and ("videogen" in line)]


@pytest.mark.slow
def test_pipeline_skips_reruns_and_restarts(tmp_path, capsys):
    config = write_config(tmp_path / "p.yaml", tmp_path,
                          third="make-shards --src {tmp}/missing --out {tmp}/c")  # fails: no such folder
    assert run_pipeline(config) != 0
    assert ran(capsys) == ["a", "b", "c"]
    assert (tmp_path / "state" / "a.json").is_file() and not (tmp_path / "state" / "c.json").exists()

    write_config(config, tmp_path)  # fixed: a and b are kept, c runs
    assert run_pipeline(config) == 0
    assert ran(capsys) == ["c"]
    stamp = json.loads((tmp_path / "state" / "c.json").read_text())
    assert stamp["outputs"] == [f"{tmp_path}/c/train/dataset.json"] and stamp["seconds"] > 0

    assert run_pipeline(config) == 0 and ran(capsys) == []  # all done: nothing runs

    text = config.read_text().replace("--seed 1", "--seed 5")  # b's arguments change: b and c rerun
    config.write_text(text)
    assert run_pipeline(config) == 0 and ran(capsys) == ["b", "c"]

    assert run_pipeline(config, only="b") == 0 and ran(capsys) == ["b"]
    assert run_pipeline(config, start="b") == 0 and ran(capsys) == ["b", "c"]
    assert run_pipeline(config, dry_run=True) == 0 and ran(capsys) == []


def test_a_changed_input_file_reruns_the_step(tmp_path, capsys):
    cfg = tmp_path / "stage.yaml"
    cfg.write_text("x: 1\n")
    out = tmp_path / "out.txt"
    steps = [Step("s", ["fit", "--config", str(cfg)], [str(out)])]
    from videogen.commands.pipeline import is_done, step_hash

    before = step_hash(steps[0], "")
    cfg.write_text("x: 2\n")
    assert step_hash(steps[0], "") != before  # the config's contents, not only its name, are hashed
    assert step_hash(steps[0], "up") != step_hash(steps[0], "")  # and what came before it
    out_dir = tmp_path / "written"
    writer = Step("w", ["encode", "--out", str(out_dir)], [str(out_dir / "dataset.json")])
    before = step_hash(writer, "")
    out_dir.mkdir()
    (out_dir / "dataset.json").write_text("{}")
    assert step_hash(writer, "") == before  # the step's own output folder is not one of its inputs
    assert step_hash(writer, "", with_outputs=True) != before  # but the steps after it depend on it
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "s.json").write_text(json.dumps({"hash": step_hash(steps[0], "")}))
    assert not is_done(tmp_path / "state", steps[0], step_hash(steps[0], ""))  # output missing
    out.write_text("done")
    assert is_done(tmp_path / "state", steps[0], step_hash(steps[0], ""))


def test_fit_step_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    step = Step("vae", ["fit", "--config", "c.yaml"], ["x"], resume=str(ckpt))
    assert not any(a.startswith("--ckpt_path") for a in command_line(step))
    ckpt.write_bytes(b"x")
    assert command_line(step)[-1] == f"--ckpt_path={ckpt}"
    assert not any(a.startswith("--ckpt_path") for a in command_line(step, resume=False))


def test_only_the_interrupted_run_of_the_same_inputs_is_resumable(tmp_path):
    import os
    import time

    from videogen.commands.pipeline import resumable

    state, ckpt = tmp_path / "state", tmp_path / "last.ckpt"
    state.mkdir()
    step = Step("vae", ["fit", "--config", "c.yaml"], ["x"], resume=str(ckpt))
    started = time.time() - 60
    (state / ".vae.running.json").write_text(json.dumps({"hash": "h", "started": started}))
    assert not resumable(state, step, "h")  # no checkpoint yet
    ckpt.write_bytes(b"x")
    assert resumable(state, step, "h")
    assert not resumable(state, step, "other")  # the config or an upstream step changed since
    os.utime(ckpt, (started - 10, started - 10))
    assert not resumable(state, step, "h")  # older than the run: an earlier run's checkpoint
    os.utime(ckpt, None)
    (state / ".vae.running.json").write_text("{not json")
    assert not resumable(state, step, "h")
    assert not resumable(state, Step("e", ["encode"], ["x"], resume=str(ckpt)), "h")  # only fit steps resume


def test_a_rerun_resumes_an_interrupted_fit_and_restarts_a_changed_one(tmp_path, monkeypatch, capsys):
    """The pipeline's own bookkeeping, with the fit process faked: it saves a checkpoint, then fails or
    writes its output."""
    from videogen.commands import pipeline

    cfg, out, ckpt = tmp_path / "stage.yaml", tmp_path / "export.json", tmp_path / "last.ckpt"
    cfg.write_text("max_steps: 10\n")
    config = tmp_path / "p.yaml"
    config.write_text(f"state: {tmp_path}/state\nsteps:\n  - {{name: vae, run: fit --config {cfg}, "
                      f"outputs: [{out}], resume: {ckpt}}}\n")
    calls, codes = [], [1, 0, 0]

    class FakeFit:
        def __init__(self, argv, env, **kw):
            calls.append([a for a in argv[3:] if a.startswith("--ckpt_path")])
            ckpt.write_bytes(b"saved")
            self.returncode = codes.pop(0)
            if self.returncode == 0:
                out.write_text("{}")

        def poll(self):
            return self.returncode

    monkeypatch.setattr(pipeline.subprocess, "Popen", FakeFit)
    assert run_pipeline(config) == 1 and calls == [[]]  # a fresh run, interrupted after a save
    assert run_pipeline(config) == 0 and calls[-1] == [f"--ckpt_path={ckpt}"]  # the same inputs: resumed
    assert not (tmp_path / "state" / ".vae.running.json").exists()  # finished: nothing left to resume
    assert run_pipeline(config) == 0 and len(calls) == 2  # done: skipped
    cfg.write_text("max_steps: 20\n")  # a changed budget: a run of other inputs, from the start
    capsys.readouterr()
    assert run_pipeline(config) == 0 and calls[-1] == []
    assert f"[pipeline] vae: {ckpt} is not from an interrupted run of these inputs: training from the start" \
        in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("steps: []", "no steps"),
    ("steps:\n  - {name: a}", "needs a name and a run"),
    ("steps:\n  - {name: a, run: x}", "list the outputs"),
    ("steps:\n  - {name: a, run: x, outputs: [o], bogus: 1}", "unknown keys"),
    ("steps:\n  - {name: a, run: x, outputs: [o]}\n  - {name: a, run: y, outputs: [p]}", "used twice"),
    ("stepz: []", "unknown top-level keys"),
    ("steps:\n  - {name: a, run: x, outputs: [o], beside: a}", "must name the step just before it"),
    ("steps:\n  - {name: a, run: x, outputs: [o]}\n  - {name: b, run: y, outputs: [p]}\n"
     "  - {name: c, run: z, outputs: [q], beside: a}", r"beside: 'a' must name the step just before it \(b\)"),
    ("steps:\n  - {name: a, run: x, outputs: [o], threads: 0}", "threads: 0 is not a whole number from 1 to 1024"),
    ("steps:\n  - {name: a, run: x, outputs: [o], threads: two}", "is not a whole number"),
    ("state: s\nsteps:\n  - {name: card, run: x, outputs: [s/card.json]}",  # the stamp would overwrite it
     r"step card's output s/card.json is the stamp file of step card \(s/STEP.json\); rename that step or the output"),
])
def test_bad_pipeline_configs_name_the_problem(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_steps(path)


def test_unknown_step_and_missing_config(tmp_path, capsys):
    from videogen.cli import main

    assert main(["pipeline", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().out
    config = write_config(tmp_path / "p.yaml", tmp_path)
    assert main(["pipeline", "--config", str(config), "--only", "zzz"]) == 2
    assert "no such step; the steps are a, b, c" in capsys.readouterr().out


def test_the_quickstart_pipeline_config_is_valid():
    steps, state, report = load_steps("configs/pipeline/quickstart.yaml")
    names = [s.name for s in steps]
    assert names.index("vae") < names.index("encode-train") < names.index("dit") < names.index("samples")
    assert names.index("captioner") < names.index("recaption-train") < names.index("encode-train")
    assert names.index("captioner-data") < names.index("captioner")  # its own clips, not the set it relabels
    assert report == ["runs/pipeline/quickstart/samples", "runs/pipeline/quickstart/scorecard.json"]
    assert all(s.resume for s in steps if s.run[0] == "fit")
    last = steps[-1]  # the scorecard ends the chain, on issue 15's settings, and fails make quickstart below target
    assert last.run[0] == "scorecard" and last.outputs == ["runs/pipeline/quickstart/scorecard.json"]
    assert "--no-fail" not in last.run and "--num-prompts 60 --steps 30 --cfg 4 --shape 9 64 96" in " ".join(last.run)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_quickstart_chain_runs_end_to_end_in_miniature(tmp_path):
    """configs/pipeline/quickstart.yaml as shipped, with every fit cut to a few steps and fewer clips:
    each stage takes the previous stage's files and the chain ends with playable sample mp4s."""
    import os
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "configs").symlink_to(repo / "configs")
    cfg = yaml.safe_load((repo / "configs/pipeline/quickstart.yaml").read_text())
    short = {"fit": ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
                     "--trainer.logger=false", "--trainer.enable_progress_bar=false"],
             "make-synthetic": [], "sample": ["--steps", "2"],
             "scorecard": ["--steps", "2", "--no-fail"]}  # a 2-step model is far below target: report only
    for step in cfg["steps"]:
        run = shlex.split(step["run"])
        if run[0] == "make-synthetic":
            run[run.index("--num-samples") + 1] = {"data": "40", "captioner-data": "200"}.get(step["name"], "4")
        step["run"] = shlex.join(run + short.get(run[0], []))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "-m", "videogen.cli", "pipeline", "--config", str(config)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[pipeline] output: runs/pipeline/quickstart/samples" in done.stdout
    samples = sorted((tmp_path / "runs/pipeline/quickstart/samples").glob("*.mp4"))
    assert len(samples) == 4
    card = json.loads((tmp_path / "runs/pipeline/quickstart/scorecard.json").read_text())
    assert card["passed"] is False and card["settings"]["num_prompts"] == 60 and card["details"]["t2v"]["n"] == 4
    from videogen.data.decode import PyAVDecoder

    info = PyAVDecoder().probe(samples[0].read_bytes())
    assert (info.num_frames, info.height, info.width) == (9, 64, 96)
    recaptioned = (tmp_path / "data/synthetic-recaptioned/train")
    assert json.loads((recaptioned / "dataset.json").read_text())["num_samples"] > 0
    stats = json.loads((tmp_path / "runs/dit/quickstart/export/stats.json").read_text())
    vae_manifest = json.loads((tmp_path / "runs/vae/quickstart/export/manifest.json").read_text())
    assert stats["vae"]["weights_sha256"] == vae_manifest["weights_sha256"]  # the DiT was trained on this VAE
    dit = yaml.safe_load((repo / "configs/dit/quickstart.yaml").read_text())["model"]["init_args"]
    for split in ("train", "val"):  # the cache holds the caption embeddings the DiT reads: its fit loads no MiniLM
        text = json.loads((tmp_path / f"data/synthetic-latents/{split}/dataset.json").read_text())["created_by"]
        assert (text["text_encoder"]["layer"], text["text_encoder"]["max_length"]) == (dit["text_layer"],
                                                                                     dit["text_max_length"])
    again = subprocess.run([sys.executable, "-m", "videogen.cli", "pipeline", "--config", str(config)], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("skipped") == len(cfg["steps"])


def test_a_step_beside_the_one_before_starts_with_it_and_a_failure_keeps_the_other(tmp_path, monkeypatch, capsys):
    """``beside``: both processes start before either is waited for, with their own thread counts; the
    next step starts only when both finished; a failed one is rerun alone, its partner's work is kept."""
    from videogen.commands import pipeline

    config = tmp_path / "p.yaml"
    config.write_text(f"state: {tmp_path}/state\nsteps:\n"
                      f"  - {{name: vae, run: fit --config {tmp_path}/vae.yaml, outputs: [{tmp_path}/vae], threads: 1}}\n"
                      f"  - {{name: cap, run: fit --config {tmp_path}/cap.yaml, outputs: [{tmp_path}/cap], beside: vae, threads: 1}}\n"
                      f"  - {{name: dit, run: fit --config {tmp_path}/dit.yaml, outputs: [{tmp_path}/dit]}}\n")
    for name in ("vae", "cap", "dit"):
        (tmp_path / f"{name}.yaml").write_text("max_steps: 10\n")
    events, fail = [], {"cap"}

    class FakeFit:
        def __init__(self, argv, env, **kw):
            self.name = Path(argv[argv.index("--config") + 1]).stem
            events.append(("start", self.name, env.get("OMP_NUM_THREADS")))
            self.polls, self.returncode = 0, None
            self.stdout = io.BytesIO(f"{self.name} training\n".encode()) if kw.get("stdout") else None

        def poll(self):
            self.polls += 1
            if self.polls < 3:  # still running for a while
                return None
            if self.returncode is None:
                self.returncode = 1 if self.name in fail else 0
                if self.returncode == 0:
                    (tmp_path / self.name).write_text("done")
                events.append(("end", self.name))
            return self.returncode

    monkeypatch.setattr(pipeline.subprocess, "Popen", FakeFit)
    monkeypatch.setattr(pipeline.time, "sleep", lambda s: None)
    assert run_pipeline(config) == 1
    assert events[:2] == [("start", "vae", "1"), ("start", "cap", "1")]  # together, one thread each
    assert {e[1] for e in events[2:]} == {"vae", "cap"} and not any(e[1] == "dit" for e in events)
    assert (tmp_path / "state" / "vae.json").is_file() and not (tmp_path / "state" / "cap.json").exists()
    out = capsys.readouterr().out
    assert "[pipeline] cap failed (exit 1)" in out and "[vae] vae training" in out and "[cap] cap training" in out

    events.clear()
    fail.clear()
    assert run_pipeline(config) == 0
    assert [e[:2] for e in events] == [("start", "cap"), ("end", "cap"), ("start", "dit"), ("end", "dit")]
    assert events[2][2] is None  # dit: torch's own thread count

    events.clear()
    assert run_pipeline(config) == 0 and events == []  # all done
    (tmp_path / "cap.yaml").write_text("changed")  # cap's config changed: cap and what follows it, not vae
    assert run_pipeline(config) == 0 and [e[1] for e in events if e[0] == "start"] == ["cap", "dit"]


@pytest.mark.slow
def test_steps_side_by_side_run_as_real_processes_with_prefixed_output(tmp_path, capfd):
    config = tmp_path / "p.yaml"
    config.write_text(f"""
state: {tmp_path}/state
steps:
  - name: a
    run: make-synthetic --out {tmp_path}/a --num-samples 2 --seed 0
    outputs: [{tmp_path}/a/train/dataset.json]
    threads: 1
  - name: b
    run: make-synthetic --out {tmp_path}/b --num-samples 2 --seed 1
    outputs: [{tmp_path}/b/train/dataset.json]
    beside: a
""")
    assert run_pipeline(config) == 0
    out = capfd.readouterr().out
    assert any(line.startswith("[a] ") for line in out.splitlines())
    assert any(line.startswith("[b] ") for line in out.splitlines())
    assert "[pipeline] a: finished in" in out and "[pipeline] b: finished in" in out
    assert "(1 thread)" in out
