"""The layout rules of issue 20, checked statically (the source is parsed, nothing is imported):

* no import cycle among the ``videogen`` modules;
* the packages depend one way, down the layers of ``LAYERS`` (docs/architecture.md draws them);
* the library never imports ``data_recipes``, except the commands that run a recipe;
* no ``.py`` file over 500 lines in ``videogen/`` or ``data_recipes/`` (house rule 9);
* no top-level function or class name defined in two ``videogen`` modules (one meaning per name).

What counts as an import edge for the cycle check: every import statement of a module, inside
functions too (a function's import only defers the cycle to the first call: the issue's
``datamodule -> score_filter -> datamodule`` went through one), except those under
``if TYPE_CHECKING:`` (they never run). ``from a import b`` is an edge to ``a.b`` when that is a
module, else to ``a``; importing ``a.b`` is not counted as an edge to the package ``a`` itself (Python
finds a package already being imported in ``sys.modules``); ``from a import Name`` where package ``a``
loads ``Name`` lazily (a PEP 562 ``__getattr__``) is an edge to the module that branch imports. The
``data_recipes`` check counts every import too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "videogen"
MAX_LINES = 500

# videogen modules that may import data_recipes: the thin commands that run a recipe
RECIPE_COMMANDS = {"videogen.commands.make_synthetic", "videogen.commands.make_shards", "videogen.commands.curate"}

# Names that several modules define on purpose, each for the same protocol; name -> the folder its
# definitions belong in (a definition elsewhere is a second meaning, and fails).
PROTOCOL_NAMES = {
    # every command module: ``add_arguments(parser)`` declares its flags and ``run(args)`` runs it;
    # videogen/cli.py calls them by module, so the name is the protocol.
    "add_arguments": "videogen/commands/",
    "run": "videogen/commands/",
}
# Dunder names (``__getattr__``: a package's lazy attributes, PEP 562) belong to the language.

# The layers of the package, bottom first (docs/architecture.md): a module may import from its own
# layer and the layers below, never from a layer above. A top-level name is a package or module of
# ``videogen`` (``videogen`` itself is its ``__init__``: the version).
LAYERS = (
    ("videogen", "errors", "memory"),                    # the version, the error types, the memory budget
    ("diffusion", "losses", "models"),                   # pure math and pure nn.Modules (models/configurable too)
    ("data",),                                           # shards in, shards out, the streams, the datamodule
    ("pretrained", "pretrained_diffusers", "checkpoint_io"),  # how a stage hands itself on (exports, checkpoints)
    ("encoding", "text_encoding", "captioning"),         # frozen stages applied: latents, caption embeddings, tokens
    ("pipelines",),                                      # inference: video, captions, corpus-wide predict jobs
    ("evaluation",),                                     # metrics, the judge, the scorecard
    ("callbacks",),                                      # what a Trainer run adds around a stage
    ("modules", "parallel"),                             # the stages' training loops; parallelism applied from outside
    ("cli", "commands"),                                 # the `videogen` command: parse, call
)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(), str(path)))
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST):
    """Every import statement under ``node``, in functions too, but not under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from _imports(ast.Module(body=child.orelse, type_ignores=[]))  # the else branch runs
        else:
            yield from _imports(child)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute module names an import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module][0].name != "__init__.py":
            package = package[:-1]  # a module's relative imports start at its package
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def _lazy_exports(package: str, tree: ast.Module) -> dict[str, set[str]]:
    """A package's PEP 562 ``__getattr__``: attribute name -> the modules its branch for that name
    imports (``from videogen.data import VideoDataModule`` runs ``videogen.data.datamodule``)."""
    out: dict[str, set[str]] = defaultdict(set)
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__":
            for branch in ast.walk(fn):
                if isinstance(branch, ast.If):
                    names = {c.value for c in ast.walk(branch.test) if isinstance(c, ast.Constant)
                             and isinstance(c.value, str)}
                    modules = {t for node in branch.body if isinstance(node, (ast.Import, ast.ImportFrom))
                               for t in _targets(package, node)}
                    for attr in names:
                        out[attr] |= modules
    return out


def import_graph() -> dict[str, set[str]]:
    lazy = {name: _lazy_exports(name, tree) for name, (_, tree) in MODULES.items()}
    graph = {}
    for name, (_, tree) in MODULES.items():
        edges = set()
        body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
        for node in _imports(ast.Module(body=body, type_ignores=[])):  # lazy exports: by the name asked for
            edges.update(_targets(name, node))
            if isinstance(node, ast.ImportFrom) and not node.level and node.module in lazy:
                for alias in node.names:  # a name a package loads lazily: its module runs now
                    edges.update(lazy[node.module].get(alias.name, ()))
        graph[name] = {t for t in edges if t in MODULES and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as its chain of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_the_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_videogen_modules():
    graph = import_graph()
    assert graph["videogen.data.stages"], "the graph has edges (the parser found the imports)"
    assert _lazy_exports("videogen.data", MODULES["videogen.data"][1])["VideoDataModule"] == {
        "videogen.data.datamodule"}, "a lazily exported name leads to the module that defines it"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its package {top!r} is in no layer of LAYERS (add it, and to docs/architecture.md)")


def test_packages_depend_one_way_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if layer_of(b) > layer_of(a))
    assert not upward, "imports up the layers (move the code down, or the import up): " + "; ".join(upward)


def test_the_library_imports_data_recipes_only_in_the_recipe_commands():
    found = []
    for name, (path, tree) in MODULES.items():
        if name in RECIPE_COMMANDS:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "data_recipes" or n.startswith("data_recipes.") for n in names):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "videogen imports data_recipes outside the recipe commands: " + ", ".join(found)


def test_no_python_file_over_500_lines():
    long = {}
    for folder in ("videogen", "data_recipes"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                long[str(path.relative_to(ROOT))] = n
    assert not long, f"files over {MAX_LINES} lines (split them): {long}"


def test_no_top_level_name_is_defined_in_two_videogen_modules():
    defined = defaultdict(list)
    for name, (path, tree) in MODULES.items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined[node.name].append(str(path.relative_to(ROOT)))
    twice = {}
    for name, files in sorted(defined.items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        folder = PROTOCOL_NAMES.get(name)
        meanings = [f for f in files if folder is None or not f.startswith(folder)]
        meanings += [folder] if folder and len(meanings) < len(files) else []  # the protocol: one meaning
        if len(meanings) > 1:
            twice[name] = files
    assert not twice, "names defined in more than one module (give each meaning its own name): " + "; ".join(
        f"{name}: {', '.join(files)}" for name, files in twice.items())
