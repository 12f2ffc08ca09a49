"""executor/http_fastpath.py: the body read straight from the socket, its version check, and the
plain httpx path it falls back to (tests/test_http.py runs every download test both ways)."""

from __future__ import annotations

import pytest
from conftest import fast_settings, gets, payload, sha256
from test_http import DATA, PATH, Fetcher

from support.localserver import Fault
from executor import http_fastpath
from executor.http import Download, make_client


@pytest.fixture
def fetch(local_server, tmp_path):
    return Fetcher(local_server, tmp_path / "staging" / "model.bin.part")


@pytest.mark.parametrize("version, expected", [("1.0.9", True), ("1.7.0", True), ("0.18.0", False), ("2.0.0", False), ("dev", False)])
def test_the_fast_path_is_used_only_with_a_tested_httpcore(version, expected):
    assert http_fastpath.supported(version) is expected


def test_the_plain_path_reads_through_h11_and_keeps_its_connection(local_server, fetch, monkeypatch):
    """With the fast path off (an untested httpcore), a body goes through iter_raw: h11 sees its
    end, so the connection goes back to the pool and the next download reuses it."""
    monkeypatch.setattr(http_fastpath, "ENABLED", False)
    reads = []
    monkeypatch.setattr(http_fastpath, "read_socket", lambda *args: reads.append(args))
    local_server.add(PATH, DATA)
    settings = fast_settings()
    with make_client(settings) as client:
        for name in ("a.part", "b.part"):
            download = Download(client=client, url=local_server.url(PATH), partial=fetch.partial.with_name(name), what=PATH, settings=settings)
            assert download.run(sha256(DATA)).done == len(DATA)
            assert download.partial.read_bytes() == DATA
    assert reads == [] and local_server.connections_opened == 1


@pytest.fixture
def socket_reads(monkeypatch):
    """Bytes each direct socket read returned: proof that the body did not go through h11."""
    monkeypatch.setattr(http_fastpath, "ENABLED", True)
    reads: list[int] = []
    real = http_fastpath.read_socket

    def counting(stream, size, stall_timeout, request):
        data = real(stream, size, stall_timeout, request)
        reads.append(len(data))
        return data

    monkeypatch.setattr(http_fastpath, "read_socket", counting)
    return reads


def test_a_body_with_a_content_length_is_read_from_the_socket_and_its_connection_closed(local_server, fetch, socket_reads):
    local_server.add(PATH, DATA)
    settings = fast_settings()
    with make_client(settings) as client:
        for name in ("a.part", "b.part"):
            download = Download(client=client, url=local_server.url(PATH), partial=fetch.partial.with_name(name), what=PATH, settings=settings)
            assert download.run(sha256(DATA)).done == len(DATA)
            assert download.partial.read_bytes() == DATA
            # h11 never saw the end of that body: the connection is closed, not put back in the pool
            assert client._transport._pool.connections == []
    assert sum(socket_reads) > len(DATA) // 2  # the first chunk may come through h11, the rest does not
    assert local_server.connections_opened == 2  # the second download did not reuse the first's connection


def test_a_body_that_came_with_the_headers_goes_through_h11_and_keeps_its_connection(local_server, fetch, socket_reads):
    small = payload(2000)
    local_server.add(PATH, small)
    settings = fast_settings()
    with make_client(settings) as client:
        for name in ("a.part", "b.part"):
            download = Download(client=client, url=local_server.url(PATH), partial=fetch.partial.with_name(name), what=PATH, settings=settings)
            assert download.run(sha256(small)).done == len(small)
    assert socket_reads == []
    assert local_server.connections_opened == 1  # kept alive and reused


def test_a_connection_cut_in_the_socket_read_part_resumes(local_server, fetch, socket_reads):
    local_server.add(PATH, DATA, etag="v1")
    local_server.set_fault(PATH, Fault(drop_after=700_000))
    download, copy = fetch()
    assert download.partial.read_bytes() == DATA and copy.sha256 == sha256(DATA)
    first, second = gets(local_server)
    assert second.range == f"bytes={first.body_bytes_sent}-" and second.status == 206
    assert 0 in socket_reads  # the cut was seen by a socket read (end of stream), then resumed
    assert local_server.bytes_sent(PATH) == len(DATA)


def test_a_stall_in_the_socket_read_part_is_retried_and_resumed(local_server, fetch, socket_reads):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(stall_after=700_000, stall_seconds=30))
    waits = []
    download, _ = fetch(settings=fast_settings(stall_timeout=0.5, sleep=waits.append))
    assert download.partial.read_bytes() == DATA
    assert len(waits) == 1 and gets(local_server)[1].status == 206
    assert sum(socket_reads) > 0


def test_a_transport_without_a_socket_is_read_through_httpx(tmp_path, socket_reads):
    import httpx

    def handler(request):
        return httpx.Response(200, content=iter([DATA[:400_000], DATA[400_000:]]), headers={"Content-Length": str(len(DATA))})

    settings = fast_settings()
    with make_client(settings, transport=httpx.MockTransport(handler)) as client:
        download = Download(client=client, url="http://mock.invalid/model.bin", partial=tmp_path / "m.part", what=PATH, settings=settings)
        assert download.run(sha256(DATA)).done == len(DATA)
    assert socket_reads == []


@pytest.mark.parametrize(
    "headers, version",
    [
        ({"transfer-encoding": "chunked"}, "HTTP/1.1"),  # h11 decodes the chunks
        ({}, "HTTP/1.1"),  # no Content-Length: the body ends when the connection does
        ({"content-length": "5000"}, "HTTP/2"),  # frames, not a byte stream
    ],
)
def test_bodies_only_h11_can_frame_are_left_to_it(headers, version):
    import httpx

    from executor.http_fastpath import raw_stream

    response = httpx.Response(200, headers=headers, extensions={"network_stream": object(), "http_version": version.encode()})
    assert raw_stream(response) == (None, 0)


