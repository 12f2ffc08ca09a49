"""Checks that run before the first byte: space, permission, tools."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from manifests.errors import NoSpaceError, ToolError

SPACE_MARGIN = 1.2  # the seed's 20% buffer


def existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_space(directory: Path, needed_bytes: int) -> None:
    if needed_bytes <= 0:
        return
    free = shutil.disk_usage(existing_parent(directory)).free
    wanted = int(needed_bytes * SPACE_MARGIN)
    if free < wanted:
        raise NoSpaceError(str(directory), wanted, free)


@dataclass(frozen=True)
class Room:
    """The free space where an archive unpacks, measured as it starts: what it writes must fit, margin
    included, the same margin the check before the first byte uses."""

    where: str  # the data dir, as the error names it
    free: int

    @classmethod
    def at(cls, where: Path, directory: Path) -> "Room":
        return cls(str(where), shutil.disk_usage(existing_parent(directory)).free)

    def holds(self, size: int) -> bool:
        return self.needed(size) <= self.free

    @staticmethod
    def needed(size: int) -> int:
        return math.ceil(size * SPACE_MARGIN)


def check_space_for(needs: dict[Path, int]) -> None:
    """Several directories may share one filesystem: their needs add up there."""
    by_device: dict[int, tuple[Path, int]] = {}
    for directory, size in needs.items():
        device = existing_parent(directory).stat().st_dev
        first, total = by_device.get(device, (directory, 0))
        by_device[device] = (first, total + size)
    for directory, size in by_device.values():
        check_space(directory, size)


def check_tools(tools: list[str] | tuple[str, ...], why: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise ToolError(
            f"{why} needs {', '.join(missing)}, which is not on PATH",
            hint=f"install {', '.join(missing)} first, or bundle this pack on a machine that has it",
        )
