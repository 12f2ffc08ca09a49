"""Sizes and durations as people write them, and back."""

from __future__ import annotations

import re

from manifests.errors import UsageError
from manifests.fmt import fmt_duration, fmt_size

__all__ = ["FAT32_MAX", "estimated_times", "fmt_duration", "fmt_size", "parse_duration", "parse_size"]

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
# The largest file FAT32 can hold.
FAT32_MAX = 4 * 2**30 - 1


def parse_size(text: str) -> int:
    """'4G' -> 4e9 (K/M/G decimal), '10MiB' -> 10*2**20, 'fat32' -> 4 GiB - 1."""
    cleaned = text.strip()
    if cleaned.lower() == "fat32":
        return FAT32_MAX
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", cleaned)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise UsageError(
            f"invalid size {text!r}",
            hint="write a number with K, M, G (decimal) or KiB, MiB, GiB (binary), e.g. 4G, 700MiB, or 'fat32'",
        )
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise UsageError(f"invalid size {text!r}: must be more than 0")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> int:
    """'30d' -> seconds; accepts s, m, h, d, w, y."""
    match = re.fullmatch(r"(\d+)\s*([smhdwy])", text.strip().lower())
    if not match:
        raise UsageError(f"invalid duration {text!r}", hint="write a number and a unit: 12h, 30d, 2w, 1y")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def estimated_times(size_bytes: int) -> dict[str, str]:
    """How long a download takes at 10, 50 and 100 Mbit/s (decimal megabits, as ISPs sell them)."""
    return {f"{mbps} Mbps": fmt_duration(size_bytes * 8 / (mbps * 10**6)) for mbps in (10, 50, 100)}
