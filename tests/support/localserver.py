"""A real HTTP/1.1 server on 127.0.0.1 for the tests, tools/ and bench/ (not part of the product).

Standard library only. It serves two audiences:

* the test suite, which injects faults per path (:class:`Fault`): dropped
  connections, ignored ranges, lying lengths, error statuses, redirects,
  trickles and stalls;
* benchmarks, which need it to be much faster than the client: the no-fault
  path of a file sends it with ``os.sendfile`` straight from the page cache.

Usage::

    with LocalServer() as srv:
        url = srv.add("/db.tar.gz", data)            # bytes, or a path on disk
        srv.set_fault("/db.tar.gz", Fault(drop_after=1000))
        ...
        assert srv.bytes_sent("/db.tar.gz") < 1.6 * len(data)

Command line (benchmarks, manual use)::

    PYTHONPATH=tests python -m support.localserver DIR [--port N]

serves every file under DIR at its relative path and prints the base URL on
one line.

Order of decisions for a request: custom route or resource lookup (404) ->
Basic auth (401) -> ``Fault.statuses`` -> ``Fault.redirect_to`` -> conditional
headers (304) -> range (206/416, or 200) -> body faults.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import email.utils
import hashlib
import hmac
import http.server
import json
import logging
import mimetypes
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:
    import ssl

__all__ = ["Fault", "LocalServer", "RequestContext", "RequestRecord", "main"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024  # body chunk on the Python (faulted) path
_SENDFILE_CHUNK = 8 * 1024 * 1024  # one sendfile call; bounds the accounting granularity
_SEND_CHUNK = 1024 * 1024  # one send() of in-memory data on the fast path
_MAX_DISCARD = 1024 * 1024  # request bodies larger than this on non-route paths close the connection
_POLL = 0.2  # the longest a paused handler goes without looking at the stop flag
_MSG_PEEK_NOWAIT = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


@dataclass
class Fault:
    """Misbehaviour injected for one path. Several may be combined."""

    drop_after: int | None = None  # close the connection after sending this many body bytes
    drop_times: int = 1  # how many requests get dropped (then serve normally)
    ignore_range: bool = False  # always answer 200 with the full body
    trickle_bps: int | None = None  # send at most this many bytes per second (small writes, sleeps)
    delay_per_chunk: float = 0.0  # sleep between 64 KiB chunks (a slow but moving body)
    wrong_length: int | None = None  # declare this Content-Length instead of the real one (send the real body)
    extra_body: bytes = b""  # append these bytes beyond the declared length
    range_shift: int = 0  # a 206 whose Content-Range and body start this many bytes off the asked offset
    range_shift_from: int = 0  # ... only for ranges asked from this byte on (the first answers stay right)
    statuses: list[int] = field(default_factory=list)  # answer these first, one per request, then normally
    retry_after: int | None = None  # Retry-After header sent with those statuses
    redirect_to: str | None = None  # answer 302 with this Location
    stall_after: int | None = None  # send this many bytes, then stop sending (socket open) for stall_seconds
    stall_seconds: float = 30.0
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length (Accept-Ranges and validators kept)


@dataclass
class RequestRecord:
    """One request as the server saw it. ``headers`` is case-insensitive."""

    method: str
    path: str
    headers: dict[str, str]
    range: str | None
    status: int | None = None  # None until the response line was decided
    body_bytes_sent: int = 0  # body bytes handed to the kernel, including Fault.extra_body
    query: str = ""


class _Headers(dict):
    """A dict with lower-cased keys whose lookups ignore case."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__((str(k).lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class RequestContext:
    """What a custom route handler sees, and how it answers (``respond``/``json``)."""

    server: "LocalServer"
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    _response: tuple[int, bytes, dict[str, str]] | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def respond(
        self,
        status: int = 200,
        body: bytes | str = b"",
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, str):
            body = body.encode()
        all_headers = {"Content-Type": content_type}
        all_headers.update(headers or {})
        self._response = (status, bytes(body), all_headers)

    def json(self, obj: Any, status: int = 200, *, headers: dict[str, str] | None = None) -> None:
        self.respond(status, json.dumps(obj).encode(), content_type="application/json", headers=headers)


class _Abort(Exception):
    """Stop handling this connection now (drop, stop(), peer gone)."""


@dataclass
class _Snapshot:
    """A resource as it is for one request: an open file or bytes, with validators."""

    size: int
    etag: str | None
    last_modified: str | None
    content_type: str
    auth: tuple[str, str] | None
    data: memoryview | None = None
    fd: int | None = None


