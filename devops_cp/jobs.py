"""Background jobs for the web routes: one thread per job, its progress kept as current state.

A job does not keep every event it ever saw. It keeps, per step, the step's
start, its latest progress and its end, plus the notices and the final result,
each stamped with a sequence number. A reader sends what is newer than the last
number it sent, so:

* a client that connects late gets the current state first (the latest event
  per step, then the final event if the job is done);
* a slow client skips intermediate progress instead of making memory grow;
* a reconnecting EventSource resumes from its Last-Event-ID.

The executor calls the listener from its download threads; readers live on the
asyncio loop and are woken with `loop.call_soon_threadsafe`, never by polling.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from executor.events import Event
from manifests.errors import DataPackError

log = logging.getLogger(__name__)

MAX_LOOSE_EVENTS = 200  # notices and other events that belong to no step
MAX_FINISHED_JOBS = 50  # finished jobs kept for late readers


@dataclass(frozen=True)
class Entry:
    seq: int
    type: str
    data: dict


def event_dict(event: Any) -> dict:
    """The executor's typed events as JSON-ready dicts; anything else still becomes a dict."""
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return dataclasses.asdict(event)
    if hasattr(event, "to_dict"):
        return dict(event.to_dict())
    return {"type": getattr(event, "type", "event"), "message": str(event)}


_PHASE = {"step_started": "started", "progress": "progress", "download_done": "done"}


def _slot(data: dict) -> tuple | None:
    """Where an event is kept: one slot per step and phase, or None for a loose event."""
    if "step" not in data:
        return None
    kind = data.get("type", "event")
    return (data.get("pack", ""), data["step"], _PHASE.get(kind, kind))


class Job:
    """One install or sideload: its progress state and the result, guarded by a lock."""

    def __init__(self, kind: str, title: str, keys: Iterable[str]):
        self.id = secrets.token_urlsafe(16)  # unguessable: the events URL is the capability to read
        self.kind = kind
        self.title = title
        self.keys = tuple(keys)
        self.started_at = time.time()
        self.finished_at: float | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._slots: dict[tuple, Entry] = {}
        self._loose: deque[Entry] = deque(maxlen=MAX_LOOSE_EVENTS)
        self._final: Entry | None = None
        self._waiters: set[Callable[[], None]] = set()

    # --- writing (executor threads) ------------------------------------------------------

    def listener(self, event: Event) -> None:
        """The Engine's listener: called from its threads."""
        self.publish(event_dict(event))

    def publish(self, data: dict) -> None:
        kind = data.get("type", "event")
        with self._lock:
            if self._final is not None:
                return  # nothing after the final event
            self._seq += 1
            entry = Entry(self._seq, kind, data)
            slot = _slot(data)
            if slot is None:
                self._loose.append(entry)
            else:
                self._slots[slot] = entry
            waiters = list(self._waiters)
        _wake(waiters)

    def finish(self, ok: bool, data: dict) -> None:
        with self._lock:
            if self._final is not None:
                return
            self._seq += 1
            self._final = Entry(self._seq, "success" if ok else "error", data)
            self.finished_at = time.time()
            waiters = list(self._waiters)
        _wake(waiters)

    # --- reading (any thread, or the event loop) -------------------------------------------

    def since(self, cursor: int) -> tuple[list[Entry], bool]:
        """Entries newer than `cursor`, oldest first, and whether the job is over."""
        with self._lock:
            entries = [e for e in self._slots.values() if e.seq > cursor]
            entries += [e for e in self._loose if e.seq > cursor]
            if self._final is not None and self._final.seq > cursor:
                entries.append(self._final)
            done = self._final is not None
        entries.sort(key=lambda e: e.seq)
        return entries, done

    def subscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._waiters.add(wake)

    def unsubscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._waiters.discard(wake)

    @property
    def done(self) -> bool:
        with self._lock:
            return self._final is not None

    def summary(self) -> dict:
        with self._lock:
            final = self._final
            steps = [e.data for e in sorted(self._slots.values(), key=lambda e: e.seq) if e.type == "progress"]
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "packs": list(self.keys),
            "state": "running" if final is None else ("succeeded" if final.type == "success" else "failed"),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": steps,
            "result": final.data if final else None,
        }


def _wake(waiters: list[Callable[[], None]]) -> None:
    for wake in waiters:
        try:
            wake()
        except RuntimeError:  # the reader's event loop is gone; it unsubscribes itself
            pass


class Busy(Exception):
    """Another job holds one of the keys (a pack)."""

    def __init__(self, key: str, job: Job):
        super().__init__(key)
        self.key = key
        self.job = job


# work(job) -> (ok, final data); it reports progress through job.listener
Work = Callable[[Job], tuple[bool, dict]]


class Jobs:
    """The registry: at most one running job per key (a pack id), each in its own thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, Job] = {}

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def running_for(self, key: str) -> Job | None:
        with self._lock:
            return self._running.get(key)

    def start(self, kind: str, title: str, keys: Iterable[str], work: Work) -> Job:
        job = Job(kind, title, keys)
        with self._lock:
            for key in job.keys:
                if key in self._running:
                    raise Busy(key, self._running[key])
            for key in job.keys:
                self._running[key] = job
            self._jobs[job.id] = job
            self._forget_old()
        # Daemon: stopping the server must not wait for a 70 GB download; the store's
        # journal finishes or undoes an interrupted install on the next run.
        thread = threading.Thread(target=self._run, args=(job, work), name=f"job-{kind}-{job.id[:6]}", daemon=True)
        thread.start()
        return job

    def _run(self, job: Job, work: Work) -> None:
        try:
            ok, data = work(job)
        except DataPackError as exc:
            ok, data = False, error_data(exc)
        except Exception:  # a bug: the server log gets the traceback, the page a plain message
            log.exception("job %s (%s) failed", job.id, job.title)
            ok, data = False, {"message": f"{job.title}: internal error", "hint": "see the server log for details", "type": "InternalError", "exit_code": 1}
        finally:
            with self._lock:
                for key in job.keys:
                    if self._running.get(key) is job:
                        del self._running[key]
        job.finish(ok, data)

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.finished_at or 0)
        for job in finished[: max(0, len(finished) - MAX_FINISHED_JOBS)]:
            del self._jobs[job.id]


def error_data(exc: DataPackError) -> dict:
    return {"message": exc.message, "hint": exc.hint, "type": type(exc).__name__, "exit_code": exc.exit_code}


__all__ = ["Busy", "Entry", "Job", "Jobs", "error_data", "event_dict"]
