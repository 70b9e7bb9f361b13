"""The sandbox-side modules of the language layer import only the standard library and
sandbox_policy.policy/errors (never RestrictedPython, runtime, loader or engine)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from dynworkers import sandbox_policy

PACKAGE = Path(sandbox_policy.__file__).parent
SANDBOX_SIDE = ["guards.py", "safe_builtins.py", "proxies.py", "namespace.py"]
ALLOWED_LOCAL = {
    "dynworkers.sandbox_policy",
    "dynworkers.sandbox_policy.policy",
    "dynworkers.sandbox_policy.errors",
    "dynworkers.sandbox_policy.guards",
    "dynworkers.sandbox_policy.proxies",
    "dynworkers.sandbox_policy.safe_builtins",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("filename", SANDBOX_SIDE)
def test_sandbox_side_module_imports_only_stdlib_and_policy(filename):
    for name in _imports(PACKAGE / filename):
        top = name.split(".")[0]
        if name.startswith("dynworkers"):
            assert name in ALLOWED_LOCAL, (filename, name)
        else:
            assert top in sys.stdlib_module_names or top == "__future__", (filename, name)
