"""The import graph: no circle, and no module imports one above its layer (utils.LAYERS, written once).

Every import is read from the source with ast, at module level and inside functions, in utils/, models.py,
eval.py, tools/ and benchmarks/. An edge goes to the module the import names (`from utils import probes` is
utils.probes; `from utils.submission.course import X` is utils.submission.course). utils/submission/grader_replica/
is left out: it is the course's side, run in a folder of its own, where `import utils` is the course's utils.py.
"""
import ast
from pathlib import Path

import pytest

import utils

ROOT = Path(__file__).resolve().parents[1]
REPLICA = ROOT / "utils" / "submission" / "grader_replica"


def module_name(path: Path) -> str:
    """utils/submission/check.py -> utils.submission.check; tools/demo.py -> tools.demo; models.py -> models."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> list[Path]:
    files = [ROOT / "models.py", ROOT / "eval.py", *sorted((ROOT / "utils").rglob("*.py")),
             *sorted((ROOT / "tools").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    return [f for f in files if REPLICA not in f.parents]


def imports_of(path: Path, known: set[str], source: str | None = None) -> list[tuple[str, int]]:
    """(project module imported, line) for every import in the file (or in `source`, read as that file) that
    names a module of the project."""
    here = module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8") if source is None else source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:      # relative: resolve against this module's package
                base = here.split(".")[:-node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names]   # a submodule, or a name in `module`
        else:
            continue
        targets = []
        for name in names:
            if here.startswith("benchmarks.") and name.split(".")[0] == "common":
                name = "benchmarks." + name           # benchmarks/*.py import their sibling as `common`
            # the longest known module the name starts with: `utils.probes.knn` -> utils.probes
            target = max((m for m in known if name == m or name.startswith(m + ".")), key=len, default=None)
            if target and target != here and target not in targets:
                targets.append(target)
        found += [(target, node.lineno) for target in targets]
    return found


def import_graph() -> dict[str, list[tuple[str, int]]]:
    files = project_files()
    known = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, known) for f in files}


def layer_of(module: str) -> float | None:
    """The layer of a module of the kit (utils.LAYERS); entry points (eval, tools, benchmarks) are above all;
    the utils package itself (its __init__, which imports nothing of the kit eagerly) is None."""
    if module == "models":
        return utils.LAYERS["models"]
    parts = module.split(".")
    if parts[0] == "utils" and len(parts) > 1:
        return utils.LAYERS[parts[1]]
    if parts[0] in ("eval", "tools", "benchmarks"):
        return float("inf")
    return None


def upward_imports(graph) -> list[str]:
    """"a (layer n) imports b (layer m > n), line L" for every import against the layers; entry points may not be
    imported by the kit either (their layer is infinite)."""
    found = []
    for module, edges in graph.items():
        mine = layer_of(module)
        for target, line in edges:
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{module} (layer {mine}) imports {target} (layer {theirs}), line {line}")
    return found


def circles(graph) -> list[list[str]]:
    """Every circle of the graph, once each (depth-first search; each circle as the path that closes it)."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target, _ in graph.get(node, []):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_module_of_the_package_has_a_layer():
    modules = {p.stem for p in (ROOT / "utils").glob("*.py") if p.stem != "__init__"} | {"submission"}
    assert modules == set(utils.LAYERS) - {"models"}, modules ^ (set(utils.LAYERS) - {"models"})


def test_no_import_goes_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_the_imports_form_no_circle():
    assert circles(import_graph()) == []


def test_the_checks_would_catch_an_upward_import_and_a_circle():
    """One of the upward imports that once held twelve modules in a circle (checkpoint -> features, inside a
    function, for missing_statistics_message), put back into today's graph."""
    graph = import_graph()
    assert ("utils.checkpoint", 1) not in graph["utils.features"]     # today: features -> checkpoint only
    graph["utils.checkpoint"] = graph["utils.checkpoint"] + [("utils.features", 122)]
    assert upward_imports(graph) == ["utils.checkpoint (layer 1) imports utils.features (layer 2), line 122"]
    assert ["utils.checkpoint", "utils.features", "utils.checkpoint"] in circles(graph)


def test_imports_inside_functions_are_read():
    """An import inside a function counts as much as one at the top."""
    known = {module_name(f) for f in project_files()}
    source = "import os\n\ndef f():\n    from utils.train import train\n    from . import data\n"
    assert imports_of(ROOT / "utils" / "checkpoint.py", known, source) == [("utils.train", 4), ("utils.data", 5)]


@pytest.mark.parametrize("module", ["utils.checkpoint", "utils.probes", "utils.features", "utils.ema"])
def test_the_low_layers_need_nothing_of_the_engine_or_the_hand_in(module):
    """The modules the circle ran through: none reaches the training engine or the submission package."""
    targets = {target for target, _ in import_graph()[module]}
    assert not targets & {"utils.train", "utils.memory", "utils.submission"}, targets
