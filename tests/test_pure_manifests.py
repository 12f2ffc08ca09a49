"""manifests/ is the pure layer: it decides, it writes no files (issue 19 item 7)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
# Calls that create, change or remove files, by the name they are called with.
WRITES = {"write_bytes", "write_text", "mkdir", "makedirs", "unlink", "rmdir", "rmtree", "chmod", "fchmod", "symlink_to", "touch", "mkfifo"}
OS_WRITES = {"replace", "rename", "remove"}  # str.replace and dataclasses.replace are no writes: os's only


def _file_writes(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if name in WRITES or (name in OS_WRITES and owner in ("os", "shutil")):
            found.append(f"line {node.lineno}: {name}")
        elif name == "open" and owner in ("os", "") and any(isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+") for a in node.args[1:2]):
            found.append(f"line {node.lineno}: open for writing")
        elif name == "open" and owner == "os":
            found.append(f"line {node.lineno}: os.open")
    return found


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.py")), ids=lambda p: p.name)
def test_manifests_writes_no_files(path):
    assert _file_writes(path.read_text()) == []


def test_the_check_finds_writes():
    assert len(_file_writes("import os\nos.open(p, os.O_WRONLY)\nPath(p).write_bytes(b'')\nopen(p, 'wb')\nos.replace(a, b)\n")) == 4
    assert _file_writes("s = text.replace('a', 'b')\nopen(p, 'rb')\n") == []
