"""Layers import downward only (DESIGN.md): checked on the source with ast."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wfkern"

# group -> wfkern groups it may import (besides itself). "_atomic" is a leaf utility.
BASE = {"_atomic"}
ALLOWED = {
    "ops": set(),
    "layers": {"ops"},
    "patch": {"ops", "layers"} | BASE,
    "data": BASE,
    "models": BASE,
    "train": {"ops", "layers", "patch", "data", "models"} | BASE,
    "unlearn": {"ops", "layers", "patch", "data", "models", "train"} | BASE,
    "metrics": {"ops", "layers", "patch", "data", "models", "train"} | BASE,
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