class _Resource:
    def __init__(self, data: Any, etag: str | None, last_modified: str | None,
                 content_type: str, auth: tuple[str, str] | None) -> None:
        self.content_type = content_type
        self.auth = auth
        self.etag_mode = etag  # "auto", None, or an explicit tag
        self.lm_mode = last_modified  # "auto", None, or an explicit HTTP date
        self.lm_floor = 0.0  # replace() pushes Last-Modified past the old one
        self.generation = 0
        self._set_data(data)

    def _set_data(self, data: Any) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.data: bytes | None = bytes(data)
            self.path: Path | None = None
            self.auto_etag = '"%s"' % hashlib.sha256(self.data).hexdigest()[:32]
            self.mtime = max(time.time(), self.lm_floor)
        else:
            self.data = None
            self.path = Path(os.fspath(data))
            st = self.path.stat()  # fail at add() time, not at the first request
            if not self.path.is_file():
                raise ValueError(f"not a regular file: {self.path}")
            self.mtime = max(st.st_mtime, self.lm_floor)

    def replace(self, data: Any) -> None:
        try:
            old_etag, old_lm = self.current_validators()
        except OSError:  # the old file is gone already
            old_etag, old_lm = None, None
        old_time = _http_date(old_lm) if old_lm else None
        self.lm_floor = old_time + 1 if old_time is not None else 0.0
        if self.etag_mode is not None:
            self.etag_mode = "auto"
        if self.lm_mode is not None:
            self.lm_mode = "auto"
        self.generation += 1
        self._set_data(data)
        self._old_etag = old_etag

    def current_validators(self) -> tuple[str | None, str | None]:
        if self.data is not None:
            return self._etag(self.auto_etag), self._lm(self.mtime)
        st = self.path.stat()  # type: ignore[union-attr]
        return self._file_validators(st)

    def _file_validators(self, st: os.stat_result) -> tuple[str | None, str | None]:
        auto = '"%x-%x"' % (st.st_size, st.st_mtime_ns)
        return self._etag(auto), self._lm(max(st.st_mtime, self.lm_floor))

    def _etag(self, auto: str) -> str | None:
        if self.etag_mode is None:
            return None
        if self.etag_mode != "auto":
            return self.etag_mode
        if self.generation and auto == getattr(self, "_old_etag", None):
            # Same bytes replaced again: a replace still yields a new tag.
            return auto[:-1] + '-%d"' % self.generation
        return auto

    def _lm(self, mtime: float) -> str | None:
        if self.lm_mode is None:
            return None
        if self.lm_mode != "auto":
            return self.lm_mode
        return email.utils.formatdate(int(mtime), usegmt=True)

    def snapshot(self) -> _Snapshot:
        """Open the resource for one request. The caller closes ``fd``."""
        if self.data is not None:
            etag, lm = self.current_validators()
            return _Snapshot(len(self.data), etag, lm, self.content_type, self.auth,
                             data=memoryview(self.data))
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # type: ignore[arg-type]
        try:
            st = os.fstat(fd)
            etag, lm = self._file_validators(st)
        except BaseException:
            os.close(fd)
            raise
        return _Snapshot(st.st_size, etag, lm, self.content_type, self.auth, fd=fd)


class _FaultState:
    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.statuses_left = list(fault.statuses)
        self.drops_left = fault.drop_times


def _normalize_path(path: str) -> str:
    path = urlsplit(path).path if "://" in path else path.split("?", 1)[0]
    return path if path.startswith("/") else "/" + path


def _quote_etag(etag: str) -> str:
    if etag.startswith('"') or etag.startswith('W/"'):
        return etag
    return f'"{etag}"'


def _parse_range(value: str, size: int) -> tuple[int, int] | None | str:
    """``(start, end)`` inclusive, ``None`` to ignore the header, ``"416"`` if unsatisfiable.

    Only one range is honoured; a multi-range or malformed header is ignored
    (served as 200), which RFC 9110 allows.
    """
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":  # suffix: the last N bytes
            n = int(last)
            if n < 0:
                return None
            if n == 0 or size == 0:
                return "416"
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last != "" else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    if start >= size:
        return "416"
    return start, size - 1 if end is None else min(end, size - 1)


def _http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devops-cp-localserver/0.1"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: "_HTTPServer"

    # -- connection lifecycle -------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.owner._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._connection_closed(self.connection)

    def handle(self) -> None:
        try:
            if self.server.owner.tls is not None:
                self.connection.do_handshake()  # here, in the connection's thread, not in the accepting one
            super().handle()
        except (OSError, _Abort):
            self.close_connection = True

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s - %s", self.address_string(), format % args)

    # -- dispatch --------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        path = unquote(parts.path) or "/"
        self.rec = RequestRecord(self.command, path, _Headers(self.headers.items()),
                                 self.headers.get("Range"), query=parts.query)
        owner._record(self.rec)
        body = self._read_request_body()
        try:
            route = owner._routes.get((self.command, path))
            if route is not None:
                if not self._apply_status_faults(path):
                    self._serve_route(route, path, parts.query, body)
                return
            snap = owner._snapshot(path)
            if snap is None:
                self._simple(404, b"not found\n")
                return
            try:
                self._serve_resource(path, snap)
            finally:
                if snap.fd is not None:
                    os.close(snap.fd)
        except (OSError, _Abort):
            self.close_connection = True
            raise _Abort from None

    def _read_request_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True  # chunked request bodies are not supported
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            return b""
        if n > _MAX_DISCARD and (self.command, unquote(urlsplit(self.path).path)) not in self.server.owner._routes:
            self.close_connection = True
            return b""
        return self.rfile.read(n)

    # -- small responses ---------------------------------------------------------

    def _start(self, status: int, headers: dict[str, str] | list[tuple[str, str]]) -> None:
        self.rec.status = status
        self.send_response(status)
        for name, value in (headers.items() if isinstance(headers, dict) else headers):
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _simple(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                content_type: str = "text/plain; charset=utf-8") -> None:
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        self._start(status, all_headers)
        if body and self.command != "HEAD":
            self._send_bytes(memoryview(body))

    def _apply_status_faults(self, path: str) -> bool:
        """Answer with an injected status or redirect; True when it did."""
        state = self.server.owner._fault_state(path)
        if state is None:
            return False
        fault = state.fault
        with self.server.owner._lock:
            status = state.statuses_left.pop(0) if state.statuses_left else None
        if status is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._simple(status, f"injected status {status}\n".encode(), headers)
            return True
        if fault.redirect_to is not None:
            self._simple(302, b"", {"Location": fault.redirect_to})
            return True
        return False

    def _serve_route(self, route: Callable[[RequestContext], None], path: str, query: str, body: bytes) -> None:
        ctx = RequestContext(self.server.owner, self.command, path, parse_qs(query, keep_blank_values=True),
                             self.rec.headers, body)
        try:
            route(ctx)
        except Exception:
            log.exception("route handler for %s %s failed", self.command, path)
            self._simple(500, b"route handler raised\n")
            return
        if ctx._response is None:
            self._simple(500, b"route handler did not respond\n")
            return
        status, data, headers = ctx._response
        content_type = headers.pop("Content-Type", "application/octet-stream")
        self._simple(status, data, headers, content_type)

    # -- resources ---------------------------------------------------------------

    def _authorized(self, auth: tuple[str, str]) -> bool:
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{auth[0]}:{auth[1]}".encode()
        return hmac.compare_digest(given, expected)

    def _if_range_matches(self, snap: _Snapshot) -> bool:
        value = self.headers.get("If-Range")
        if value is None:
            return True
        value = value.strip()
        if value.startswith('"') or value.startswith("W/"):
            # Strong comparison: a weak tag never matches.
            return snap.etag is not None and not snap.etag.startswith("W/") and value == snap.etag
        if snap.last_modified is None:
            return False
        asked, current = _http_date(value), _http_date(snap.last_modified)
        return asked is not None and asked == current

    def _not_modified(self, snap: _Snapshot) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            if snap.etag is None:
                return False
            tags = [t.strip() for t in inm.split(",")]
            plain = snap.etag.removeprefix("W/")
            return "*" in tags or any(t.removeprefix("W/") == plain for t in tags)
        ims = self.headers.get("If-Modified-Since")
        if ims is not None and snap.last_modified is not None:
            asked, current = _http_date(ims), _http_date(snap.last_modified)
            return asked is not None and current is not None and current <= asked
        return False

    def _serve_resource(self, path: str, snap: _Snapshot) -> None:
        if self.command not in ("GET", "HEAD"):
            self._simple(405, b"method not allowed\n", {"Allow": "GET, HEAD"})
            return
        if snap.auth is not None and not self._authorized(snap.auth):
            self._simple(401, b"authentication required\n",
                         {"WWW-Authenticate": 'Basic realm="devops-cp-localserver", charset="UTF-8"'})
            return
        if self._apply_status_faults(path):
            return
        state = self.server.owner._fault_state(path)
        fault = state.fault if state is not None else None

        validators = []
        if snap.etag is not None:
            validators.append(("ETag", snap.etag))
        if snap.last_modified is not None:
            validators.append(("Last-Modified", snap.last_modified))

        if self._not_modified(snap):
            self._start(304, validators)
            return

        size = snap.size
        status, start, end = 200, 0, size - 1
        range_header = self.headers.get("Range")
        if range_header and not (fault and fault.ignore_range) and self._if_range_matches(snap):
            parsed = _parse_range(range_header, size)
            if parsed == "416":
                self._simple(416, b"range not satisfiable\n", {"Content-Range": f"bytes */{size}"})
                return
            if parsed is not None:
                status, (start, end) = 206, parsed  # type: ignore[misc]
                if fault and fault.range_shift and start >= fault.range_shift_from:
                    start = min(max(start + fault.range_shift, 0), size - 1)
                    end = min(max(end + fault.range_shift, start), size - 1)
        length = end - start + 1 if size else 0

        drop_at = None
        if fault is not None and fault.drop_after is not None and self.command == "GET":
            with self.server.owner._lock:
                if state.drops_left > 0 and fault.drop_after < length:  # type: ignore[union-attr]
                    state.drops_left -= 1  # type: ignore[union-attr]
                    drop_at = fault.drop_after
        if fault is not None and (fault.wrong_length is not None or fault.extra_body):
            self.close_connection = True  # the framing is broken on purpose: never reuse it

        headers = [("Content-Type", snap.content_type)]
        chunked = fault is not None and fault.chunked
        declared = fault.wrong_length if fault is not None and fault.wrong_length is not None else length
        headers.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(declared)))
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        if not (fault and fault.ignore_range):
            headers.append(("Accept-Ranges", "bytes"))
        headers.extend(validators)
        self._start(status, headers)
        if self.command == "HEAD":
            return

        slow = fault is not None and (drop_at is not None or fault.trickle_bps or fault.delay_per_chunk
                                      or fault.stall_after is not None)
        owner = self.server.owner
        owner._body_started()
        try:
            if chunked:
                self._send_chunked(snap, start, length)
            elif slow:
                self._send_paced(snap, start, length, fault, drop_at)  # type: ignore[arg-type]
            elif snap.fd is not None:
                self._send_file(snap.fd, start, length)
            else:
                self._send_bytes(snap.data[start:start + length])  # type: ignore[index]
        finally:
            owner._body_finished()
        if fault is not None and fault.extra_body:
            self._send_bytes(memoryview(fault.extra_body))

    # -- body writers (each keeps rec.body_bytes_sent >= what the peer can have seen) --

    def _send_bytes(self, view: memoryview) -> None:
        sock = self.connection
        while view:
            n = min(len(view), _SEND_CHUNK, self._capped_chunk())
            self._wait_for_rate(n)
            self.rec.body_bytes_sent += n
            try:
                k = sock.send(view[:n])
            except BaseException:
                self.rec.body_bytes_sent -= n
                raise
            self.rec.body_bytes_sent -= n - k
            view = view[k:]

    def _send_chunked(self, snap: _Snapshot, start: int, length: int) -> None:
        """The body as HTTP/1.1 chunks of up to _CHUNK bytes, then the last, empty one (framing counted as body bytes)."""
        pos = 0
        while pos < length:
            n = min(_CHUNK, length - pos)
            data = os.pread(snap.fd, n, start + pos) if snap.fd is not None else bytes(snap.data[start + pos:start + pos + n])  # type: ignore[index]
            if not data:
                raise _Abort("file shrank while being served")
            self._send_bytes(memoryview(b"%x\r\n" % len(data) + data + b"\r\n"))
            pos += len(data)
        self._send_bytes(memoryview(b"0\r\n\r\n"))

    def _send_file(self, fd: int, offset: int, count: int) -> None:
        sock = self.connection
        if not hasattr(os, "sendfile") or sock.gettimeout() is not None or self.server.owner.tls is not None:
            while count > 0:
                data = os.pread(fd, min(count, _SEND_CHUNK), offset)
                if not data:
                    raise _Abort("file shrank while being served")
                self._send_bytes(memoryview(data))
                offset += len(data)
                count -= len(data)
            return
        out = sock.fileno()
        while count > 0:
            n = min(count, _SENDFILE_CHUNK, self._capped_chunk())
            self._wait_for_rate(n)
            self.rec.body_bytes_sent += n
            try:
                k = os.sendfile(out, fd, offset, n)
            except BaseException:
                self.rec.body_bytes_sent -= n
                raise
            self.rec.body_bytes_sent -= n - k
            if k == 0:
                raise _Abort("file shrank while being served")
            offset += k
            count -= k

    def _capped_chunk(self) -> int:
        rate = self.server.owner.rate_per_connection
        return max(16 * 1024, rate // 64) if rate else _SENDFILE_CHUNK

    def _wait_for_rate(self, n: int) -> None:
        """LocalServer(rate_per_connection=...): this connection's bytes go out no faster than that,
        whatever the request (a CDN's per-connection cap); idle time earns no credit."""
        rate = self.server.owner.rate_per_connection
        if not rate:
            return
        now = time.monotonic()
        due = max(getattr(self, "_rate_due", now), now)
        self._pause(due - now)
        self._rate_due = due + n / rate

    def _send_paced(self, snap: _Snapshot, start: int, length: int, fault: Fault, drop_at: int | None) -> None:
        chunk = _CHUNK
        if fault.trickle_bps:
            chunk = max(1, min(_CHUNK, fault.trickle_bps // 20))  # about 20 writes a second
        stall_at = fault.stall_after if fault.stall_after is not None and fault.stall_after < length else None
        t0 = time.monotonic()
        pos = 0
        while pos < length:
            if drop_at is not None and pos >= drop_at:
                self._drop()
            if stall_at is not None and pos >= stall_at:
                self._pause(fault.stall_seconds)
                stall_at = None
                t0 = time.monotonic() - (pos / fault.trickle_bps if fault.trickle_bps else 0)
            n = min(chunk, length - pos)
            for limit in (drop_at, stall_at):
                if limit is not None:
                    n = min(n, limit - pos)
            if fault.trickle_bps:
                self._pause(t0 + pos / fault.trickle_bps - time.monotonic())
            if fault.delay_per_chunk and pos:
                self._pause(fault.delay_per_chunk)
            if snap.fd is not None:
                data = memoryview(os.pread(snap.fd, n, start + pos))
                if not data:
                    raise _Abort("file shrank while being served")
            else:
                data = snap.data[start + pos:start + pos + n]  # type: ignore[index]
            self._send_bytes(data)
            pos += len(data)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Abort("fault: connection dropped")

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on stop() and give up when the peer has gone."""
        stopping = self.server.owner._stopping
        deadline = time.monotonic() + seconds
        while True:
            if stopping.is_set():
                raise _Abort("server stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([self.connection], [], [], min(left, _POLL))
            if not readable:
                continue
            try:
                peeked = self.connection.recv(1, _MSG_PEEK_NOWAIT)
            except BlockingIOError:
                continue
            if not peeked:
                raise _Abort("peer closed the connection")
            stopping.wait(min(left, _POLL))  # a pipelined request is waiting: it can wait


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: "LocalServer") -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.owner.tls is not None:
            sock = self.owner.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _Abort)):
            return
        super().handle_error(request, client_address)


class LocalServer:
    """A threaded HTTP/1.1 server on loopback with per-path fault injection.

    The socket is bound in ``__init__``, so ``base_url`` and ``add()``'s
    return value are known before ``start()``. A server runs once:
    ``start()`` after ``stop()`` is an error.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: "ssl.SSLContext | None" = None, rate_per_connection: int | None = None) -> None:
        """``tls``: a server-side context with its certificate loaded; the server then speaks https
        (without sendfile; the faults that pause, trickle_bps, stall_after and delay_per_chunk, need http).
        ``rate_per_connection``: bytes per second each connection may carry, as a CDN caps them."""
        self.tls = tls
        self.rate_per_connection = rate_per_connection
        self.bodies_in_flight = 0
        self.peak_bodies_in_flight = 0  # the most response bodies sent at once: connections used in parallel
        self._lock = threading.Lock()
        self._resources: dict[str, _Resource] = {}
        self._faults: dict[str, _FaultState] = {}
        self._routes: dict[tuple[str, str], Callable[[RequestContext], None]] = {}
        self._connections: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests: list[RequestRecord] = []
        self.connections_opened = 0  # TCP connections accepted: shows keep-alive reuse
        self._httpd = _HTTPServer((host, port), self)
        bound_host, bound_port = self._httpd.server_address[:2]
        url_host = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.host, self.port = str(bound_host), int(bound_port)
        self.base_url = f"{'https' if tls is not None else 'http'}://{url_host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self._stopping.is_set():
            raise RuntimeError("a stopped LocalServer cannot be started again; make a new one")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"localserver:{self.port}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and cut every open connection, including trickles and stalls."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout)
        with self._lock:
            connections = list(self._connections)
            threads = list(self._handler_threads)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections_opened += 1
            self._connections.add(conn)
            self._handler_threads.add(threading.current_thread())
        if self._stopping.is_set():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _body_started(self) -> None:
        with self._lock:
            self.bodies_in_flight += 1
            self.peak_bodies_in_flight = max(self.peak_bodies_in_flight, self.bodies_in_flight)

    def _body_finished(self) -> None:
        with self._lock:
            self.bodies_in_flight -= 1

    def _connection_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
            self._handler_threads.discard(threading.current_thread())

    # -- content ---------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + quote(_normalize_path(path), safe="/:@!$&'()*+,;=-._~")

    def add(
        self,
        path: str,
        data: bytes | os.PathLike[str] | str,
        *,
        etag: str | None = "auto",
        last_modified: str | None = "auto",
        content_type: str = "application/octet-stream",
        auth: tuple[str, str] | None = None,
    ) -> str:
        """Serve ``data`` (bytes, or a file read from disk per request) at ``path``; return its URL.

        ``etag="auto"`` derives a strong tag from the bytes' sha256 or the
        file's size and mtime; ``None`` sends no header; any other string is
        sent as given (quoted if it is not already).
        """
        if etag not in ("auto", None):
            etag = _quote_etag(etag)
        resource = _Resource(data, etag, last_modified, content_type, auth)
        path = _normalize_path(path)
        with self._lock:
            self._resources[path] = resource
        return self.url(path)

    def replace(self, path: str, data: bytes | os.PathLike[str] | str) -> None:
        """New content at ``path``: the ETag and Last-Modified change (unless they were disabled)."""
        path = _normalize_path(path)
        with self._lock:
            resource = self._resources.get(path)
            if resource is None:
                raise KeyError(f"nothing is served at {path}; use add()")
            resource.replace(data)

    def remove(self, path: str) -> None:
        with self._lock:
            self._resources.pop(_normalize_path(path), None)

    def set_fault(self, path: str, fault: Fault | None) -> None:
        """Inject ``fault`` on ``path`` (counters start afresh); ``None`` clears it."""
        path = _normalize_path(path)
        with self._lock:
            if fault is None:
                self._faults.pop(path, None)
            else:
                self._faults[path] = _FaultState(fault)

    def route(self, method: str, path: str, handler: Callable[[RequestContext], None]) -> None:
        """Answer ``method path`` with ``handler(ctx)``, which calls ``ctx.respond()`` or ``ctx.json()``."""
        with self._lock:
            self._routes[(method.upper(), _normalize_path(path))] = handler

    def _snapshot(self, path: str) -> _Snapshot | None:
        with self._lock:
            resource = self._resources.get(path)
            if resource is None:
                return None
            try:
                return resource.snapshot()
            except FileNotFoundError:
                return None

    def _fault_state(self, path: str) -> _FaultState | None:
        with self._lock:
            return self._faults.get(path)

    # -- accounting ----------------------------------------------------------------------

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def bytes_sent(self, path: str | None = None) -> int:
        """Body bytes sent, for one path or in all; includes error bodies and ``extra_body``."""
        want = _normalize_path(path) if path is not None else None
        with self._lock:
            records = list(self.requests)
        return sum(r.body_bytes_sent for r in records if want is None or r.path == want)


def _serve_directory(server: LocalServer, root: Path) -> int:
    count = 0
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        server.add("/" + rel, file, content_type=mimetypes.guess_type(rel)[0] or "application/octet-stream")
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.localserver",
                                     description="Serve every file under DIR over HTTP/1.1 on loopback.")
    parser.add_argument("dir", type=Path, metavar="DIR")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request to stderr")
    parser.add_argument("--rate-per-connection", type=int, default=None, metavar="BYTES", help="cap each connection at BYTES per second")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        parser.error(f"not a directory: {args.dir}")
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(message)s")

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server = LocalServer(args.host, args.port, rate_per_connection=args.rate_per_connection)
    count = _serve_directory(server, args.dir.resolve())
    with server:
        print(server.base_url, flush=True)
        print(f"serving {count} files from {args.dir}", file=sys.stderr, flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
