"""Typed progress events. The executor emits them; only the edges render them
(a rich bar on a terminal, JSON for scripts, SSE for the web page)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Union


@dataclass(frozen=True)
class StepStarted:
    pack: str
    step: int
    label: str
    total: int | None
    type: str = "step_started"


@dataclass(frozen=True)
class Progress:
    pack: str
    step: int
    label: str
    downloaded: int
    total: int | None
    percent: int | None
    speed_bps: float
    eta_seconds: float | None
    type: str = "progress"


@dataclass(frozen=True)
class StepDone:
    pack: str
    step: int
    label: str
    size: int
    type: str = "download_done"


@dataclass(frozen=True)
class Notice:
    pack: str
    level: str  # info | warning
    message: str
    type: str = "notice"


Event = Union[StepStarted, Progress, StepDone, Notice]
Listener = Callable[[Event], None]


def to_dict(event: Event) -> dict:
    return asdict(event)


def ignore(event: Event) -> None:
    """A listener for callers that want no progress."""


class Meter:
    """Turns byte counts into throttled Progress events with speed and ETA."""

    INTERVAL = 0.1  # seconds between events: smooth for a bar, cheap for a 1 GiB copy

    def __init__(self, listener: Listener, pack: str, step: int, label: str, total: int | None):
        self.listener, self.pack, self.step, self.label, self.total = listener, pack, step, label, total
        self._start = time.monotonic()
        self._base = 0  # bytes that were already there (resume) do not count towards speed
        self._last_emit = 0.0
        self._last_percent = -1
        listener(StepStarted(pack, step, label, total))

    def restart(self, done: int, total: int | None = None) -> None:
        """A new attempt (resume or restart): speed counts from here."""
        if total is not None:
            self.total = total
        self._start = time.monotonic()
        self._base = done
        self.update(done, force=True)

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        percent = int(done * 100 / self.total) if self.total else None
        if not force and now - self._last_emit < self.INTERVAL and percent == self._last_percent:
            return
        self._last_emit, self._last_percent = now, percent if percent is not None else -1
        elapsed = max(now - self._start, 1e-6)
        speed = (done - self._base) / elapsed
        eta = (self.total - done) / speed if self.total and speed > 0 else None
        self.listener(Progress(self.pack, self.step, self.label, done, self.total, percent, speed, eta))

    def done(self, size: int) -> None:
        self.update(size, force=True)
        self.listener(StepDone(self.pack, self.step, self.label, size))


class LockedListener:
    """Serialises a listener called from several download threads."""

    def __init__(self, listener: Listener):
        self._listener = listener
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._listener(event)
