"""Every third-party package the daemon imports is declared in pyproject.toml (the platform
issue found `oslash` imported but undeclared)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWN = {"sidecar", "protocol", "tests", "tools", "bench"}


def _imported_top_levels(roots: list[Path]) -> set[str]:
    names: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_imported_package_is_declared() -> None:
    imported = _imported_top_levels([REPO / "sidecar", REPO / "protocol"])
    third_party = {n for n in imported if n not in sys.stdlib_module_names and n not in OWN and n != "__future__"}
    providers = packages_distributions()
    declared = _declared()
    undeclared = {}
    for name in sorted(third_party):
        dists = {d.lower().replace("_", "-") for d in providers.get(name, [])}
        if not dists & declared:
            undeclared[name] = sorted(dists) or ["(not installed)"]
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
