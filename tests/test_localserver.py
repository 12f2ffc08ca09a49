"""The loopback HTTP server that tests, tools/ and bench/ use (tests/support/localserver.py).

Every test talks to a real server on 127.0.0.1 through httpx (or a raw socket
where httpx would hide what is on the wire).
"""

from __future__ import annotations

import email.utils
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.localserver import Fault, LocalServer, RequestContext

DATA = bytes(range(256)) * 1024  # 256 KiB, every offset distinguishable enough
PATH = "/packs/data.bin"


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def client():
    with httpx.Client(timeout=10.0, trust_env=False) as c:
        yield c


@pytest.fixture(params=["bytes", "file"])
def served(request, server, tmp_path):
    """The same content served from memory and from disk (the sendfile path)."""
    if request.param == "bytes":
        url = server.add(PATH, DATA)
    else:
        f = tmp_path / "data.bin"
        f.write_bytes(DATA)
        url = server.add(PATH, f)
    return server, url


def raw_get(server: LocalServer, path: str, extra_headers: str = "") -> bytes:
    """Send one request on a fresh socket and read until the server closes it."""
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra_headers}\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- plain serving ----------------------------------------------------------------


def test_base_url_and_url(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.port > 0
    assert server.url("/a/b c.bin") == server.base_url + "/a/b%20c.bin"
    assert server.url("x") == server.base_url + "/x"


def test_full_get(served, client):
    server, url = served
    r = client.get(url)
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"].startswith('"')
    assert email.utils.parsedate_to_datetime(r.headers["last-modified"])
    assert server.requests[-1].status == 200
    assert server.requests[-1].body_bytes_sent == len(DATA)


def test_head(served, client):
    server, url = served
    r = client.head(url)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(DATA))
    assert "etag" in r.headers
    assert server.bytes_sent(PATH) == 0


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=1000-1999", 1000, 1999), ("bytes=5000-", 5000, len(DATA) - 1),
     ("bytes=-100", len(DATA) - 100, len(DATA) - 1), ("bytes=10-99999999", 10, len(DATA) - 1)],
)
def test_range_206(served, client, header, start, end):
    server, url = served
    r = client.get(url, headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.content == DATA[start:end + 1]
    assert r.headers["content-length"] == str(end - start + 1)
    assert server.requests[-1].range == header


def test_range_unsatisfiable_416(served, client):
    _, url = served
    for header in (f"bytes={len(DATA)}-", f"bytes={len(DATA) + 10}-{len(DATA) + 20}"):
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 416
        assert r.headers["content-range"] == f"bytes */{len(DATA)}"


def test_malformed_range_is_ignored(served, client):
    _, url = served
    for header in ("bytes=9-3", "items=0-10", "bytes=0-1,5-6"):
        r = client.get(url, headers={"Range": header})
        assert r.status_code == 200
        assert r.content == DATA


def test_if_range_etag(served, client):
    server, url = served
    etag = client.head(url).headers["etag"]
    r = client.get(url, headers={"Range": "bytes=100-", "If-Range": etag})
    assert r.status_code == 206
    r = client.get(url, headers={"Range": "bytes=100-", "If-Range": '"something-else"'})
    assert r.status_code == 200
    assert r.content == DATA


def test_if_range_after_replace_gives_full_body(server, client):
    url = server.add(PATH, DATA)
    before = client.head(url).headers
    new = DATA[::-1]
    server.replace(PATH, new)
    after = client.head(url).headers
    assert after["etag"] != before["etag"]
    assert after["last-modified"] != before["last-modified"]
    for validator in (before["etag"], before["last-modified"]):
        r = client.get(url, headers={"Range": "bytes=100-", "If-Range": validator})
        assert r.status_code == 200
        assert r.content == new
    r = client.get(url, headers={"Range": "bytes=100-", "If-Range": after["last-modified"]})
    assert r.status_code == 206
    assert r.content == new[100:]


def test_replace_same_bytes_still_changes_etag(server, client):
    url = server.add(PATH, DATA)
    first = client.head(url).headers["etag"]
    server.replace(PATH, DATA)
    assert client.head(url).headers["etag"] != first


def test_replace_file(server, client, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"old" * 10)
    b.write_bytes(b"new" * 20)
    url = server.add("/f", a)
    old = client.head(url).headers
    server.replace("/f", b)
    r = client.get(url)
    assert r.content == b"new" * 20
    assert r.headers["etag"] != old["etag"]
    assert r.headers["last-modified"] != old["last-modified"]
    with pytest.raises(KeyError):
        server.replace("/nope", b"x")
    b.unlink()
    assert client.get(url).status_code == 404  # the file went away under the server
    server.replace("/f", b"in memory now")
    assert client.get(url).content == b"in memory now"


def test_validator_options(server, client):
    url = server.add("/none", b"abc", etag=None, last_modified=None, content_type="text/plain")
    r = client.get(url)
    assert "etag" not in r.headers and "last-modified" not in r.headers
    assert r.headers["content-type"] == "text/plain"
    url = server.add("/fixed", b"abc", etag="v1", last_modified="Wed, 21 Oct 2015 07:28:00 GMT")
    r = client.get(url)
    assert r.headers["etag"] == '"v1"'
    assert r.headers["last-modified"] == "Wed, 21 Oct 2015 07:28:00 GMT"


def test_conditional_get_304(served, client):
    _, url = served
    h = client.head(url).headers
    assert client.get(url, headers={"If-None-Match": h["etag"]}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": h["last-modified"]}).status_code == 304
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_404_and_405(server, client):
    r = client.get(server.url("/missing"))
    assert r.status_code == 404
    server.add("/x", b"x")
    assert client.post(server.url("/x"), content=b"body").status_code == 405


def test_empty_file(server, client):
    url = server.add("/empty", b"")
    r = client.get(url)
    assert r.status_code == 200 and r.content == b""
    assert client.get(url, headers={"Range": "bytes=0-"}).status_code == 416


def test_keep_alive_reuses_one_connection(served, client):
    server, url = served
    for i in range(5):
        r = client.get(url, headers={"Range": f"bytes={i}-{i}"})
        assert r.content == DATA[i:i + 1]
    client.get(server.url("/missing"))
    client.head(url)
    assert client.get(url).content == DATA
    assert server.connections_opened == 1


def test_parallel_clients(served):
    server, url = served
    results: list[bytes] = []

    def fetch():
        with httpx.Client(timeout=10, trust_env=False) as c:
            results.append(c.get(url).content)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [DATA] * 8


def test_request_records(server, client):
    url = server.add(PATH, DATA)
    client.get(url + "?x=1", headers={"Range": "bytes=0-9", "X-Test": "yes"})
    rec = server.requests[-1]
    assert (rec.method, rec.path, rec.range, rec.status, rec.body_bytes_sent) == ("GET", PATH, "bytes=0-9", 206, 10)
    assert rec.query == "x=1"
    assert rec.headers["X-Test"] == "yes" and rec.headers["x-test"] == "yes"


# -- faults --------------------------------------------------------------------------


def test_drop_after_raises_in_client_then_recovers(served, client):
    server, url = served
    server.set_fault(PATH, Fault(drop_after=1000, drop_times=2))
    for _ in range(2):
        received = bytearray()
        with pytest.raises(httpx.TransportError):
            with client.stream("GET", url) as r:
                for chunk in r.iter_bytes():
                    received += chunk
        assert bytes(received) == DATA[:1000]
    assert client.get(url).content == DATA
    assert server.bytes_sent(PATH) == 2000 + len(DATA)


def test_drop_applies_to_ranged_body_and_resume_completes(served, client):
    server, url = served
    server.set_fault(PATH, Fault(drop_after=5000))
    received = bytearray()
    with pytest.raises(httpx.TransportError):
        with client.stream("GET", url, headers={"Range": "bytes=100-"}) as r:
            for chunk in r.iter_bytes():
                received += chunk
    assert bytes(received) == DATA[100:5100]
    r = client.get(url, headers={"Range": "bytes=5100-"})
    assert r.status_code == 206 and r.content == DATA[5100:]


def test_ignore_range(served, client):
    server, url = served
    server.set_fault(PATH, Fault(ignore_range=True))
    r = client.get(url, headers={"Range": "bytes=100-"})
    assert r.status_code == 200
    assert r.content == DATA
    assert "content-range" not in r.headers


def test_wrong_length_longer_than_body(served, client):
    server, url = served
    server.set_fault(PATH, Fault(wrong_length=len(DATA) + 100))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    server.set_fault(PATH, None)
    assert client.get(url).content == DATA


def test_wrong_length_shorter_than_body(served, client):
    server, url = served
    server.set_fault(PATH, Fault(wrong_length=10))
    r = client.get(url)
    assert r.headers["content-length"] == "10"
    assert r.content == DATA[:10]
    raw = raw_get(server, PATH)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 10\r\n" in head
    assert body == DATA  # the real body went out regardless


def test_extra_body(served, client):
    server, url = served
    server.set_fault(PATH, Fault(extra_body=b"TRAILING-GARBAGE"))
    r = client.get(url)
    assert r.content == DATA  # a correct client stops at Content-Length
    raw = raw_get(server, PATH)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(DATA)}\r\n".encode() in head
    assert b"Connection: close" in head
    assert body == DATA + b"TRAILING-GARBAGE"


def test_range_shift(served, client):
    server, url = served
    server.set_fault(PATH, Fault(range_shift=10))
    r = client.get(url, headers={"Range": "bytes=100-"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 110-{len(DATA) - 1}/{len(DATA)}"
    assert r.content == DATA[110:]
    server.set_fault(PATH, Fault(range_shift=-50))
    r = client.get(url, headers={"Range": "bytes=100-199"})
    assert r.headers["content-range"] == f"bytes 50-149/{len(DATA)}"
    assert r.content == DATA[50:150]


def test_statuses_then_success_with_retry_after(served, client):
    server, url = served
    server.set_fault(PATH, Fault(statuses=[500, 429, 503], retry_after=7))
    seen = []
    for _ in range(3):
        r = client.get(url)
        seen.append(r.status_code)
        assert r.headers["retry-after"] == "7"
    assert seen == [500, 429, 503]
    r = client.get(url)
    assert r.status_code == 200 and r.content == DATA
    assert "retry-after" not in r.headers
    assert [rec.status for rec in server.requests] == [500, 429, 503, 200]


def test_statuses_without_retry_after(served, client):
    server, url = served
    server.set_fault(PATH, Fault(statuses=[429]))
    r = client.get(url)
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert client.get(url).status_code == 200


def test_redirect(served, client):
    server, url = served
    server.set_fault(PATH, Fault(redirect_to="file:///etc/passwd"))
    r = client.get(url)
    assert r.status_code == 302
    assert r.headers["location"] == "file:///etc/passwd"
    other = server.add("/elsewhere", b"moved here")
    server.set_fault(PATH, Fault(redirect_to=other))
    r = client.get(url, follow_redirects=True)
    assert r.content == b"moved here"


def test_basic_auth(server, client):
    url = server.add("/secret", b"classified", auth=("alice", "s3cret"))
    r = client.get(url)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic ")
    assert client.get(url, auth=("alice", "wrong")).status_code == 401
    assert client.get(url, headers={"Authorization": "Basic !!!"}).status_code == 401
    r = client.get(url, auth=("alice", "s3cret"))
    assert r.status_code == 200 and r.content == b"classified"


def test_delay_per_chunk_is_slow_but_complete(served, client):
    server, url = served
    server.set_fault(PATH, Fault(delay_per_chunk=0.01))
    assert client.get(url).content == DATA


def test_trickle_delivers_correct_bytes(served, client):
    server, url = served
    server.set_fault(PATH, Fault(trickle_bps=200_000))
    r = client.get(url, headers={"Range": "bytes=0-19999"})
    assert r.content == DATA[:20000]


def test_stall_is_seen_as_a_read_timeout(served):
    server, url = served
    server.set_fault(PATH, Fault(stall_after=3000, stall_seconds=30))
    received = bytearray()
    with httpx.Client(timeout=httpx.Timeout(10.0, read=0.5), trust_env=False) as c:
        with pytest.raises(httpx.ReadTimeout):
            with c.stream("GET", url) as r:
                for chunk in r.iter_bytes():
                    received += chunk
    assert bytes(received) == DATA[:3000]


def test_short_stall_then_the_rest(served, client):
    server, url = served
    server.set_fault(PATH, Fault(stall_after=1000, stall_seconds=0.2))
    assert client.get(url).content == DATA


def test_bytes_sent_accounting(server, client):
    a = server.add("/a", DATA)
    b = server.add("/b", b"x" * 100)
    client.get(a)
    client.get(a, headers={"Range": "bytes=1000-1999"})
    client.head(a)
    client.get(b)
    assert server.bytes_sent("/a") == len(DATA) + 1000
    assert server.bytes_sent("/b") == 100
    assert server.bytes_sent() == len(DATA) + 1100


def test_stop_returns_promptly_during_trickle():
    server = LocalServer()
    url = server.add("/slow", b"z" * 1_000_000)
    server.set_fault("/slow", Fault(trickle_bps=100))
    server.start()
    got_some = threading.Event()
    outcome: list[object] = []

    def download():
        try:
            with httpx.Client(timeout=60, trust_env=False) as c, c.stream("GET", url) as r:
                for _ in r.iter_bytes():
                    got_some.set()
            outcome.append("finished")
        except httpx.HTTPError as exc:
            outcome.append(exc)

    t = threading.Thread(target=download, daemon=True)
    t.start()
    assert got_some.wait(30)
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive()
    t.join(30)
    assert not t.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)


def test_stop_returns_promptly_during_stall_and_idle_keepalive():
    server = LocalServer()
    url = server.add("/stall", DATA)
    server.add("/ok", b"ok")
    server.set_fault("/stall", Fault(stall_after=10, stall_seconds=600))
    server.start()
    idle = httpx.Client(timeout=60, trust_env=False)
    assert idle.get(server.url("/ok")).content == b"ok"  # leaves an idle keep-alive connection
    errors: list[Exception] = []

    def download():
        try:
            with httpx.Client(timeout=60, trust_env=False) as c:
                c.get(url)
        except httpx.HTTPError as exc:
            errors.append(exc)

    t = threading.Thread(target=download, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while server.bytes_sent("/stall") < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive()
    t.join(30)
    assert not t.is_alive() and errors
    idle.close()


def test_server_usable_before_start_and_not_after_stop():
    server = LocalServer()
    url = server.add("/x", b"early")
    assert url.startswith(server.base_url)
    with server:
        assert httpx.get(url, trust_env=False).content == b"early"
    with pytest.raises(RuntimeError):
        server.start()
    server.stop()  # idempotent


def test_stop_without_start_does_not_hang():
    server = LocalServer()
    t = threading.Thread(target=server.stop, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive()


# -- custom routes ------------------------------------------------------------------


def test_route_json_api(server, client):
    def token(ctx: RequestContext) -> None:
        ctx.json({"token": "t0k", "scope": ctx.param("scope"), "auth": ctx.headers.get("authorization")})

    def echo(ctx: RequestContext) -> None:
        ctx.respond(201, ctx.body[::-1], headers={"X-Echo": "1"})

    server.route("GET", "/token", token)
    server.route("POST", "/echo", echo)
    r = client.get(server.url("/token"), params={"scope": "repository:a/b:pull"}, headers={"Authorization": "Bearer x"})
    assert r.json() == {"token": "t0k", "scope": "repository:a/b:pull", "auth": "Bearer x"}
    assert r.headers["content-type"] == "application/json"
    r = client.post(server.url("/echo"), content=b"abc")
    assert (r.status_code, r.content, r.headers["x-echo"]) == (201, b"cba", "1")


def test_route_errors_and_faults(server, client):
    server.route("GET", "/silent", lambda ctx: None)
    server.route("GET", "/boom", lambda ctx: 1 / 0)
    server.route("GET", "/api", lambda ctx: ctx.json({"ok": True}))
    assert client.get(server.url("/silent")).status_code == 500
    assert client.get(server.url("/boom")).status_code == 500
    server.set_fault("/api", Fault(statuses=[503]))
    assert client.get(server.url("/api")).status_code == 503
    assert client.get(server.url("/api")).json() == {"ok": True}


# -- command line -------------------------------------------------------------------


def test_cli_serves_a_directory(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pack one.bin").write_bytes(DATA)
    (tmp_path / "top.json").write_text('{"a": 1}')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    with subprocess.Popen([sys.executable, "-m", "support.localserver", str(tmp_path), "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as proc:
        try:
            base = proc.stdout.readline().strip()  # type: ignore[union-attr]
            assert base.startswith("http://127.0.0.1:")
            with httpx.Client(timeout=10, trust_env=False) as c:
                assert c.get(base + "/sub/pack%20one.bin").content == DATA
                r = c.get(base + "/top.json")
                assert r.json() == {"a": 1} and r.headers["content-type"] == "application/json"
                assert c.get(base + "/nope").status_code == 404
        finally:
            proc.terminate()
            proc.wait(30)
    assert proc.returncode == 0
