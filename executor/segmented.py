"""One large file over several connections at once, for servers that cap each connection.

Download (executor/http.py) asks for it when the first answer (a 200 with `Accept-Ranges: bytes`
and a length, or a 206) shows a large file that cannot change under us: a strong ETag or a
Last-Modified (sent with If-Range on every range), or a pinned sha256. That first stream is read
and hashed as one stream is; a Probe watches it for PROBE seconds, and if its rate is below
FAST_ENOUGH and leaves more than WORTH_IT seconds of work, Segmented takes over: the stream goes on
as the lead and helpers join, up to `connections` (unless the process ran on or waited for
CPU_BOUND cores meanwhile: on a busy machine a stream is slow for want of CPU, which more
connections only cost). They stay only if the total rate rises by a
third (a server capping each connection); else one connection goes on alone.

Pieces are handed out in file order, so the contiguous prefix grows steadily and is hashed as it
completes: read back from the staging file (FileSink) or taken from memory when streaming into a
bundle (MemorySink, whose pieces stay inside a bounded window). Every range answer must fit the
first one (206, the asked start, the same size and validator). Another version (Changed) makes the
caller start the file again, once more with several connections; anything else (Inconsistent), or
a second change, as a single stream.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from executor import durable, http_fastpath
from executor.transfer import CHUNK_SIZE, Copy

PIECE = 16 << 20  # a helper's request when fetching into a file
STREAM_WINDOW = 16 << 20  # bytes a streamed download may hold ahead of what it has written
MIN_SIZE = 32 << 20  # less than this left: one stream
MIN_STEAL = 1 << 20  # the tail of a claim is split only while both halves are at least this
PROBE = 0.25  # seconds of the lead alone, then of the helpers, before deciding
WORTH_IT = 1.0  # seconds of work left at the lead's rate that justify helpers
FAST_ENOUGH = 128 << 20  # bytes/s: one connection this fast is not what limits (a gigabit link, the disk, the hash)
CPU_BOUND = 0.5  # cores this process ran on or waited for while probing: from here on the CPU limits, not the link
GAIN = 1.33  # helpers stay if the total rate rose this much
JOURNAL_EVERY = 0.5  # seconds between journal saves
WRITEBACK_STEP = 16 << 20
WRITEBACK_KEEP = 32 << 20


class Inconsistent(Exception):
    """A range answer that does not fit the first answer (another Content-Range or size)."""


class Changed(Inconsistent):
    """A range answer of another version (a 200 to If-Range, another validator): the file changed."""


class Resolve(Exception):
    """A signed, expiring URL refused a range (403/410): ask the original URL again."""


@dataclass
class First:
    """What the first answer said: the size, the validator its ranges must carry, where it went."""

    size: int
    etag: str | None
    last_modified: str | None
    target: str  # the URL after redirects

    @property
    def if_range(self) -> str | None:
        return self.etag or self.last_modified


def first_answer(response: httpx.Response, asked: int, pinned: bool, resuming: bool = False) -> First | None:
    """The First of an answer that several connections may continue, else None: a 200 to a plain
    GET that says `Accept-Ranges: bytes` and its length, or a 206 to `Range: bytes=asked-`.
    `resuming`: a segmented partial file's journal says what is missing, however little."""
    headers = response.headers
    if "transfer-encoding" in headers or headers.get("content-encoding", "identity") != "identity":
        return None
    if response.status_code == 200 and asked == 0:
        length = headers.get("content-length", "")
        if headers.get("accept-ranges", "").strip().lower() != "bytes" or not length.isdigit():
            return None
        size = int(length)
    elif response.status_code == 206:
        found = parse_content_range(headers.get("content-range", ""))
        if found is None or found[0] != asked or found[2] is None:
            return None
        size = found[2]
    else:
        return None
    etag = headers.get("etag")
    if etag is not None and etag.startswith("W/"):
        etag = None  # a weak tag cannot be sent with If-Range
    last_modified = headers.get("last-modified") if etag is None else None
    if not (etag or last_modified or pinned):
        return None  # two versions could be stitched together
    if not resuming and size - asked < MIN_SIZE:
        return None
    return First(size, etag, last_modified, str(response.url))


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    parts = value.strip().removeprefix("bytes").strip()
    span, _, total = parts.partition("/")
    first, dash, last = span.partition("-")
    if not (dash and first.isdigit() and last.isdigit() and (total.isdigit() or total == "*")):
        return None
    return int(first), int(last), int(total) if total.isdigit() else None


