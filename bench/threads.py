"""`python -m bench.threads`: where a direct download's CPU goes, thread by thread.

One file from the local server (its own process, as in W1) through `Download.run`, durable
(write-behind on), then one fsync, as many times as asked, alternating the fast path and the
plain one (`--plain-too`). Each thread's user and system CPU is read from /proc/self/task while
it runs: unlike wall time, these barely move when other work shares the machine, so they show
whether the receive, the writes and the hash overlap (the longest thread bounds the wall time on
an idle machine) and what each costs. Linux only.

    python -m bench.threads --size-mib 1024 --runs 3 --workdir /var/tmp/threads --plain-too
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import threading
import time
from pathlib import Path

from bench import data
from bench.measure import loadavg
from bench.server import Server
from executor import durable
from executor.http import Download, HttpSettings, make_client

MIB = 1 << 20


class ThreadClock:
    """The last CPU seconds (user, system) seen for every thread of this process, polled until stopped."""

    def __init__(self, every: float = 0.02):
        self.every = every
        self.seen: dict[int, tuple[str, float, float]] = {}
        self.stopped = threading.Event()
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._poll, name="bench-clock", daemon=True)

    def __enter__(self) -> "ThreadClock":
        self._read()
        self.start = dict(self.seen)  # threads that ran before (the main one): only what they spend from now counts
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def _poll(self) -> None:
        while not self.stopped.is_set():
            self._read()
            self.stopped.wait(self.every)
        self._read()

    def _read(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid in map(int, os.listdir("/proc/self/task")):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the thread ended meanwhile
            name = names.get(tid, self.seen.get(tid, ("?",))[0])
            self.seen[tid] = (name, int(fields[11]) / self.ticks, int(fields[12]) / self.ticks)

    def by_name(self) -> dict[str, tuple[float, float]]:
        totals: dict[str, tuple[float, float]] = {}
        for tid, (name, user, system) in self.seen.items():
            if name != self.thread.name:
                _, user0, system0 = self.start.get(tid, (name, 0.0, 0.0))
                u, s = totals.get(name, (0.0, 0.0))
                totals[name] = (u + user - user0, s + system - system0)
        return totals


def one_download(url: str, sha256: str, dest: Path, *, plain: bool) -> str:
    dest.unlink(missing_ok=True)
    dest.with_name(dest.name + ".json").unlink(missing_ok=True)
    os.sync()  # untimed: the last run's dirty pages are not this run's
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    with ThreadClock() as clock, make_client(HttpSettings()) as client:
        Download(client, url, dest, dest.name, writeback=not plain, plain=plain, connections=8).run(sha256)
        durable.fsync_path(dest)
    wall, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    threads = ", ".join(f"{name} {u:.2f}+{s:.2f}" for name, (u, s) in sorted(clock.by_name().items(), key=lambda kv: -sum(kv[1])))
    return f"{'plain' if plain else 'fast '}  wall {wall:.2f} s  CPU {cpu:.2f} s  threads (user+sys s): {threads}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--plain-too", action="store_true", help="alternate with the plain path (DEVOPS_CP_PLAIN_WRITES)")
    args = parser.parse_args(argv)
    serve, out = args.workdir / "serve", args.workdir / "out"
    serve.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    source = serve / "big.bin"
    sha256 = data.write_incompressible(source, args.size_mib * MIB)
    data.warm(source)
    print(f"{args.size_mib} MiB into {out}; load average {loadavg()}")
    try:
        with Server(serve) as server:
            for _ in range(args.runs):
                for plain in (False, True) if args.plain_too else (False,):
                    print(one_download(server.url("big.bin"), sha256, out / "big.bin", plain=plain), flush=True)
        print(f"load average {loadavg()}")
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
