"""The package's shape, checked: the limits the restructure set, so that they hold as code is added.

The layer contract itself (which subpackage may import which) is import-linter's, in
pyproject.toml; `make test` runs `lint-imports` before pytest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "platform" / "bioner"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def _rel(p: Path) -> str:
    return str(p.relative_to(PACKAGE))


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_FILE_LINES


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_function_is_over_60_lines(path):
    """Counted from the first line of the body (docstring included): the signature is left out, since
    the formatter puts each parameter of a long one on its own line (a typer command's options)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{f.name} ({f.end_lineno - f.body[0].lineno + 1} lines)"
        for f in _functions(tree)
        if f.end_lineno - f.body[0].lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_in_package_imports_sit_at_the_top_of_modules(path):
    """Lazy imports are for heavy third-party packages only (start-up time); never for bioner's own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = [
        f"line {n.lineno}"
        for f in _functions(tree)
        for n in ast.walk(f)
        if (isinstance(n, ast.ImportFrom) and (n.level > 0 or (n.module or "").startswith("bioner")))
        or (isinstance(n, ast.Import) and any(a.name.startswith("bioner") for a in n.names))
    ]
    assert not inner


def test_lazy_third_party_imports_say_why():
    """A third-party import inside a function is marked `# lazy (platform/README.md)` on its line, or
    the function's first lazy import is: the reason is stated once, in platform/README.md."""
    missing = []
    for path in MODULES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for f in _functions(ast.parse("\n".join(lines))):
            imports = [n for n in f.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            if imports and not any("lazy" in lines[n.lineno - 1] or "lazy" in lines[n.lineno - 2] for n in imports):
                missing.append(f"{_rel(path)}:{imports[0].lineno} ({f.name})")
    assert not missing
