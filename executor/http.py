"""Resumable HTTP downloads over httpx.

A download writes into a partial file (with a small `.json` beside it naming the URL
and the validator, ETag or Last-Modified). A dropped connection or a stall is retried
with backoff and resumed with Range + If-Range; re-running the command after a kill
resumes from the partial file. A server that answers 200 to a Range request, whose
validator changed, or whose Content-Range starts elsewhere restarts the file from zero.
httpx errors are translated to ours here and nowhere else.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import httpx

from executor import durable, interrupt
from executor.config import HttpSettings  # noqa: F401  (re-exported: callers import it from here too)
from executor.events import Meter
from executor import segmented
from executor.http_fastpath import body_chunks, watch_request, watch_response
from executor.transfer import Copy, closing_output, hash_file, translate_write_error
from executor.upstream import Validators
from manifests.version import VERSION
from manifests.errors import ChecksumMismatch, ConfigError, DataPackError, LengthError, NetworkError

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _refuse_odd_redirects(response: httpx.Response) -> None:
    if response.has_redirect_location:
        target = response.url.join(response.headers["location"])
        if target.scheme not in ("http", "https"):
            raise NetworkError(
                f"{response.url} redirects to {target.scheme}:// ({target}), which is refused",
                hint="only http and https redirects are followed; check the URL or the mirror",
            )


class TLSContext(ssl.SSLContext):
    """The TLS context httpx would make (trust_env), whose CA certificates load at the first handshake.

    httpx loads them when a client is made (ssl.create_default_context(cafile=...)): 25-40 ms of
    every command that downloads, even when no URL is https (a LAN mirror, the benchmarks). The settings here are
    ssl.create_default_context()'s (tests/test_tls.py compares them); the CA certificates are
    httpx's choice, read from the environment when the context is made: SSL_CERT_FILE, else
    SSL_CERT_DIR, else certifi's bundle. They are loaded once, under a lock, by the first
    wrap_socket (httpcore's TLS) or wrap_bio (its TLS in TLS through an https proxy).
    """

    def __new__(cls) -> "TLSContext":
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        self.verify_mode = ssl.CERT_REQUIRED
        self.check_hostname = True
        if sys.version_info >= (3, 13):  # create_default_context sets these from 3.13 on
            self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        keylog = os.environ.get("SSLKEYLOGFILE")
        if keylog and hasattr(self, "keylog_filename") and not sys.flags.ignore_environment:
            self.keylog_filename = keylog
        if os.environ.get("SSL_CERT_FILE"):
            self._ca: tuple[str, str, str] | None = ("SSL_CERT_FILE", "cafile", os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            self._ca = ("SSL_CERT_DIR", "capath", os.environ["SSL_CERT_DIR"])
        else:
            self._ca = None  # certifi's bundle, located when it is loaded
        self._ca_lock = threading.Lock()
        self._ca_loaded = False

    def load_ca(self) -> None:
        if self._ca_loaded:
            return
        with self._ca_lock:
            if self._ca_loaded:
                return
            if self._ca is None:
                import certifi

                self._ca = ("certifi's bundle", "cafile", certifi.where())
            name, kind, path = self._ca
            try:
                self.load_verify_locations(**{kind: path})
            except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
                raise ConfigError(
                    f"the CA certificates in {path} ({name}) could not be loaded: {exc}",
                    hint="point SSL_CERT_FILE at a PEM file of CA certificates (or SSL_CERT_DIR at a folder of them), or unset it",
                ) from exc
            self._ca_loaded = True

    def wrap_socket(self, *args, **kwargs) -> ssl.SSLSocket:
        self.load_ca()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args, **kwargs) -> ssl.SSLObject:
        self.load_ca()
        return super().wrap_bio(*args, **kwargs)


def make_client(settings: HttpSettings = HttpSettings(), transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """Honours HTTP(S)_PROXY, NO_PROXY (httpx's trust_env), SSL_CERT_FILE and SSL_CERT_DIR (TLSContext)."""
    timeout = httpx.Timeout(settings.stall_timeout, connect=settings.connect_timeout)
    return httpx.Client(
        verify=TLSContext(),  # shared by every transport, proxies' included (httpx would load the CAs for each)
        timeout=timeout,
        follow_redirects=True,
        max_redirects=10,
        transport=transport,
        headers={"User-Agent": f"devops-cp/{VERSION}", "Accept-Encoding": "identity"},
        event_hooks={"request": [watch_request], "response": [watch_response, _refuse_odd_redirects]},
    )


class Retry(Exception):
    """A failure worth another try; `wait` is how long the server asked us to wait, if it said."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


class _Restart(Exception):
    """Throw the partial file away and start again from byte 0."""


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    parsed = email.utils.parsedate_to_datetime(value)
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _status_error(response: httpx.Response) -> NetworkError:
    code = response.status_code
    hints = {
        401: "the server wants credentials: set them in the config file's [credentials] or the recipe's environment variables",
        403: "access was refused: check the credentials or the URL",
        404: "the file is not there: the recipe's URL may be outdated, or a mirror lacks it",
    }
    return NetworkError(f"{response.url}: HTTP {code} {response.reason_phrase}", hint=hints.get(code))


@dataclass
class Download:
    """One file fetched into `partial` with `run()`, or streamed into a writer with `stream_into()`."""

    client: httpx.Client
    url: str
    partial: Path | None  # None for stream_into(), which writes no partial file
    what: str
    settings: HttpSettings = HttpSettings()
    meter: Meter | None = None
    size_cap: int | None = None  # exact size from the recipe or the OCI descriptor
    auth: httpx.Auth | None = None
    space_check: Callable[[int], None] = lambda remaining: None
    writeback: bool = False  # the file is synced before it becomes visible: start writing it out as it comes
    plain: bool = False  # WriteSettings.plain: no fast paths in the copy (executor/transfer.py)
    connections: int = 1  # at most this many at once for one large file (executor/segmented.py); 1: one stream
    connections_used: int = 0  # the most the last run() or stream_into() had open at once
    _single: bool = False  # ranges were answered inconsistently: one stream from now on
    _changes: int = 0  # times the file changed under a segmented download
    _copy: Copy | None = None
    _validator: str | None = None  # stream_into(): the ETag or Last-Modified its resumes ask for
    validators: Validators | None = None  # of the last answer whose body run() took: kept in the install record

    @property
    def meta_path(self) -> Path:
        return self.partial.with_name(self.partial.name + ".json")

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        self._copy = None

    def _journal(self) -> dict:
        """The JSON beside the partial file: url, validator, and for a segmented file its size and
        the byte ranges that arrived ({} when there is nothing to resume)."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        if not isinstance(meta, dict) or meta.get("url") != self.url or not self.partial.exists():
            self.discard()
            return {}
        return meta

    def _resume_state(self) -> tuple[int, str | None]:
        """Where one stream would resume: the file's size, or a segmented file's contiguous start."""
        meta = self._journal()
        if not meta:
            return 0, None
        ranges = meta.get("ranges")
        if ranges is None:
            return self.partial.stat().st_size, meta.get("validator")
        return (ranges[0][1] if ranges and ranges[0][0] == 0 else 0), meta.get("validator")

    def _as_one_stream(self, offset: int) -> None:
        """A segmented partial file continued by one stream: only its contiguous start is kept."""
        meta = self._journal()
        if meta.get("ranges") is not None:
            os.truncate(self.partial, offset)
            self.meta_path.write_text(json.dumps({"url": self.url, "validator": meta.get("validator")}))
            self._copy = None

    def _copy_at(self, offset: int) -> Copy:
        """The running hash of the first `offset` bytes, kept in memory between attempts."""
        if self._copy is None or self._copy.done != offset:
            self._copy = hash_file(self.partial, plain=self.plain) if offset else Copy(None, what=self.what, plain=self.plain)
        self._copy.meter, self._copy.limit = self.meter, None
        return self._copy

    def run(self, expected_sha256: str | None) -> Copy:
        """Fetch until complete, then check the hash. A mismatch deletes the partial file."""
        attempts = Attempts(self.url, self.settings, hint="the partial file is kept: run the same command again to resume")
        restarts = 0
        while True:
            try:
                copy = self._attempt(attempts, expected_sha256)
                break
            except _Restart:
                restarts += 1
                self.discard()
                if restarts > self.settings.retries:
                    raise NetworkError(f"{self.url}: the server keeps answering ranges wrongly") from None
            except (httpx.TransportError, Retry) as exc:
                attempts.failed(exc)
            except httpx.HTTPError as exc:
                raise NetworkError(f"download of {self.url} failed: {exc}") from exc
            except LengthError:
                self.discard()  # more bytes than declared: nothing of it is kept to resume from
                raise
        try:
            copy.check(expected_sha256)
        except ChecksumMismatch:
            self.discard()
            raise
        return copy

    def _attempt(self, attempts: Attempts, expected_sha256: str | None) -> Copy:
        offset, validator = self._resume_state()
        with self.client.stream("GET", self.url, headers=_resume_headers(offset, validator), auth=self.auth) as response:
            if response.status_code in (200, 206):
                self.validators = Validators.of_response(self.url, response)
            first = None
            if self.connections > 1 and not self._single:
                meta = self._journal()
                first = segmented.first_answer(response, offset, pinned=expected_sha256 is not None, resuming="ranges" in meta)
                if first is not None and "ranges" in meta:  # a segmented partial file: on with its journal
                    if meta.get("size") != first.size or meta.get("validator") != first.if_range:
                        raise _Restart()
                    body = attempts.until_deadline(body_chunks(response, self.settings.stall_timeout))
                    return self._segments(first, body, response.request, [tuple(r) for r in meta["ranges"]], attempts)
            self._as_one_stream(offset)
            return self._receive(response, offset, attempts, first)

    def _receive(self, response: httpx.Response, offset: int, attempts: Attempts, first: segmented.First | None = None) -> Copy:
        """One stream into the partial file. `first`: ranges would let several connections help;
        after segmented.PROBE seconds, they take over if the stream is slow enough to need them."""
        code = response.status_code
        if code == 416:
            match = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("content-range", ""))
            if offset and match and int(match.group(1)) == offset:
                return self._copy_at(offset)  # the partial file was already complete
            raise _Restart()
        _check_status(response)
        start, total = _body_range(response)
        if code == 206 and start != offset:
            raise _Restart()
        offset = start  # 0 after a 200: the server ignored Range, or the file changed (If-Range)
        copy = self._copy_at(offset)
        self._expect(copy, total)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.meta_path.write_text(json.dumps({"url": self.url, "validator": _validator(response)}))
        reserve = copy.limit - copy.done if copy.limit is not None else 0
        chunks = attempts.until_deadline(body_chunks(response, self.settings.stall_timeout))
        probe = segmented.Probe(first.size, offset) if first is not None else None
        with closing_output(open(self.partial, "ab" if offset else "wb"), reserve=reserve, plain=self.plain) as out:
            copy.out, copy.writeback, copy.write_thread = out, self.writeback, True  # a socket's bytes: see WriteThread
            try:
                copy.feed(probe.watch(chunks) if probe else chunks)
            finally:
                copy.out = None
        if probe is not None and probe.switch:
            return self._segments(first, chunks, response.request, [(0, copy.done)], attempts, copy, probe.rate)
        if total is not None and copy.done < total:
            raise Retry(f"connection closed at {copy.done} of {total} bytes")
        return copy

    def _segments(
        self, first: segmented.First, body: Iterator[bytes], request: httpx.Request, ranges: list, attempts: Attempts,
        copy: Copy | None = None, lead_rate: float | None = None,
    ) -> Copy:
        """The rest of the file over several connections, into the preallocated partial file; `body`
        goes on as the first of them. `copy` has hashed the bytes before them already (a stream that
        was slow for one connection), else the partial file's arrived ranges are read back to hash."""
        size = first.size
        if self.size_cap is not None and size > self.size_cap:
            raise LengthError(f"{self.what} is {size} bytes, longer than the {self.size_cap} declared for it", hint="nothing was installed")
        plan = segmented.Plan(size, ranges, window=None)
        if copy is None:
            copy = Copy(None, what=self.what, limit=size, plain=self.plain)
            self.space_check(size - plan.received)
            if self.meter is not None:
                self.meter.restart(plan.received, size)
        copy.meter, plan.consumed = None, copy.done  # progress counts arrived bytes, not hashed ones
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        journal = {"url": self.url, "validator": first.if_range, "size": size}
        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not self.plain:
                with open(fd, "r+b", buffering=0, closefd=False) as out:
                    durable.reserve(out, size)
            os.ftruncate(fd, size)
            segmented.write_journal(self.meta_path, {**journal, "ranges": ranges})
            run = segmented.Segmented(
                self._fetch_for_segments(attempts, self.meter),
                first, plan, segmented.FileSink(fd), copy.feed, piece=segmented.PIECE,
                journal=lambda arrived: segmented.write_journal(self.meta_path, {**journal, "ranges": arrived}),
                writeback_fd=fd if self.writeback and not self.plain else None,
            )
            try:
                run.run(body, request, lead_rate)
            finally:
                self.connections_used = max(self.connections_used, run.used)
        except segmented.Inconsistent as exc:
            self._after_inconsistent(exc)
            raise _Restart() from None
        except OSError as exc:
            raise translate_write_error(exc, str(self.partial), size) from exc
        finally:
            os.close(fd)
        self._copy = None
        return copy

    def _after_inconsistent(self, exc: segmented.Inconsistent) -> None:
        """A new version may go on over several connections once; a server whose ranges cannot be
        trusted (or whose validator keeps changing) gets one stream from now on."""
        self._single = not isinstance(exc, segmented.Changed) or self._changes > 0
        self._changes += 1

    def _fetch_for_segments(self, attempts: Attempts, meter: Meter | None) -> segmented.Fetch:
        return segmented.Fetch(
            self.client, self.url, self.auth, self.settings.stall_timeout, self.connections, attempts,
            retryable=lambda exc: isinstance(exc, (httpx.TransportError, Retry)), check_status=_check_status, meter=meter,
        )

    def _expect(self, copy: Copy, total: int | None) -> None:
        """Before a body's first byte: its length cap, the space it needs, the meter's new start."""
        caps = [c for c in (total, self.size_cap) if c is not None]
        copy.limit = min(caps) if caps else None
        size = total if total is not None else self.size_cap
        self.space_check(size - copy.done if size is not None else 0)
        if self.meter is not None:
            self.meter.restart(copy.done, total or self.size_cap)

    def stream_into(self, out: BinaryIO, expected_sha256: str) -> Copy:
        """Fetch the whole body into `out`, forward only (say, a compressor inside an archive).

        Hashed on the way and capped at `size_cap`, through `Copy.feed`; `partial` is never
        touched. A drop or a stall is resumed here, with Range (+ If-Range) from the bytes
        already written; a 200 to that (the server ignored Range, or the file changed) is read
        past those bytes without writing or hashing them again, so the hash covers exactly
        what was written and changed content fails the check. Written bytes cannot be taken
        back: a wrong length or checksum is final, and so is a range that starts elsewhere.
        """
        copy = Copy(out, what=self.what, meter=self.meter, plain=self.plain)
        attempts = Attempts(self.url, self.settings, hint="nothing of it was kept: run the same command again")
        self._validator = None
        while True:
            try:
                self._stream_attempt(copy, attempts)
                break
            except (httpx.TransportError, Retry) as exc:
                attempts.failed(exc)
            except httpx.HTTPError as exc:
                raise NetworkError(f"download of {self.url} failed: {exc}") from exc
        copy.check(expected_sha256, self.size_cap)
        return copy

    def _stream_attempt(self, copy: Copy, attempts: Attempts) -> None:
        done = copy.done
        with self.client.stream("GET", self.url, headers=_resume_headers(done, self._validator), auth=self.auth) as response:
            code = response.status_code
            if code == 416:
                raise NetworkError(f"{self.url} refused to resume at byte {done} (HTTP 416): it may have changed", hint=_FORWARD_ONLY)
            _check_status(response)
            start, total = _body_range(response)
            if code == 206 and start != done:
                raise NetworkError(f"{self.url} sent a range from byte {start} when asked for byte {done}", hint=_FORWARD_ONLY)
            if total is not None and total < done:
                raise NetworkError(f"{self.url} is now {total} bytes, fewer than the {done} already written: it changed", hint=_FORWARD_ONLY)
            self._validator = self._validator or _validator(response)
            self._expect(copy, total)
            first = segmented.first_answer(response, 0, pinned=True) if self.connections > 1 and not self._single and not done else None
            body = attempts.until_deadline(_skip(body_chunks(response, self.settings.stall_timeout), done - start))  # after a 200: what was written already
            probe = segmented.Probe(first.size, 0) if first is not None else None
            copy.feed(probe.watch(body) if probe else body)
            if probe is not None and probe.switch:
                self._stream_segments(first, body, response.request, copy, attempts, probe.rate)
        if total is not None and copy.done < total:
            raise Retry(f"connection closed at {copy.done} of {total} bytes")

    def _stream_segments(self, first: segmented.First, body: Iterator[bytes], request: httpx.Request, copy: Copy, attempts: Attempts, lead_rate: float) -> None:
        """The rest over several connections into a bounded window in memory, written out in order."""
        self._validator = first.if_range
        plan = segmented.Plan(first.size, [(0, copy.done)], window=segmented.STREAM_WINDOW)
        plan.consumed = copy.done
        piece = segmented.STREAM_WINDOW // self.connections  # every connection's piece fits in the window at once
        run = segmented.Segmented(self._fetch_for_segments(attempts, None), first, plan, segmented.MemorySink(), copy.feed, piece=piece)
        try:
            run.run(body, request, lead_rate)
        except segmented.Inconsistent as exc:
            self._after_inconsistent(exc)  # what was written stays; one stream goes on from there (If-Range)
            raise Retry(str(exc)) from None
        finally:
            self.connections_used = max(self.connections_used, run.used)


_FORWARD_ONLY = "the bytes already streamed cannot be taken back: run the same command again to start over"


class Attempts:
    """The retry budget of one file, shared by run() and stream_into(): backoff, Retry-After, deadline."""

    def __init__(self, url: str, settings: HttpSettings, *, hint: str):
        self.url, self.settings, self.hint = url, settings, hint
        self.failures = 0
        self.deadline = time.monotonic() + settings.deadline if settings.deadline else None

    def failed(self, exc: Exception) -> None:
        """Wait before the next attempt, or raise NetworkError when retries or time are spent;
        after Ctrl-C (a read it cut short), Interrupted instead."""
        interrupt.check()
        refused = _certificate_refused(exc)
        if refused is not None:  # the same certificate will be refused again: no retries, no backoff
            raise NetworkError(
                f"{self.url}: the server's TLS certificate was refused: {refused}",
                hint="if the server is right, trust its CA: SSL_CERT_FILE=BUNDLE.pem (or SSL_CERT_DIR); nothing was installed",
            ) from exc
        self.failures += 1
        if self.failures > self.settings.retries:
            raise NetworkError(
                f"download of {self.url} failed after {self.failures} attempts: {exc or type(exc).__name__}", hint=self.hint
            ) from exc
        wait = getattr(exc, "wait", None)
        backoff = min(self.settings.max_backoff, self.settings.backoff * 2 ** (self.failures - 1))
        pause = (min(wait, 300.0) if wait is not None else backoff) * (1 + random.uniform(0, self.settings.jitter))
        if self.deadline is not None and time.monotonic() + pause > self.deadline:
            raise self.past_deadline() from exc  # waiting would only overrun it
        self.settings.sleep(pause)
        interrupt.check()

    def past_deadline(self) -> NetworkError:
        return NetworkError(f"download of {self.url} ran past its deadline", hint=self.hint)

    def until_deadline(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield chunk
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise self.past_deadline()


def _certificate_refused(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate error under httpx's and httpcore's ConnectError, when that is what failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _resume_headers(offset: int, validator: str | None) -> dict[str, str]:
    if not offset:
        return {}
    return {"Range": f"bytes={offset}-", **({"If-Range": validator} if validator else {})}


def _check_status(response: httpx.Response) -> None:
    """Anything but a 200 or 206 (416 is the caller's) is retried or refused here."""
    code = response.status_code
    if code in RETRYABLE_STATUS:
        raise Retry(f"HTTP {code}", retry_after(response.headers.get("retry-after")))
    if code not in (200, 206):
        raise _status_error(response)


def _body_range(response: httpx.Response) -> tuple[int, int | None]:
    """Where a 200's or 206's body starts in the file, and the file's size where it is told.

    A 206 whose Content-Range cannot be read starts at -1, which matches no offset asked for.
    """
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if not match:
            return -1, None
        return int(match.group(1)), int(match.group(3)) if match.group(3) != "*" else None
    length = response.headers.get("content-length", "")
    return 0, int(length) if length.isdigit() else None


def _validator(response: httpx.Response) -> str | None:
    return response.headers.get("etag") or response.headers.get("last-modified")


def _skip(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """The chunks without their first `count` bytes (read and dropped: neither written nor hashed)."""
    for chunk in chunks:
        if count:
            cut = min(count, len(chunk))
            chunk, count = chunk[cut:], count - cut
            if not chunk:
                continue
        yield chunk


@dataclass(frozen=True)
class Fetched:
    """A small document read whole: what fetch_small returns."""

    url: str
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def read_limited(response: httpx.Response, limit: int, what: str, *, too_long: type[DataPackError] = NetworkError) -> bytes:
    """A response's body, refused once it grows past `limit` bytes (a `too_long` error)."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_long(f"{what} is larger than the {limit} bytes expected of it", hint="the server sent something other than that file: check the URL or the mirror")
    return bytes(body)


def fetch_small(
    client: httpx.Client, url: str, *, limit: int = 1 << 20, auth: httpx.Auth | None = None, headers: dict | None = None, too_long: type[DataPackError] = NetworkError
) -> Fetched:
    """A small document (a checksum file, a JSON index): bounded, read into memory. Longer than
    `limit`: `too_long` (a checksum file passes LengthError: bad data, exit 3, not the network)."""
    try:
        with client.stream("GET", url, auth=auth, headers=headers or {}) as response:
            if response.status_code >= 400:
                raise _status_error(response)
            return Fetched(str(response.url), response.headers, read_limited(response, limit, url, too_long=too_long))
    except httpx.HTTPError as exc:
        interrupt.check()  # a read Ctrl-C cut short is not a network failure
        raise NetworkError(f"fetching {url} failed: {exc}") from exc


def parse_sha256sum(text: str, filename: str | None) -> str:
    """A `sha256sum`-format checksum file: the line for `filename`, or its only line."""
    entries = []
    for line in text.splitlines():
        match = re.match(r"^([0-9a-fA-F]{64})(?:\s+\*?(.+?))?\s*$", line.strip())
        if match:  # "HASH  NAME", or a bare "HASH" as some projects publish
            entries.append((match.group(1).lower(), match.group(2) or ""))
    named = [h for h, name in entries if filename and Path(name).name == filename]
    if named:
        return named[0]
    if len(entries) == 1:
        return entries[0][0]
    raise NetworkError(f"the checksum file has no entry for {filename!r}", hint="check the recipe's checksum_url")
