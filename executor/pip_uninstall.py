"""Removing a pack whose offline step pip-installed a wheel: uninstall it from the same interpreter.

The distribution's name is read from the wheel's own METADATA (`Name:`), the file that pip itself
installed from, never from a name a recipe or a bundle manifest supplies: a manifest naming
`requests` must not make `remove` uninstall requests.
"""

from __future__ import annotations

import subprocess
import zipfile
from email.parser import HeaderParser
from pathlib import Path

MAX_METADATA = 1 << 20
PYTHON_KEY = "pip_python"  # the install record's `extra`: the interpreter its `{python}` steps used


def wheel_name(wheel: Path) -> str | None:
    """The `Name:` in the wheel's top-level *.dist-info/METADATA; None when it has none."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            found = [i for i in zf.infolist() if i.filename.count("/") == 1 and i.filename.endswith(".dist-info/METADATA")]
            if len(found) != 1 or found[0].file_size > MAX_METADATA:
                return None
            text = zf.read(found[0]).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile):
        return None
    name = HeaderParser().parsestr(text).get("Name")
    return name.strip() if name and name.strip() else None


def uninstall_wheels(files: list[Path], python: str | None) -> list[str]:
    """pip uninstall each wheel's distribution; what happened, one line each."""
    lines = []
    for wheel in files:
        name = wheel_name(wheel)
        if name is None:
            continue
        if python is None:
            lines.append(f"{name} was pip-installed from {wheel.name} into an interpreter this record does not name; uninstall it there: python -m pip uninstall {name}")
            continue
        try:
            result = subprocess.run([python, "-m", "pip", "uninstall", "-y", name], capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            lines.append(f"could not uninstall {name} from {python} ({exc}); run: {python} -m pip uninstall {name}")
            continue
        if result.returncode == 0:
            lines.append(f"uninstalled {name} from {python}")
        else:
            why = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["pip failed"]
            lines.append(f"could not uninstall {name} from {python} ({why[0]}); run: {python} -m pip uninstall {name}")
    return lines
