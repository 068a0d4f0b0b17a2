"""Layers import downward only, and no module imports itself in a circle: checked on the source with ast."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wfkern"

# group -> wfkern groups it may import (besides itself). "_atomic" and "_utils" are leaf utilities.
BASE = {"_atomic", "_utils"}
ALLOWED = {
    "_atomic": set(),
    "_utils": set(),
    "ops": set(),
    "layers": {"ops", "_utils"},
    "patch": {"ops", "layers"} | BASE,
    "data": BASE,
    "models": BASE,
    "train": {"ops", "layers", "patch", "data", "models"} | BASE,
    "unlearn": {"ops", "layers", "patch", "data", "models", "train"} | BASE,
    "metrics": {"ops", "layers", "patch", "data", "models", "train"} | BASE,
    "export": {"ops", "layers", "patch", "data", "models", "train"} | BASE,
    "baselines": {"ops", "layers", "patch", "data", "models", "train", "unlearn", "metrics"} | BASE,
    "reports": {"ops", "layers", "patch", "data", "models", "train", "unlearn", "metrics", "baselines"} | BASE,
}


def _wfkern_imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "wfkern":
                yield parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("group", sorted(ALLOWED))
def test_imports_point_downward(group):
    files = [PACKAGE / f"{group}.py"] if (PACKAGE / f"{group}.py").exists() else sorted((PACKAGE / group).rglob("*.py"))
    bad = []
    for path in files:
        for target in _wfkern_imports(path):
            if target != group and target not in ALLOWED[group]:
                bad.append(f"{path.relative_to(ROOT)} imports wfkern.{target or '(top level)'}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_reference_imports_nothing_from_wfkern():
    assert list(_wfkern_imports(PACKAGE / "ops" / "reference.py")) == []


def _runtime_imports(path: pathlib.Path, modules: set) -> set:
    """Modules of wfkern that ``path`` imports at run time (anywhere but ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
            for alias in node.names:  # "from wfkern.patch import bake": the submodule when there is one
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            found.update(_dynamic_targets(node.args[0], modules))
    return found


def _dynamic_targets(arg: ast.expr, modules: set) -> set:
    """The modules an ``importlib.import_module(arg)`` call can load: a constant name, or every module whose
    name starts with an f-string's constant prefix (``f"wfkern.cli.cmd_{name}"``)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value} & modules
    if isinstance(arg, ast.JoinedStr):
        prefix = ""
        for part in arg.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            prefix += part.value
        return {m for m in modules if prefix and m.startswith(prefix)}
    return set()


def test_dynamic_imports_count_as_imports():
    """The circle check sees what ``importlib.import_module`` loads (the CLI loads its commands by name)."""
    modules = {"wfkern.cli.cmd_a", "wfkern.cli.cmd_b", "wfkern.cli.main"}
    call = ast.parse('importlib.import_module(f"wfkern.cli.cmd_{name}")').body[0].value
    assert _dynamic_targets(call.args[0], modules) == {"wfkern.cli.cmd_a", "wfkern.cli.cmd_b"}
    call = ast.parse('importlib.import_module("wfkern.cli.main")').body[0].value
    assert _dynamic_targets(call.args[0], modules) == {"wfkern.cli.main"}
    main = PACKAGE / "cli" / "main.py"
    all_modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    assert "wfkern.cli.cmd_unlearn" in _runtime_imports(main, all_modules)


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_circles():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _runtime_imports(path, set(paths)) - {name} for name, path in paths.items()}
    state = {}  # name -> "open" while on the DFS stack, "done" after

    def visit(name, trail):
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, trail + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
