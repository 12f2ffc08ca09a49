"""The tool's version, from the installed distribution's metadata (pyproject.toml is the one source).

`VERSION` is read on first use (module `__getattr__`): commands that never show it do not import
importlib.metadata.
"""

from __future__ import annotations

DISTRIBUTION = "devops-cp-data"
UNKNOWN = "0.0.0+unknown"  # running from a checkout that was never installed


def __getattr__(name: str) -> str:
    if name == "VERSION":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version(DISTRIBUTION)
        except PackageNotFoundError:
            value = UNKNOWN
        globals()["VERSION"] = value  # read once; later reads skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