class Probe:
    """The first stream alone for PROBE seconds: whether helpers are worth starting. It watches
    the stream's chunks and stops them (leaving the stream open to go on) when they are."""

    def __init__(self, size: int, offset: int):
        self.size, self.offset = size, offset
        self.rate: float | None = None
        self.switch = False

    def watch(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        started, got, cpu = None, 0, 0.0  # from the first chunk on: the wait for it is not the link's rate
        for chunk in chunks:
            yield chunk
            now = time.monotonic()
            if started is None:
                started, self.offset, cpu = now, self.offset + len(chunk), cpu_wanted()
                continue
            got += len(chunk)
            if self.rate is None and now - started >= PROBE:
                self.rate = got / (now - started)
                if worth_helpers(self.rate, self.size - self.offset - got, (cpu_wanted() - cpu) / (now - started)):
                    self.switch = True
                    return


def cpu_wanted() -> float:
    """Seconds the process's running threads have run, and waited to run (Linux's schedstat: on a
    busy machine a thread that gets little CPU still wants it); elsewhere the CPU time alone."""
    try:
        total = 0
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ran, waited, _ = f.read().split()
            total += int(ran) + int(waited)
        return total / 1e9
    except (OSError, ValueError):  # no /proc, no schedstat, or a thread that ended meanwhile
        return time.process_time()


def worth_helpers(rate: float, left: int, cores: float) -> bool:
    """Whether helpers may raise a stream's `rate` (bytes/s) with `left` bytes to go: it is slow, with
    seconds of work left, while the process wanted fewer than CPU_BOUND `cores` (the link limits)."""
    return 0 < rate < FAST_ENOUGH and left / rate > WORTH_IT and cores < CPU_BOUND


# --- what is done, what is claimed, what is free ------------------------------------------


@dataclass
class Claim:
    """[start, pos) has arrived; a worker is fetching [pos, end). `end` shrinks when another steals the tail."""

    start: int
    pos: int
    end: int


class Plan:
    """The file's intervals, under one lock: done (arrived), claimed by a worker, free."""

    def __init__(self, size: int, done: list[tuple[int, int]], *, window: int | None):
        self.size = size
        self.done = merge(done)
        self.free = gaps(self.done, size)
        self.claims: list[Claim] = []
        self.window = window  # streaming: a piece may not start this far ahead of `consumed`
        self.consumed = 0
        self.stopped = False
        self.lock = threading.Condition()

    @property
    def received(self) -> int:
        return sum(b - a for a, b in self.done) + sum(c.pos - c.start for c in self.claims)

    def claim(self, piece: int | None) -> Claim | None:
        """The next piece in file order (`piece` None: the whole free interval), else half of the
        largest claim's tail; None when nothing is left to fetch. Waits while the window is full."""
        with self.lock:
            while True:
                if self.free:
                    a, b = self.free[0]
                    end = b if piece is None else min(b, a + piece)
                    if self.window is not None and a >= self.consumed + self.window and not self.stopped:
                        self.lock.wait()
                        continue
                    self.free[0] = (end, b)
                    if end == b:
                        self.free.pop(0)
                    return self._add(Claim(a, a, end))
                victim = max(self.claims, key=lambda c: c.end - c.pos, default=None)
                if victim is None or victim.end - victim.pos < 2 * MIN_STEAL:
                    return None
                cut = victim.pos + (victim.end - victim.pos) // 2
                if piece is not None and victim.end - victim.pos > 2 * piece:
                    cut = victim.pos + piece  # keep file order: free what is far ahead, as pieces
                    self.free.insert(0, (cut, victim.end))
                    victim.end = cut
                    continue
                claim = Claim(cut, cut, victim.end)
                victim.end = cut
                return self._add(claim)

    def _add(self, claim: Claim) -> Claim:
        self.claims.append(claim)
        return claim

    def room(self, claim: Claim, size: int) -> int:
        """How many of the next `size` bytes at claim.pos are still this claim's to write; when
        streaming, waits until they are inside the window."""
        with self.lock:
            while self.window is not None and claim.pos >= self.consumed + self.window and not self.stopped:
                self.lock.wait()
            return max(0, min(size, claim.end - claim.pos))

    def advance(self, claim: Claim, count: int) -> None:
        with self.lock:
            claim.pos += count

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()

    def release(self, claim: Claim) -> None:
        """The claim is over (finished, or its worker stopped): what arrived is done, the rest free."""
        with self.lock:
            self.claims.remove(claim)
            if claim.pos > claim.start:
                self.done = merge(self.done + [(claim.start, claim.pos)])
            if claim.pos < claim.end:
                self.free = merge(self.free + [(claim.pos, claim.end)])
            self.lock.notify_all()

    def prefix(self) -> int:
        """The end of the contiguous bytes from 0."""
        with self.lock:
            spans = merge(self.done + [(c.start, c.pos) for c in self.claims if c.pos > c.start])
            return spans[0][1] if spans and spans[0][0] == 0 else 0

    def arrived(self) -> list[tuple[int, int]]:
        """Every byte range that has arrived (the journal)."""
        with self.lock:
            return merge(self.done + [(c.start, c.pos) for c in self.claims if c.pos > c.start])

    def complete(self) -> bool:
        with self.lock:
            return not self.free and not self.claims


def merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def gaps(done: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    out, at = [], 0
    for a, b in done:
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < size:
        out.append((at, size))
    return out


# --- where the bytes go -------------------------------------------------------------------


class FileSink:
    """The preallocated staging file: ranges written where they belong, read back in order to hash.
    After close() a late worker's put() fails instead of writing to a reused descriptor."""

    def __init__(self, fd: int):
        self.fd = fd
        self.lock = threading.Lock()

    def put(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        with self.lock:
            if self.fd < 0:
                raise OSError("the staging file was closed")
            while view:
                written = os.pwrite(self.fd, view, offset)
                view, offset = view[written:], offset + written

    def close(self) -> None:
        with self.lock:
            self.fd = -1

    def take(self, start: int, end: int) -> Iterator[bytes]:
        while start < end:
            data = os.pread(self.fd, min(CHUNK_SIZE, end - start), start)
            if not data:
                raise OSError(f"the staging file ends at {start}, before {end}")
            start += len(data)
            yield data


class MemorySink:
    """Ranges held in memory until the bytes before them are written (Plan.window bounds them)."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}
        self.lock = threading.Lock()

    def put(self, offset: int, data: bytes) -> None:
        with self.lock:
            self.chunks[offset] = data

    def close(self) -> None:
        with self.lock:
            self.chunks.clear()

    def take(self, start: int, end: int) -> Iterator[bytes]:
        while start < end:
            with self.lock:
                data = self.chunks.pop(start)
            if start + len(data) > end:  # only part of it is in order yet
                with self.lock:
                    self.chunks[end] = data[end - start:]
                data = data[: end - start]
            start += len(data)
            yield data


# --- the run ------------------------------------------------------------------------------


@dataclass
class Fetch:
    """One segmented fetch: the client side of Download, as this module needs it."""

    client: httpx.Client
    url: str  # the original URL: a refused signed URL is resolved again from it
    auth: httpx.Auth | None
    stall_timeout: float
    connections: int
    attempts: object  # executor.http.Attempts: failed(exc), until_deadline(chunks)
    retryable: Callable[[BaseException], bool]
    check_status: Callable[[httpx.Response], None]  # raises for what is neither 200 nor 206
    meter: object | None = None


class Segmented:
    def __init__(self, fetch: Fetch, first: First, plan: Plan, sink, consume: Callable[[Iterator[bytes]], None], *, piece: int, journal: Callable[[list], None] | None = None, writeback_fd: int | None = None):
        self.fetch, self.first, self.plan, self.sink, self.consume = fetch, first, plan, sink, consume
        self.piece, self.journal, self.writeback_fd = piece, journal, writeback_fd
        self.target = first.target
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.workers: list[threading.Thread] = []
        self.wanted = 1  # how many workers should be running
        self.running = 0
        self.used = 1  # the most that ran at once: what tests and the benchmark look at
        self.resolves = 0

    def run(self, lead: Iterator[bytes], request: httpx.Request, lead_rate: float | None) -> None:
        """Fetch every free byte, feeding the contiguous prefix to `consume` in order. `lead`: the
        first answer's body, going on from the first free byte; `lead_rate`: its measured rate,
        when helpers start at once. On any failure the workers are told to stop and the sink is
        closed before this returns."""
        first_claim = self.plan.claim(None)
        self._start(lambda: self._lead(lead, request, first_claim))
        if lead_rate is not None:
            self._grow(self.fetch.connections)
        try:
            self._coordinate(lead_rate)
        except BaseException:
            self.stop.set()
            self.plan.stop()
            deadline = time.monotonic() + 1.0  # a worker blocked in a read sees the stop at its next chunk
            for worker in self.workers:
                worker.join(max(0.0, deadline - time.monotonic()))
            raise
        finally:
            self._save_journal()
            self.sink.close()
        for worker in self.workers:
            worker.join()

    def _coordinate(self, lead_rate: float | None) -> None:
        plan, consumed = self.plan, self.plan.consumed
        probe_at, probe_bytes, probe_cpu = time.monotonic() + PROBE, plan.received, cpu_wanted()
        journal_at = time.monotonic() + JOURNAL_EVERY
        writeback_at = consumed + WRITEBACK_STEP
        while True:
            with plan.lock:
                if self.error is None and not plan.complete() and self._prefix_locked() == consumed:
                    plan.lock.wait(0.02)  # a finished claim wakes it at once; progress is polled
            if self.error is not None:
                raise self.error
            prefix = plan.prefix()
            if prefix > consumed:
                self.consume(self.sink.take(consumed, prefix))
                with plan.lock:
                    plan.consumed = consumed = prefix
                    plan.lock.notify_all()
                if self.writeback_fd is not None and consumed >= writeback_at:
                    durable.write_behind_fd(self.writeback_fd, consumed, WRITEBACK_KEEP)
                    writeback_at = consumed + WRITEBACK_STEP
            received = plan.received
            if self.fetch.meter is not None:
                self.fetch.meter.update(received)
            if consumed >= plan.size and plan.complete():
                return
            now = time.monotonic()
            if now >= journal_at:
                self._save_journal()
                journal_at = now + JOURNAL_EVERY
            if probe_at is not None and now >= probe_at:
                rate = (received - probe_bytes) / (now - probe_at + PROBE)
                cores = (cpu_wanted() - probe_cpu) / (now - probe_at + PROBE)
                probe_at, probe_bytes, probe_cpu = now + PROBE, received, cpu_wanted()
                if lead_rate is None:  # the lead alone: helpers if its rate leaves work for them
                    if worth_helpers(rate, plan.size - received, cores) and self.fetch.connections > 1:
                        lead_rate = rate
                        self._grow(self.fetch.connections)
                    else:
                        probe_at = None if rate > 0 else probe_at
                else:  # the helpers: they stay only if the total rose
                    if rate < lead_rate * GAIN:
                        self.wanted = 1
                    probe_at = None

    def _prefix_locked(self) -> int:
        spans = merge(self.plan.done + [(c.start, c.pos) for c in self.plan.claims if c.pos > c.start])
        return spans[0][1] if spans and spans[0][0] == 0 else 0

    def _grow(self, count: int) -> None:
        self.wanted = count
        for _ in range(count - len(self.workers)):
            self._start(self._helper)
        self.used = max(self.used, count)

    def _start(self, work: Callable[[], None]) -> None:
        with self.plan.lock:
            self.running += 1

        def guarded() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001  (handed to the coordinating thread, which raises it)
                if self.error is None and not self.stop.is_set():
                    self.error = exc
                self.stop.set()
                self.plan.stop()

        thread = threading.Thread(target=guarded, name="segment", daemon=True)
        self.workers.append(thread)
        thread.start()

    def _lead(self, body: Iterator[bytes], request: httpx.Request, claim: Claim) -> None:
        """The first answer is read on; then the lead takes pieces like any helper."""
        try:
            self._take(body, claim, request)
        except Exception as exc:
            if not self.fetch.retryable(exc):
                raise
            self.fetch.attempts.failed(exc)
        self._fetch_claim(claim)
        self._helper()

    def _helper(self) -> None:
        while not self.stop.is_set() and not self._retire():
            claim = self.plan.claim(None if self.wanted == 1 else self.piece)
            if claim is None:
                self._retire(force=True)
                return
            self._fetch_claim(claim)

    def _retire(self, force: bool = False) -> bool:
        """True for a worker that should stop: there are more than wanted (or nothing is left)."""
        with self.plan.lock:
            if force or self.running > self.wanted:
                self.running -= 1
                return True
            return False

    def _fetch_claim(self, claim: Claim) -> None:
        try:
            while claim.pos < claim.end and not self.stop.is_set():
                try:
                    self._request(claim)
                except Resolve:
                    self.resolves += 1
                    if self.resolves > 3 * self.fetch.connections + 3:
                        raise
                    self.target = self.fetch.url
                except Exception as exc:
                    if not self.fetch.retryable(exc):
                        raise
                    self.fetch.attempts.failed(exc)
        finally:
            self.plan.release(claim)

    def _request(self, claim: Claim) -> None:
        target = self.target
        open_ended = claim.end == self.plan.size
        headers = {"Range": f"bytes={claim.pos}-" if open_ended else f"bytes={claim.pos}-{claim.end - 1}"}
        if self.first.if_range:
            headers["If-Range"] = self.first.if_range
        auth = self.fetch.auth if _same_origin(target, self.fetch.url) else None  # no credentials to another host
        with self.fetch.client.stream("GET", target, headers=headers, auth=auth) as response:
            if response.status_code in (403, 410) and target != self.fetch.url:
                raise Resolve()
            if target == self.fetch.url and response.url != self.fetch.url:
                self.target = str(response.url)  # resolved again: the new signed URL
            self._receive(response, claim, fast=open_ended)

    def _receive(self, response: httpx.Response, claim: Claim, *, fast: bool) -> None:
        self._check(response, claim)
        chunks = http_fastpath.body_chunks(response, self.fetch.stall_timeout, keep_connection=not fast)
        self._take(self.fetch.attempts.until_deadline(chunks), claim, response.request)

    def _take(self, chunks: Iterator[bytes], claim: Claim, request: httpx.Request) -> None:
        """A body's bytes into the sink at the claim's position, until the claim ends."""
        put, plan = self.sink.put, self.plan
        for chunk in chunks:
            if self.stop.is_set():
                return
            size = plan.room(claim, len(chunk))
            if size:
                put(claim.pos, chunk[:size] if size < len(chunk) else chunk)
                plan.advance(claim, size)
            if claim.pos >= claim.end:
                return  # the rest is another worker's now: this connection closes
        if claim.pos < claim.end:
            raise httpx.ReadError(f"connection closed at byte {claim.pos}, before {claim.end}", request=request)

    def _check(self, response: httpx.Response, claim: Claim) -> None:
        code = response.status_code
        if code in (200, 416):
            raise Changed(f"a range request was answered HTTP {code}: {self.fetch.url} changed")
        self.fetch.check_status(response)
        found = parse_content_range(response.headers.get("content-range", ""))
        if found is None or found[0] != claim.pos or found[2] != self.plan.size or found[1] < found[0]:
            raise Inconsistent(
                f"asked {self.fetch.url} for bytes from {claim.pos} of {self.plan.size}, "
                f"got Content-Range {response.headers.get('content-range')!r}"
            )
        etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
        if (self.first.etag and etag != self.first.etag) or (self.first.last_modified and modified != self.first.last_modified):
            raise Changed(f"{self.fetch.url} changed while it was downloaded (validator {etag or modified!r})")

    def _save_journal(self) -> None:
        if self.journal is not None:
            self.journal(self.plan.arrived())


def _same_origin(a: str, b: str) -> bool:
    ua, ub = httpx.URL(a), httpx.URL(b)
    return (ua.scheme, ua.host, ua.port) == (ub.scheme, ub.host, ub.port)


# --- the journal beside a staging file ----------------------------------------------------


def write_journal(path: Path, meta: dict) -> None:
    """Replace the small JSON beside the staging file; a kill -9 leaves the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, path)


def hashing(copy: Copy) -> Callable[[Iterator[bytes]], None]:
    def consume(chunks: Iterator[bytes]) -> None:
        copy.feed(chunks)

    return consume
