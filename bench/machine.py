"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def memory_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "?"


def description(command: str, load_start: str) -> str:
    versions = {
        "curl": _first_line(["curl", "--version"]),
        "zstd": _first_line(["zstd", "--version"]),
        "tar": _first_line(["tar", "--version"]),
        "sha256sum": _first_line(["sha256sum", "--version"]),
        "openssl": _first_line(["openssl", "version"]),
    }
    try:
        import zstandard
        import httpx

        libs = f"httpx {httpx.__version__}, zstandard {zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})"
    except ImportError:
        libs = "?"
    lines = [
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), {memory_gib()} memory, Linux {platform.release()}, shared with other users",
        f"- load average (1/5/15 min) at the start: {load_start}",
        f"- Python {sys.version.split()[0]}; {libs}",
    ] + [f"- {name}: {version}" for name, version in versions.items()]
    return "\n".join(lines)
