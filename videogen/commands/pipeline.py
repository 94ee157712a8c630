"""``videogen pipeline --config configs/pipeline/quickstart.yaml``: the stage chain, as one command.

A pipeline config is an ordered list of steps; each step is one ``videogen`` command line (``fit``
of a stage config, ``encode``, ``recaption``, ``sample``, ...) whose inputs are the files earlier
steps wrote, and names the ``outputs`` that prove it finished. Each step runs in its own process.

- **Skip what is done.** A finished step leaves a stamp (``<state>/<step>.json``) with the hash of
  its resolved command line, the contents of every file that command line names (configs, shard
  manifests, exports) and the hashes of the steps before it. A rerun skips a step whose stamp
  matches and whose outputs exist; a changed config, argument or upstream step makes it (and
  everything after it) run again.
- **Restart where it stopped.** A step that was interrupted has no stamp, so it runs again; a
  ``fit`` step continues from its ``resume`` checkpoint (``--ckpt_path``) when that checkpoint was
  written by the interrupted run of the same inputs (``<state>/.<step>.running.json`` holds the
  hash and start time of a step while it runs). A fit step that runs again because its config or
  an upstream step changed (or ``--from``) trains from the start: a checkpoint of other inputs is
  not resumed.
- ``--from STEP`` reruns that step and the ones after it; ``--only STEP`` runs one step;
  ``--dry-run`` prints what would run and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # also the stamp's file name under the state folder

HELP = "run the stage chain (data -> VAE -> captioner -> recaption -> encode -> DiT -> samples), skipping finished steps"


@dataclass
class Step:
    name: str
    run: list[str]  # the videogen command line, without "videogen"
    outputs: list[str]  # files or folders that exist once the step finished
    resume: str | None = None  # a fit step's last checkpoint: continued from when present
    inputs: list[str] = field(default_factory=list)  # extra files whose contents count in the hash


def load_steps(config: str | Path) -> tuple[list[Step], Path, list[str]]:
    """(steps, state folder, final report paths) from a pipeline YAML; errors name the step and key."""
    import yaml

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config {config}: no such file")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - {"steps", "state", "report"}
    if unknown:
        raise ValueError(f"{config}: unknown top-level keys {sorted(unknown)}; expected steps, state, report")
    steps, names = [], set()
    for i, entry in enumerate(raw.get("steps") or []):
        where = f"{config}: steps[{i}]"
        if not isinstance(entry, dict) or "name" not in entry or "run" not in entry:
            raise ValueError(f"{where}: each step needs a name and a run (the videogen command line)")
        if not isinstance(entry["name"], str) or not STEP_NAME.fullmatch(entry["name"]):
            raise ValueError(f"{where}: step name {entry['name']!r} is not a plain name (letters, digits, - and _, "
                             "at most 64, e.g. encode-train): it names the step's stamp file in the state folder")
        bad = set(entry) - {"name", "run", "outputs", "resume", "inputs"}
        if bad:
            raise ValueError(f"{where} ({entry['name']}): unknown keys {sorted(bad)}")
        run = shlex.split(entry["run"]) if isinstance(entry["run"], str) else [str(a) for a in entry["run"]]
        if entry["name"] in names:
            raise ValueError(f"{where}: step name {entry['name']!r} is used twice")
        if not entry.get("outputs"):
            raise ValueError(f"{where} ({entry['name']}): list the outputs that show the step finished")
        names.add(entry["name"])
        steps.append(Step(entry["name"], run, [str(o) for o in entry["outputs"]], entry.get("resume"),
                          [str(p) for p in entry.get("inputs") or []]))
    if not steps:
        raise ValueError(f"{config}: no steps")
    state = Path(raw.get("state") or "runs/pipeline")
    stamps = {_stamp(state, s): s.name for s in steps}
    for s in steps:  # a stamp written over a step's output would hide the output and fake the stamp
        for o in s.outputs:
            if Path(o) in stamps:
                raise ValueError(f"{config}: step {s.name}'s output {o} is the stamp file of step "
                                 f"{stamps[Path(o)]} ({state}/STEP.json); rename that step or the output")
    return steps, state, [str(p) for p in raw.get("report") or []]


def _file_digest(path: Path, h) -> None:
    """Fold a file's (or a folder's small metadata files') contents into h."""
    if path.is_file():
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.stat().st_size < 64 * 2**20 else str(path.stat().st_size).encode())
    elif path.is_dir():  # a shard set or an export: what describes it, not every tar byte
        for name in ("dataset.json", "manifest.json", "config.yaml", "stats.json"):
            if (path / name).is_file():
                h.update(name.encode())
                h.update((path / name).read_bytes())


