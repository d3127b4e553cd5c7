"""Imports point one way: components import only ``shared``; ``shared`` imports no component.

Read from the source with :mod:`ast`, so a violation fails here whether or not any test runs
the offending line. A reference counts as an import when it is an ``import`` statement, or a
string that names another component's module (``importlib.import_module("writer.sink")``, a
table of such names): loading a module by name is still a dependency on it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("collectors", "detector", "aggregator", "writer")
_ANY_COMPONENT = "(?:" + "|".join(COMPONENTS) + ")"
MODULE_NAME = re.compile(_ANY_COMPONENT + r"(?:\.[A-Za-z_]\w*)+$")
F_STRING_PREFIX = re.compile(_ANY_COMPONENT + r"\.")

# Modules of ``shared`` that name components by string, inside functions, and why.
NAMES_COMPONENTS = {
    # The lazy subcommand table: the designed way for the root command to reach them.
    "shared/cli.py",
    # ``liq bench`` drives every stage's real consumer; it belongs above the components.
    "shared/bench.py",
    # ``liq up`` loads the settings of every process it starts, before it starts a server; it runs
    # them all, above the components.
    "shared/up.py",
}


def _sources() -> Iterator[Path]:
    for package in ("shared", *COMPONENTS):
        yield from sorted((REPO / package).rglob("*.py"))


def _module_level(tree: ast.Module) -> set[ast.AST]:
    """Nodes that run at import: the module body, through ``if``/``try``/``with`` blocks."""
    found: set[ast.AST] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        found.add(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return found


def _references(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """Every (node, module name) the source names as a dependency."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.match(node.value):
            yield node, node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and F_STRING_PREFIX.match(str(head.value)):
                yield node, str(head.value)


def _violations() -> list[str]:
    out = []
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        package = rel.split("/")[0]
        tree = ast.parse(path.read_text(), filename=rel)
        at_import = _module_level(tree)
        for node, name in _references(tree):
            target = name.split(".")[0]
            if target not in COMPONENTS or target == package:
                continue
            where = f"{rel}:{getattr(node, 'lineno', '?')} names {name}"
            if package != "shared":
                out.append(f"{where} (a component may import only itself and shared)")
            elif node in at_import and not isinstance(node, ast.Constant | ast.JoinedStr):
                out.append(f"{where} (shared imports no component at module level)")
            elif rel not in NAMES_COMPONENTS:
                out.append(f"{where} (not in NAMES_COMPONENTS)")
    return out


def test_imports_point_one_way() -> None:
    assert _violations() == []


def test_the_checker_sees_every_form_of_reference() -> None:
    source = (
        "import writer.sink\n"
        "from detector import engine\n"
        "def f():\n"
        "    import aggregator.service\n"
        "    importlib.import_module('writer.migrate')\n"
        "    importlib.import_module(f'collectors.sim.{name}')\n"
        "    log('writer')  # a bare word is no module name\n"
    )
    names = [name for _, name in _references(ast.parse(source))]
    assert names == ["writer.sink", "detector", "aggregator.service", "writer.migrate", "collectors.sim."]


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("shared.cli", COMPONENTS),
        ("shared.discovery", ("numpy", "psycopg", *COMPONENTS)),
        ("collectors.cli", ("numpy", "psycopg", "detector", "writer", "aggregator")),
        ("aggregator.cli", ("numpy", "psycopg", "websockets", "collectors", "detector", "writer")),
        ("detector.cli", ("psycopg", "websockets", "collectors", "aggregator", "writer")),
        ("writer.cli", ("numpy", "websockets", "collectors", "detector", "aggregator")),
    ],
)
def test_a_process_loads_only_what_it_needs(module: str, absent: tuple[str, ...]) -> None:
    """``liq collect`` never loads numpy or psycopg (``shared/cli.py`` promises it)."""
    code = f"import sys, {module}; print(' '.join(m for m in {absent!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            check=True, timeout=60).stdout.split()
    assert loaded == []
