"""The pipeline's wiring: every module a stage script imports (and so can change its outputs) is a
dependency of that stage in dvc.yaml, so editing it reruns the stage, and nothing a stage imports is
left out. ``params`` and ``cli`` are not followed: they read params.yaml and report errors, and what they
hand a stage is values that dvc.yaml tracks as params (their imports are every registry, which the params
check reads). ``options`` and ``registry`` are followed: they build and look up the plug-ins a stage runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
NOT_FOLLOWED = {"trustdd.params", "trustdd.cli"}
# Code a stage runs that it gets through Params instead of importing: ``p.dataset_info`` is the dataset's
# entry, whose ``load()`` reads and decodes the files; ``p.net_spec()`` builds the networks. (Params' other
# accessors hand over plain values: shapes, paths, a method's options and whether it needs experts.)
ACCESSORS = {"dataset_info": "trustdd.data.datasets", "net_spec": "trustdd.nn.networks"}
STAGES = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of a trustdd module or package (None for a name that is not one, e.g. a class)."""
    base = PROJECT / name.replace(".", "/")
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported(path: Path) -> set[str]:
    """The trustdd modules a file imports anywhere in it (function-level imports included), with every
    package on the way (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "trustdd" and module_file(name):
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {n for n in found if module_file(n)}


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and "TYPE_CHECKING" in ast.unparse(test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def through_params(script: Path) -> set[str]:
    """The modules of the objects that ``script`` gets from Params' accessors (``p.net_spec()``, ...)."""
    used = {node.attr for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.Attribute)}
    return {ACCESSORS[a] for a in used & set(ACCESSORS)}


def closure(script: Path) -> set[Path]:
    """Every trustdd file that running ``script`` imports, not following the params/report modules, plus
    what it gets through Params' accessors."""
    seen: set[str] = set()
    todo = list(imported(script) | through_params(script))
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_FOLLOWED:
            continue
        seen.add(name)
        todo.extend(imported(module_file(name)))
    return {module_file(n).relative_to(PROJECT) for n in seen}


def has_code(path: Path) -> bool:
    """False for a package ``__init__`` that holds only its docstring (importing it runs nothing)."""
    body = ast.parse((PROJECT / path).read_text()).body
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


def script_of(stage: str) -> Path:
    """The stage script that ``cmd`` runs: ``python -m stages.NAME`` -> stages/NAME.py."""
    module = STAGES[stage]["cmd"].split()[-1]
    return PROJECT / (module.replace(".", "/") + ".py")


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_runs_its_script_as_a_module_from_the_project_root(stage):
    """``python -m stages.NAME`` puts the working directory first on the import path; ``python stages/NAME.py``
    would put stages/ there, and import an installed (editable) trustdd from another checkout instead."""
    assert STAGES[stage]["cmd"].startswith("python -m stages."), STAGES[stage]["cmd"]
    assert script_of(stage).is_file()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_imports_is_one_of_its_deps(stage):
    deps = [d for d in STAGES[stage].get("deps", [])]
    script = script_of(stage)
    assert str(script.relative_to(PROJECT)) in deps, f"{stage}: its script is not a dependency"
    missing = sorted(str(p) for p in closure(script) if has_code(p) and not covered(p, deps))
    assert not missing, f"{stage} imports {missing} without depending on them in dvc.yaml"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_depends_on_a_module_it_does_not_import(stage):
    """A dependency it does not import would rerun the stage for nothing."""
    script = script_of(stage)
    used = closure(script)
    code_deps = [d for d in STAGES[stage].get("deps", []) if d.startswith("trustdd")]
    unused = [d for d in code_deps if not any(covered(p, [d]) for p in used)]
    assert not unused, f"{stage} depends on {unused} but does not import them"


def test_the_closure_follows_imports_inside_functions_and_packages(tmp_path):
    """The checker itself: a function-level import and a package's own imports are followed."""
    script = tmp_path / "stage.py"
    script.write_text("def main():\n    from trustdd.data.prepared import Prepared\n")
    found = closure(script)
    assert Path("trustdd/data/prepared.py") in found
    assert Path("trustdd/data/images.py") in found  # prepared imports it
    assert Path("trustdd/data/whitening.py") in found  # and images imports this
    assert Path("trustdd/params.py") not in found
    assert Path("trustdd/data/datasets.py") not in found  # prepared imports it for annotations only
