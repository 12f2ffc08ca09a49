"""Run one contender as a child process and measure it: wall time, CPU time, peak RSS.

CPU time comes from os.wait4 on the child: on Linux it includes the child's own
reaped children (the processes of a shell pipeline). Peak RSS is the largest
resident set of any one of them (ru_maxrss). A child forked from this Python process
would inherit this process's resident set as its own high-water mark (Linux keeps the
pre-exec peak), so the child is started through GNU time (`/usr/bin/time -f %M`),
a small C program whose own footprint is a megabyte or two; without it, ru_maxrss of
the direct child is used and is only an upper bound.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    cpu: float  # user + sys seconds of the child and its reaped children
    user: float
    sys: float
    maxrss_kib: int


class ContenderFailed(RuntimeError):
    pass


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Sample:
    """Run argv to completion; raises ContenderFailed (with its stderr tail) on a non-zero exit."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile(mode="r") as rss:
        launcher = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name] if GNU_TIME else []
        start = time.perf_counter()
        process = subprocess.Popen(launcher + list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise ContenderFailed(f"{' '.join(argv)[:200]} exited with {process.returncode}:\n{tail}")
        maxrss = int(rss.read().split()[-1]) if GNU_TIME else usage.ru_maxrss
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_utime, usage.ru_stime, maxrss)


@dataclass
class Contender:
    """One way of doing a workload. `prepare` and `cleanup` run untimed around every run."""

    name: str
    argv: Sequence[str]
    ours: bool = False
    env: dict[str, str] | None = None
    cwd: Path | None = None
    prepare: Callable[[], None] | None = None
    check: Callable[[], None] | None = None  # untimed: the run really produced the right output
    cleanup: Callable[[], None] | None = None
    samples: list[Sample] = field(default_factory=list)

    def median_wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    def median_cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    def peak_rss_mib(self) -> float:
        return max(s.maxrss_kib for s in self.samples) / 1024


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


SETTLE_SECONDS = 6.0


def compare(contenders: list[Contender], runs: int, log: Callable[[str], None] = print, *, settle: bool = False) -> None:
    """Every contender once per round, the order rotated each round; `runs` rounds.

    `settle`: wait SETTLE_SECONDS after the sync before each run. On ext4 without a journal
    (this machine's root), creating a file scans past every inode deleted in the last 5
    seconds (ext4's recently_deleted()): right after one contender's 20,000 files were
    removed, the next one's 20,000 creations cost seconds of kernel time (perf: 75% in
    recently_deleted/find_get_block_common). Waiting puts every contender on the same footing.
    """
    for round_no in range(runs):
        shift = round_no % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            if contender.prepare:
                contender.prepare()
            os.sync()  # nobody pays for the previous contender's dirty pages
            if settle:
                time.sleep(SETTLE_SECONDS)
            try:
                sample = run(contender.argv, env=contender.env, cwd=contender.cwd)
                if contender.check:
                    contender.check()
            finally:
                if contender.cleanup:
                    contender.cleanup()
            contender.samples.append(sample)
            log(f"  round {round_no + 1}/{runs}  {contender.name:<44} {sample.wall:7.2f} s wall  {sample.cpu:7.2f} s CPU  {sample.maxrss_kib / 1024:6.1f} MiB  (load {loadavg()})")
