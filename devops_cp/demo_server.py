"""The demo's sample packs over HTTP/1.1 on 127.0.0.1, optionally paced so progress bars are visible.

Standard library only, and nothing but what `devops-cp data demo` needs: GET and HEAD of
in-memory files, one byte range (so a resumed download works), a strong ETag.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time

_CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class DemoServer:
    """``with DemoServer(bytes_per_second=40_000_000) as server: url = server.add("/a.bin", data)``."""

    def __init__(self, *, bytes_per_second: int | None = None):
        self.bytes_per_second = bytes_per_second  # None: as fast as the socket takes it
        self._files: dict[str, bytes] = {}
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="demo-server", daemon=True)

    def add(self, path: str, data: bytes) -> str:
        self._files[path] = data
        return self.base_url + path

    def __enter__(self) -> "DemoServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: DemoServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002  (the demo prints its own lines)
            pass

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def _answer(self, *, send_body: bool) -> None:
            data = server._files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start, end, status = 0, len(data), 200
            wanted = _RANGE.match(self.headers.get("Range", ""))
            if wanted and int(wanted[1]) < len(data):
                start, status = int(wanted[1]), 206
                end = min(len(data), int(wanted[2]) + 1) if wanted[2] else len(data)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest()[:32])
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.end_headers()
            if send_body:
                self._send(memoryview(data)[start:end])

        def _send(self, body: memoryview) -> None:
            began, sent = time.monotonic(), 0
            for offset in range(0, len(body), _CHUNK):
                if server.bytes_per_second:
                    ahead = sent / server.bytes_per_second - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
                chunk = body[offset:offset + _CHUNK]
                try:
                    self.wfile.write(chunk)
                except OSError:  # the client went away: nothing to serve any more
                    return
                sent += len(chunk)

    return Handler
