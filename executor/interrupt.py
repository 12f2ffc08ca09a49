"""Ctrl-C. The command's SIGINT handler sets STOP; every copy loop (`Copy.feed`) checks it between
chunks, so download threads stop at their next chunk instead of finishing the download. A read
blocked on a socket that sends nothing would see STOP only at its timeout: the handler also shuts
down the sockets registered with `cancelled_by_ctrl_c` (a response body) or `while_waiting_here`
(a request waiting for its answer's headers), so that read ends at once.

On the main thread the first Ctrl-C also raises `Interrupted` at once, except inside `deferred()`:
there the main thread is waiting for download threads (which stop by themselves and report
what they did) or swapping a pack in (which must finish, as after a kill). A second Ctrl-C
while stopping is ignored, so cleanup is never cut short by a traceback.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from manifests.errors import Interrupted

STOP = threading.Event()
_deferred = 0  # main thread only: signal handlers run there
_cancels: dict[object, Callable[[], None]] = {}  # what the handler calls: one entry per blocked read
_tokens = itertools.count()


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


@contextmanager
def cancelled_by_ctrl_c(cancel: Callable[[], None]) -> Iterator[None]:
    """While inside, Ctrl-C also calls `cancel` (say, shutting a socket down) from the signal handler.
    Registered before STOP is checked: a Ctrl-C just before is seen here, one after calls it."""
    token = next(_tokens)
    _cancels[token] = cancel
    try:
        if STOP.is_set():
            cancel()
        yield
    finally:
        _cancels.pop(token, None)


def while_waiting_here(cancel: Callable[[], None] | None) -> None:
    """This thread waits for an answer: Ctrl-C calls `cancel` (None: it waits no more). One entry
    per thread, replaced by its next wait."""
    key = ("waiting", threading.get_ident())
    if cancel is None:
        _cancels.pop(key, None)
        return
    _cancels[key] = cancel
    if STOP.is_set():
        cancel()


def _cancel_blocked_reads() -> None:
    for cancel in list(_cancels.values()):  # a copy: other threads add and remove entries meanwhile
        cancel()


def _on_sigint(signum, frame) -> None:
    if STOP.is_set():
        print("still stopping: finishing what has begun", file=sys.stderr, flush=True)
        return
    STOP.set()
    _cancel_blocked_reads()
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
