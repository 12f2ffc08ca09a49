"""Download.stream_into: a forward-only copy of a body into any writer (the bundler's archive),
resumed in-process after drops, against a real server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import pytest

from support.localserver import Fault
from executor.http import Download, make_client
from manifests.errors import ChecksumMismatch, LengthError, NetworkError

from conftest import fast_settings, gets, payload, sha256

pytestmark = pytest.mark.usefixtures("http_path")  # each test through the socket fast path and through plain httpx

PATH = "/packs/stream.bin"
DATA = payload(1_000_000)


class Sink:
    """A writer that can only be written to (no seek, no tell), as a compressor's input is."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def value(self) -> bytes:
        return b"".join(self.parts)


def stream(server, *, expected=sha256(DATA), size_cap=len(DATA), settings=None, sink=None):
    """(sink, Copy) after streaming PATH; the Copy is None when it raised (the exception propagates)."""
    settings = settings or fast_settings()
    sink = sink if sink is not None else Sink()
    with make_client(settings) as client:
        download = Download(client=client, url=server.url(PATH), partial=None, what=PATH, settings=settings, size_cap=size_cap)
        return sink, download.stream_into(sink, expected)


def test_a_body_streams_into_a_forward_only_writer_and_no_file_is_made(local_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local_server.add(PATH, DATA)
    sink, copy = stream(local_server)
    assert sink.value == DATA and copy.done == len(DATA) and copy.sha256 == sha256(DATA)
    assert list(tmp_path.iterdir()) == []
    (only,) = gets(local_server)
    assert only.range is None


def test_a_dropped_connection_resumes_in_process_from_the_bytes_written(local_server):
    local_server.add(PATH, DATA, etag="v1")
    local_server.set_fault(PATH, Fault(drop_after=300_000))
    sink, copy = stream(local_server)
    assert sink.value == DATA and copy.sha256 == sha256(DATA)
    first, second = gets(local_server)
    assert second.range == f"bytes={first.body_bytes_sent}-" and second.headers["if-range"] == '"v1"'
    assert second.status == 206
    assert local_server.bytes_sent(PATH) == len(DATA)  # nothing fetched twice


def test_several_drops_and_a_stall_are_all_resumed(local_server):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=200_000, drop_times=3))
    sink, _ = stream(local_server, settings=fast_settings(retries=5))
    assert sink.value == DATA and len(gets(local_server)) == 4
    local_server.set_fault(PATH, Fault(stall_after=600_000, stall_seconds=30))
    sink, _ = stream(local_server, settings=fast_settings(stall_timeout=0.5))
    assert sink.value == DATA and gets(local_server)[-1].status == 206


def test_a_server_ignoring_range_is_read_past_what_was_written(local_server):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000, ignore_range=True))
    sink, copy = stream(local_server)
    assert sink.value == DATA and copy.done == len(DATA) and copy.sha256 == sha256(DATA)  # written once, hashed once
    second = gets(local_server)[1]
    assert second.range is not None and second.status == 200


def test_content_that_changed_between_attempts_fails_the_checksum(local_server):
    """If-Range no longer matches: the server sends the new file whole; its first bytes are
    skipped, and the result (old start, new end) is refused, not passed off as either."""
    new = payload(len(DATA), seed=2)
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000))
    with pytest.raises(ChecksumMismatch):
        stream(local_server, settings=fast_settings(sleep=lambda s: local_server.replace(PATH, new)))
    assert gets(local_server)[1].status == 200


def test_a_file_now_shorter_than_what_was_written_is_a_network_error(local_server):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000))
    with pytest.raises(NetworkError) as exc:
        stream(local_server, size_cap=None, settings=fast_settings(sleep=lambda s: local_server.replace(PATH, DATA[:1000])))
    assert "changed" in exc.value.message and exc.value.exit_code == 6


def test_a_range_at_another_offset_cannot_be_used(local_server):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000, range_shift=4096))
    sink = Sink()
    with pytest.raises(NetworkError) as exc:
        stream(local_server, sink=sink)
    assert "cannot be taken back" in exc.value.hint
    assert DATA.startswith(sink.value) and len(sink.value) <= 300_000  # nothing of the shifted range was written
    assert len(gets(local_server)) == 2


def test_a_wrong_checksum_is_final(local_server):
    local_server.add(PATH, DATA)
    with pytest.raises(ChecksumMismatch):
        stream(local_server, expected="0" * 64)
    assert len(gets(local_server)) == 1  # the bytes are written: no second attempt


def test_more_bytes_than_the_exact_size_are_refused(local_server):
    local_server.add(PATH, DATA)
    sink = Sink()
    with pytest.raises(LengthError):
        stream(local_server, size_cap=len(DATA) - 1000, expected=None, sink=sink)
    assert len(sink.value) <= len(DATA) - 1000 and len(gets(local_server)) == 1


def test_fewer_bytes_than_the_exact_size_are_refused(local_server):
    local_server.add(PATH, DATA)
    with pytest.raises(LengthError) as exc:
        stream(local_server, size_cap=len(DATA) + 1000, expected=None)
    assert exc.value.exit_code == 3


def test_retries_run_out_with_a_network_error(local_server):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000, drop_times=10))
    with pytest.raises(NetworkError) as exc:
        stream(local_server, settings=fast_settings(retries=2))
    assert "after 3 attempts" in exc.value.message and exc.value.exit_code == 6


def test_a_trickle_is_ended_by_the_deadline(local_server):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(trickle_bps=100_000))
    with pytest.raises(NetworkError) as exc:
        stream(local_server, settings=fast_settings(deadline=0.5))
    assert "deadline" in exc.value.message