def step_hash(step: Step, upstream: str, with_outputs: bool = False) -> str:
    """The resolved command line, the contents of every existing file it names, and the upstream hash;
    ``with_outputs``: also what the step wrote (what the steps after it depend on)."""
    h = hashlib.sha256(upstream.encode())
    h.update(json.dumps(step.run).encode())
    written = [Path(o) for o in step.outputs]
    for arg in step.run + step.inputs:
        token = arg.split("=", 1)[-1]  # --key=path as well as path
        p = Path(token)
        # what the step itself writes (its --out folder) is not an input: it exists only after the run
        if token and not token.startswith("-") and p.exists() and not any(p == o or p in o.parents for o in written):
            _file_digest(p, h)
    for o in written if with_outputs else []:
        _file_digest(o, h)
    return h.hexdigest()


def _stamp(state: Path, step: Step) -> Path:
    return state / f"{step.name}.json"


def is_done(state: Path, step: Step, digest: str) -> bool:
    stamp = _stamp(state, step)
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return recorded.get("hash") == digest and all(Path(o).exists() for o in step.outputs)


def _running(state: Path, step: Step) -> Path:
    return state / f".{step.name}.running.json"  # a dot: never a step's stamp (step names start with a letter)


def resumable(state: Path, step: Step, digest: str) -> bool:
    """Whether the step's ``resume`` checkpoint was written by an interrupted run of these same inputs:
    the running record has this hash and the checkpoint is newer than that run's start."""
    if not step.resume or step.run[:1] != ["fit"] or not Path(step.resume).is_file():
        return False
    try:
        record = json.loads(_running(state, step).read_text())
        return record.get("hash") == digest and Path(step.resume).stat().st_mtime >= float(record["started"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def command_line(step: Step, resume: bool = True) -> list[str]:
    argv = [sys.executable, "-m", "videogen.cli", *step.run]
    if resume and step.resume and step.run[:1] == ["fit"] and Path(step.resume).is_file():
        argv += [f"--ckpt_path={step.resume}"]
    return argv


def run_pipeline(config: str | Path, only: str | None = None, start: str | None = None,
                 dry_run: bool = False) -> int:
    steps, state, report = load_steps(config)
    names = [s.name for s in steps]
    for flag, value in (("--only", only), ("--from", start)):
        if value is not None and value not in names:
            raise ValueError(f"{flag} {value}: no such step; the steps are {', '.join(names)}")
    state.mkdir(parents=True, exist_ok=True)
    upstream, forced = "", False
    began = time.perf_counter()
    for step in steps:
        digest = step_hash(step, upstream)
        forced = forced or step.name == start
        selected = only is None or step.name == only
        if not selected:
            upstream = step_hash(step, upstream, with_outputs=True)
            continue
        if not forced and only is None and is_done(state, step, digest):
            print(f"[pipeline] {step.name}: done (same config and inputs), skipped", flush=True)
            upstream = step_hash(step, upstream, with_outputs=True)
            continue
        resuming = not forced and resumable(state, step, digest)
        argv = command_line(step, resume=resuming)
        if step.resume and step.run[:1] == ["fit"] and Path(step.resume).is_file() and not resuming:
            print(f"[pipeline] {step.name}: {step.resume} is not from an interrupted run of these inputs: "
                  "training from the start", flush=True)
        print(f"[pipeline] {step.name}: {'resuming: ' if resuming else ''}videogen {shlex.join(argv[3:])}", flush=True)
        if dry_run:
            upstream = digest
            continue
        stamp = _stamp(state, step)
        stamp.unlink(missing_ok=True)  # a step that runs again is not done until it finishes
        if not resuming:  # the checkpoints this run writes are the ones a rerun of it may resume
            _running(state, step).write_text(json.dumps({"hash": digest, "started": time.time()}))
        t0 = time.perf_counter()
        code = subprocess.call(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if code != 0:
            print(f"[pipeline] {step.name} failed (exit {code}); fix it and rerun: finished steps are kept", flush=True)
            return code
        missing = [o for o in step.outputs if not Path(o).exists()]
        if missing:
            print(f"[pipeline] {step.name} exited 0 but did not write {missing}", flush=True)
            return 1
        stamp.write_text(json.dumps({"hash": digest, "seconds": round(time.perf_counter() - t0, 1),
                                     "command": step.run, "outputs": step.outputs}, indent=2))
        _running(state, step).unlink(missing_ok=True)
        print(f"[pipeline] {step.name}: finished in {time.perf_counter() - t0:.0f} s", flush=True)
        upstream = step_hash(step, upstream, with_outputs=True)
    if not dry_run:
        print(f"[pipeline] all steps done in {time.perf_counter() - began:.0f} s")
        for path in report:
            print(f"[pipeline] output: {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="pipeline YAML, e.g. configs/pipeline/quickstart.yaml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--from", dest="start", metavar="STEP", help="rerun this step and every step after it")
    group.add_argument("--only", metavar="STEP", help="run this step alone (its inputs must exist)")
    parser.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")


def run(args: argparse.Namespace) -> int:
    try:
        return run_pipeline(args.config, only=args.only, start=args.start, dry_run=args.dry_run)
    except (FileNotFoundError, ValueError) as e:
        print(f"videogen pipeline: {e}")
        return 2
