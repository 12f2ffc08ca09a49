"""The product's layers run one way, its imports have no cycles, and each module imports on its own.

    manifests  <-  executor  <-  bundler, sideload  <-  devops_cp

A package may import only the packages to its left (bundler and sideload not each other), and
no product module imports the test scaffolding (tests/support), bench/ or tools/. Read from the
source, lazy imports inside functions included, so a command nobody ran in this test still counts.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "manifests": set(),
    "executor": {"manifests"},
    "bundler": {"manifests", "executor"},
    "sideload": {"manifests", "executor"},
    "devops_cp": {"manifests", "executor", "bundler", "sideload"},
}
NOT_PRODUCT = {"tests", "support", "bench", "tools", "conftest", "bundle_helpers", "hostile", "crash_driver"}


def product_modules() -> dict[str, Path]:
    modules = {}
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


MODULES = product_modules()


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports(path: Path, *, type_checking: bool = True) -> set[str]:
    """Modules this file imports, inside functions too; `from pkg import sub` counts as pkg.sub
    when sub is a module. ``type_checking=False`` leaves out `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not type_checking and _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names if f"{child.module}.{a.name}" in MODULES)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for name, path in MODULES.items():
        package = name.split(".")[0]
        for imported in imports(path):
            top = imported.split(".")[0]
            if top in NOT_PRODUCT or (top in ALLOWED and top != package and top not in ALLOWED[package]):
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_imports_have_no_cycle():
    """Lazy imports count: a cycle through a function's import is one the next edit can trip on."""
    graph = {name: {m for m in imports(path, type_checking=False) if m in MODULES and m != name} for name, path in MODULES.items()}
    cycles = []
    state: dict[str, str] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [node, nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                walk(nxt, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert cycles == []


# Each child starts from a bare interpreter (the parent imports nothing of ours) and imports one module.
_IMPORT_EACH = """
import json, os, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(name)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        message = pipe.read().decode()
    if os.waitpid(pid, 0)[1] != 0:
        failed[name] = message.strip().splitlines()[-1] if message.strip() else "died"
print(json.dumps(failed))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_product_module_imports_on_its_own():
    names = sorted(name for name in MODULES if not name.endswith("__main__"))  # that one runs the command
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}


def test_the_checks_see_what_they_check():
    """The source walk finds real imports, lazy and TYPE_CHECKING ones included (else it would pass vacuously)."""
    assert len(MODULES) > 30 and "devops_cp.cli" in MODULES and "manifests" in MODULES
    assert "manifests.errors" in imports(MODULES["executor.engine"])
    assert "devops_cp.web" in imports(MODULES["devops_cp.web_cli"])  # inside the command's function
    assert "manifests.plan" in imports(MODULES["devops_cp.cli_common"]) - imports(MODULES["devops_cp.cli_common"], type_checking=False)
