"""The tool's version, from the installed distribution's metadata (pyproject.toml is the one source).

`VERSION` is computed on first use (module `__getattr__`), and read straight from the
dist-info's METADATA: importing importlib.metadata costs ~14 ms of every command's start-up.
Anything unusual (a zip on sys.path, unreadable metadata) goes to importlib.metadata, which is the
reference: the fast path finds the same distribution, in the same sys.path order.
"""

from __future__ import annotations

import os
import re
import sys

DISTRIBUTION = "devops-cp-data"
_NORMALIZED = "devops_cp_data"  # the distribution's name as dist-info folders spell it
UNKNOWN = "0.0.0+unknown"  # running from a checkout that was never installed


def __getattr__(name: str) -> str:
    if name == "VERSION":
        version = _version_from_dist_info() or _version_from_importlib()
        globals()["VERSION"] = version  # computed once; later reads skip __getattr__
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version_from_dist_info() -> str | None:
    """The Version header of the first matching dist-info (or egg-info) on sys.path; None: ask importlib.metadata."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            if os.path.isfile(entry):  # a zip importlib.metadata would search
                return None
            continue  # a missing folder or a path hook's name: importlib.metadata skips it too
        for name in names:
            stem, _, suffix = name.lower().rpartition(".")
            if suffix in ("dist-info", "egg-info") and _normalize(stem.partition("-")[0]) == _NORMALIZED:
                folder = os.path.join(entry or ".", name)
                return _metadata_version(folder, "METADATA") or _metadata_version(folder, "PKG-INFO")
    return None


def _normalize(name: str) -> str:
    """importlib.metadata's spelling: PEP 503, with underscores."""
    return re.sub(r"[-_.]+", "_", name)


def _metadata_version(folder: str, filename: str) -> str | None:
    try:
        with open(os.path.join(folder, filename), encoding="utf-8") as metadata:
            for line in metadata:
                if not line.strip():  # the headers end at the first blank line
                    break
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def _version_from_importlib() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN
