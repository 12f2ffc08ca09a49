"""The one place that goes beyond httpx's plain API: a response body read straight from the
connection's socket, through httpcore's documented `network_stream` response extension.

h11 parses an HTTP/1.1 body in Python and copies every byte three times on the way; for a
body of gigabytes that is a fifth of the client's CPU. When the body's length is known from
its headers, the first chunk still comes through h11 (what it buffered with the headers) and
the rest is read from the socket, up to that length. h11 then never sees the end of the body,
so httpcore closes the connection when the response is closed instead of reusing it.

It is used only with the httpcore major versions it was tested with (`supported`), and only
while `ENABLED`; anything else goes through httpx's `iter_raw()`, the reference path, which
tests/test_http_fastpath.py runs the download tests through as well.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpcore
import httpx

from executor import interrupt

TESTED_HTTPCORE_MAJOR = 1
SOCKET_READ = 1 << 20  # as transfer.CHUNK_SIZE: fewer Python round trips and recv calls per GiB


def supported(httpcore_version: str = httpcore.__version__) -> bool:
    """True for an httpcore whose connection closing after an unfinished h11 body was tested."""
    major = httpcore_version.split(".", 1)[0]
    return major.isdigit() and int(major) == TESTED_HTTPCORE_MAJOR


ENABLED = supported()  # tests set it False to run the plain path


def body_chunks(response: httpx.Response, stall_timeout: float, *, keep_connection: bool = False) -> Iterator[bytes]:
    """The raw bytes of a response's body; httpcore's read errors surface as httpx's.
    `keep_connection`: through h11, so that the connection can serve the next request (ranges).
    Ctrl-C shuts the connection's socket down: a read waiting on a silent server ends at once."""
    with interrupt.cancelled_by_ctrl_c(_shutdown_of(response)):
        yield from _body_chunks(response, stall_timeout, keep_connection)


def _body_chunks(response: httpx.Response, stall_timeout: float, keep_connection: bool) -> Iterator[bytes]:
    chunks = response.iter_raw()
    stream, length = raw_stream(response) if ENABLED and not keep_connection else (None, 0)
    if stream is None:
        yield from chunks
        return
    try:
        first = next(chunks, b"")  # what h11 already buffered, or one socket read
        yield first
        left = length - len(first)
        if left <= 0:
            yield from chunks  # h11 saw all of it: the connection may go back to the pool
            return
        while left > 0:
            data = read_socket(stream, min(SOCKET_READ, left), stall_timeout, response.request)
            if not data:
                return  # closed early: the caller sees the short count and resumes
            left -= len(data)
            yield data
    finally:
        chunks.close()  # closes the response's stream; httpcore then closes the connection


def raw_stream(response: httpx.Response) -> tuple[httpcore.NetworkStream | None, int]:
    """The connection's socket stream and the body's length, or (None, 0) where h11 must frame it:
    no socket (a test's mock transport), HTTP/2, chunked, close-delimited or empty bodies."""
    stream = response.extensions.get("network_stream")
    if stream is None or response.http_version not in ("HTTP/1.1", "HTTP/1.0") or "transfer-encoding" in response.headers:
        return None, 0
    length = response.headers.get("content-length", "")
    if not length.isdigit() or int(length) == 0:
        return None, 0
    return stream, int(length)


def read_socket(stream: httpcore.NetworkStream, size: int, stall_timeout: float, request: httpx.Request) -> bytes:
    """One read; httpcore's errors become the httpx errors its transport would have raised."""
    try:
        return stream.read(size, timeout=stall_timeout)
    except httpcore.ReadTimeout as exc:
        raise httpx.ReadTimeout(f"no data for {stall_timeout:g} s", request=request) from exc
    except httpcore.ReadError as exc:
        raise httpx.ReadError(f"connection failed: {exc or type(exc).__name__}", request=request) from exc


def watch_request(request: httpx.Request) -> None:
    """A request event hook: until its answer's headers are in, Ctrl-C shuts down the socket of a
    connection it opened (httpcore's `trace` extension names it). A reused connection is not seen."""
    request.extensions["trace"] = _trace


def watch_response(response: httpx.Response) -> None:
    """A response event hook: the headers are in (the body is body_chunks' to watch)."""
    interrupt.while_waiting_here(None)


def _trace(event: str, info: dict) -> None:
    # start_tls: the TLS stream's socket replaces the plain one (wrapping detached it)
    if event in ("connection.connect_tcp.complete", "connection.start_tls.complete") and info.get("return_value") is not None:
        interrupt.while_waiting_here(_shutdown_of_stream(info["return_value"]))


def _shutdown_of(response: httpx.Response):
    """A callable that shuts the response's socket down (the reads on it end), or does nothing."""
    return _shutdown_of_stream(response.extensions.get("network_stream"))


def _shutdown_of_stream(stream):
    sock = stream.get_extra_info("socket") if stream is not None else None

    def shutdown() -> None:
        if sock is None:
            return
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: TLS's would touch its state from this thread
        except OSError:  # closed already
            pass

    return shutdown
