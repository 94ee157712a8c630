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
- **Side by side.** A step with ``beside: STEP`` (the step just before it; neither reads the other's
  outputs) starts at the same time as that step, and the pipeline goes on when both finished; its
  hash does not depend on that step. ``threads: N`` runs a step's process with N torch threads
  (``OMP_NUM_THREADS``): two 1-thread fits side by side do more steps per second on 2 cores than
  the same fits one after the other at 2 threads each, and their results do not depend on how many
  cores the machine has. The output of steps running together is prefixed with their names.
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
import threading
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
    beside: str | None = None  # the step before it, which it runs at the same time as
    threads: int | None = None  # torch threads of the step's process (None: torch's default)


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
        bad = set(entry) - {"name", "run", "outputs", "resume", "inputs", "beside", "threads"}
        if bad:
            raise ValueError(f"{where} ({entry['name']}): unknown keys {sorted(bad)}")
        run = shlex.split(entry["run"]) if isinstance(entry["run"], str) else [str(a) for a in entry["run"]]
        if entry["name"] in names:
            raise ValueError(f"{where}: step name {entry['name']!r} is used twice")
        if not entry.get("outputs"):
            raise ValueError(f"{where} ({entry['name']}): list the outputs that show the step finished")
        beside, threads = entry.get("beside"), entry.get("threads")
        if beside is not None and (not steps or beside != steps[-1].name):
            raise ValueError(f"{where} ({entry['name']}): beside: {beside!r} must name the step just before it"
                             + (f" ({steps[-1].name})" if steps else ""))
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
            raise ValueError(f"{where} ({entry['name']}): threads: {threads!r} is not a whole number from 1 to 1024")
        names.add(entry["name"])
        steps.append(Step(entry["name"], run, [str(o) for o in entry["outputs"]], entry.get("resume"),
                          [str(p) for p in entry.get("inputs") or []], beside, threads))
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


def groups(steps: list[Step]) -> list[list[Step]]:
    """The steps in the order they start: a step ``beside`` the one before it joins that step's group."""
    out: list[list[Step]] = []
    for step in steps:
        if step.beside and out:
            out[-1].append(step)
        else:
            out.append([step])
    return out


def _relay(stream, prefix: str) -> None:
    """Copy a child's output to ours line by line, each line prefixed with its step's name."""
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{prefix}{line.decode(errors='replace')}")
        sys.stdout.flush()
    stream.close()


def _start(step: Step, argv: list[str], together: bool) -> tuple[subprocess.Popen, threading.Thread | None]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if step.threads:
        env["OMP_NUM_THREADS"] = str(step.threads)
    if not together:
        return subprocess.Popen(argv, env=env), None
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    relay = threading.Thread(target=_relay, args=(child.stdout, f"[{step.name}] "), daemon=True)
    relay.start()
    return child, relay


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
    for group in groups(steps):
        launch = []  # (step, digest, argv, resuming) of the group's steps that run now
        for step in group:  # each hashed against what came before the group: they do not read each other
            digest = step_hash(step, upstream)
            forced = forced or step.name == start
            if only is not None and step.name != only:
                continue
            if not forced and only is None and is_done(state, step, digest):
                print(f"[pipeline] {step.name}: done (same config and inputs), skipped", flush=True)
                continue
            resuming = not forced and resumable(state, step, digest)
            argv = command_line(step, resume=resuming)
            if step.resume and step.run[:1] == ["fit"] and Path(step.resume).is_file() and not resuming:
                print(f"[pipeline] {step.name}: {step.resume} is not from an interrupted run of these inputs: "
                      "training from the start", flush=True)
            threads = f" ({step.threads} thread{'s' * (step.threads > 1)})" if step.threads else ""
            print(f"[pipeline] {step.name}: {'resuming: ' if resuming else ''}videogen {shlex.join(argv[3:])}"
                  f"{threads}", flush=True)
            launch.append((step, digest, argv, resuming))
        if not dry_run:
            code = _run_together(state, launch)
            if code != 0:
                return code
        would_run = {step.name for step, *_ in launch} if dry_run else set()
        for step in group:  # what the steps after the group depend on (a step that would run: its command line)
            upstream = step_hash(step, upstream, with_outputs=step.name not in would_run)
    if not dry_run:
        print(f"[pipeline] all steps done in {time.perf_counter() - began:.0f} s")
        for path in report:
            print(f"[pipeline] output: {path}")
    return 0


def _run_together(state: Path, launch: list[tuple[Step, str, list[str], bool]]) -> int:
    """Run the steps at the same time, wait for all of them, stamp those that finished; the first
    failure's exit status (a failed step does not stop the others: their work is kept)."""
    running = []
    for step, digest, argv, resuming in launch:
        _stamp(state, step).unlink(missing_ok=True)  # a step that runs again is not done until it finishes
        if not resuming:  # the checkpoints this run writes are the ones a rerun of it may resume
            _running(state, step).write_text(json.dumps({"hash": digest, "started": time.time()}))
        running.append((step, digest, time.perf_counter(), *_start(step, argv, together=len(launch) > 1)))
    failed, pending = 0, running
    while pending:
        done = [r for r in pending if r[3].poll() is not None]
        pending = [r for r in pending if r not in done]
        for step, digest, t0, child, relay in done:  # in the order they finished
            seconds = time.perf_counter() - t0
            if relay is not None:
                relay.join()
            if child.returncode != 0:
                print(f"[pipeline] {step.name} failed (exit {child.returncode}); fix it and rerun: finished steps "
                      "are kept", flush=True)
                failed = failed or child.returncode
                continue
            missing = [o for o in step.outputs if not Path(o).exists()]
            if missing:
                print(f"[pipeline] {step.name} exited 0 but did not write {missing}", flush=True)
                failed = failed or 1
                continue
            _stamp(state, step).write_text(json.dumps({"hash": digest, "seconds": round(seconds, 1),
                                                       "command": step.run, "outputs": step.outputs}, indent=2))
            _running(state, step).unlink(missing_ok=True)
            print(f"[pipeline] {step.name}: finished in {seconds:.0f} s", flush=True)
        if pending:
            time.sleep(0.2)
    return failed


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
