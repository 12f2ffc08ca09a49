"""Ctrl-C. The command's SIGINT handler sets STOP; every copy loop (`Copy.feed`) checks it between
chunks, so download threads stop at their next chunk instead of finishing the download.

On the main thread the first Ctrl-C also raises `Interrupted` at once, except inside `deferred()`:
there the main thread is waiting for download threads (which stop by themselves and report
what they did) or swapping a pack in (which must finish, as after a kill). A second Ctrl-C
while stopping is ignored, so cleanup is never cut short by a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from manifests.errors import Interrupted

STOP = threading.Event()
_deferred = 0  # main thread only: signal handlers run there


def check() -> None:
    if STOP.is_set():
        raise interrupted()


def interrupted() -> Interrupted:
    return Interrupted("interrupted (Ctrl-C): nothing more was installed", hint="a partial download is kept: run the same command again to resume")


@contextmanager
def deferred() -> Iterator[None]:
    """Ctrl-C here only sets STOP: the code inside checks it where stopping is safe."""
    global _deferred
    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        _deferred += 1
    try:
        yield
    finally:
        if on_main:
            _deferred -= 1


def _on_sigint(signum, frame) -> None:
    if STOP.is_set():
        print("still stopping: finishing what has begun", file=sys.stderr, flush=True)
        return
    STOP.set()
    if _deferred == 0:
        raise interrupted()


@contextmanager
def stop_on_ctrl_c() -> Iterator[None]:
    """For a command's whole run: Ctrl-C stops it as above (main thread only, where signals land)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
