"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
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


def filesystem(path: str) -> str:
    """The filesystem the work dir is on, and whether an ext4 one has a journal.

    Without a journal, ext4 scans past every recently deleted inode when it creates a file
    (recently_deleted()); on such a filesystem creating 20,000 files soon after deleting as
    many costs 10-15 s of kernel time instead of under 1 s, for every contender alike.
    """
    try:
        device = os.stat(path).st_dev
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                major, minor = (int(x) for x in fields[2].split(":"))
                if os.makedev(major, minor) == device:
                    rest = fields[fields.index("-") + 1 :]
                    fstype, source = rest[0], rest[1]
                    note = f"{fstype} on {source} (mounted at {fields[4]})"
                    if fstype == "ext4":
                        options = Path(f"/proc/fs/ext4/{Path(source).name}/options")
                        if options.exists():
                            journaled = "data=" in options.read_text()
                            note += ", with a journal" if journaled else ", WITHOUT a journal: file creation is slow after deletions"
                    return note
    except (OSError, ValueError, StopIteration):
        pass
    return "?"


def description(command: str, load_start: str, workdir: str = ".") -> str:
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
        f"- work dir filesystem: {filesystem(workdir)}",
        f"- Python {sys.version.split()[0]}; {libs}",
    ] + [f"- {name}: {version}" for name, version in versions.items()]
    return "\n".join(lines)
