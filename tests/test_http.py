"""Resumable HTTP (executor/http.py) against a real server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import email.utils
import json

import pytest

from support.localserver import Fault
from executor.http import Download, fetch_small, make_client, parse_sha256sum
from manifests.errors import ChecksumMismatch, LengthError, NetworkError

from conftest import fast_settings, gets, payload, sha256

pytestmark = pytest.mark.usefixtures("http_path")  # each test through the socket fast path and through plain httpx

PATH = "/packs/model.bin"
DATA = payload(1_000_000)


class Fetcher:
    """fetch(settings=..., size_cap=..., expected=...) -> (Download, Copy); the partial file stays put between calls."""

    def __init__(self, server, partial):
        self.server, self.partial = server, partial

    @property
    def meta(self):
        return self.partial.with_name(self.partial.name + ".json")

    def __call__(self, *, settings=None, size_cap=None, expected=sha256(DATA), url=None):
        settings = settings or fast_settings()
        with make_client(settings) as client:
            download = Download(client=client, url=url or self.server.url(PATH), partial=self.partial, what=PATH, settings=settings, size_cap=size_cap)
            return download, download.run(expected)

    def plant(self, content: bytes, url: str, validator: str | None) -> None:
        """A partial file left by an earlier run."""
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.partial.write_bytes(content)
        self.meta.write_text(json.dumps({"url": url, "validator": validator}))


@pytest.fixture
def fetch(local_server, tmp_path):
    return Fetcher(local_server, tmp_path / "staging" / "model.bin.part")


def test_plain_download(local_server, fetch):
    local_server.add(PATH, DATA)
    download, copy = fetch()
    assert download.partial.read_bytes() == DATA and copy.sha256 == sha256(DATA)
    request = gets(local_server)[0]
    assert request.range is None
    assert request.headers["accept-encoding"] == "identity"  # bytes on disk are the bytes hashed
    assert request.headers["user-agent"].startswith("devops-cp/")


def test_dropped_connection_resumes_with_range_and_if_range(local_server, fetch):
    local_server.add(PATH, DATA, etag="v1")
    local_server.set_fault(PATH, Fault(drop_after=300_000))
    download, copy = fetch()
    assert download.partial.read_bytes() == DATA and copy.sha256 == sha256(DATA)
    first, second = gets(local_server)
    assert first.range is None and first.status == 200
    offset = first.body_bytes_sent
    assert 0 < offset <= 300_000
    assert second.range == f"bytes={offset}-"
    assert second.headers["if-range"] == '"v1"'
    assert second.status == 206
    assert local_server.bytes_sent(PATH) == len(DATA)  # nothing sent twice


def test_resume_uses_last_modified_when_there_is_no_etag(local_server, fetch):
    local_server.add(PATH, DATA, etag=None)
    local_server.set_fault(PATH, Fault(drop_after=300_000))
    download, _ = fetch()
    assert download.partial.read_bytes() == DATA
    second = gets(local_server)[1]
    assert email.utils.parsedate_to_datetime(second.headers["if-range"])
    assert second.status == 206


def test_server_ignoring_range_restarts_from_zero(local_server, fetch):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000, ignore_range=True))
    download, copy = fetch()
    assert download.partial.read_bytes() == DATA and copy.sha256 == sha256(DATA)
    second = gets(local_server)[1]
    assert second.range is not None and second.status == 200  # asked for a range, got everything


def test_changed_etag_between_attempts_restarts_from_zero(local_server, fetch):
    """The file changes upstream while we wait to retry: If-Range no longer matches, the server
    sends the whole new file, and the old bytes are not glued to the new ones."""
    new = payload(900_000, seed=2)
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000))

    def sleep(seconds):  # called between the drop and the retry
        local_server.replace(PATH, new)

    download, copy = fetch(settings=fast_settings(sleep=sleep), expected=None)
    assert download.partial.read_bytes() == new and copy.sha256 == sha256(new)
    second = gets(local_server)[1]
    assert second.headers["if-range"] == '"%s"' % sha256(DATA)[:32]  # the old file's validator
    assert second.status == 200


def test_416_on_a_complete_partial_file_is_success(local_server, fetch):
    local_server.add(PATH, DATA, etag="v1")
    fetch.plant(DATA, local_server.url(PATH), '"v1"')
    _, copy = fetch()
    assert copy.sha256 == sha256(DATA)
    (only,) = gets(local_server)
    assert only.range == f"bytes={len(DATA)}-" and only.status == 416
    assert local_server.bytes_sent(PATH) < 100  # the 416's short text body, not the file


def test_416_on_a_partial_longer_than_the_file_restarts(local_server, fetch):
    local_server.add(PATH, DATA, etag="v1")
    fetch.plant(DATA + b"junk from an older, longer version", local_server.url(PATH), '"v1"')
    download, _ = fetch()
    assert download.partial.read_bytes() == DATA
    first, second = gets(local_server)
    assert first.status == 416 and second.range is None and second.status == 200


def test_partial_from_another_url_is_not_resumed(local_server, fetch):
    local_server.add(PATH, DATA)
    fetch.plant(DATA[:1000], "http://elsewhere.invalid/model.bin", None)
    download, _ = fetch()
    assert download.partial.read_bytes() == DATA
    assert gets(local_server)[0].range is None


def test_body_longer_than_the_exact_size_is_refused_and_discarded(local_server, fetch):
    local_server.add(PATH, DATA)
    with pytest.raises(LengthError) as exc:
        fetch(size_cap=len(DATA) - 1000, expected=None)
    assert exc.value.exit_code == 3 and str(len(DATA) - 1000) in exc.value.message
    assert not fetch.partial.exists() and not fetch.meta.exists()  # untrusted bytes are not kept to resume from
    assert len(gets(local_server)) == 1  # refused, not retried


def test_extra_bytes_beyond_content_length_are_not_taken(local_server, fetch):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(extra_body=b"EVIL" * 1000))
    download, copy = fetch()
    assert download.partial.read_bytes() == DATA and copy.done == len(DATA)


def test_content_range_at_the_wrong_offset_restarts(local_server, fetch):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(drop_after=300_000, range_shift=4096))
    download, copy = fetch()
    assert download.partial.read_bytes() == DATA and copy.sha256 == sha256(DATA)
    first, second, third = gets(local_server)
    assert second.status == 206 and second.range is not None  # answered at offset + 4096: rejected
    assert third.range is None and third.status == 200


def test_429_waits_as_told_by_retry_after(local_server, fetch):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(statuses=[429], retry_after=7))
    waits = []
    download, _ = fetch(settings=fast_settings(sleep=waits.append))
    assert download.partial.read_bytes() == DATA
    assert waits == [7.0]
    assert [r.status for r in gets(local_server)] == [429, 200]


def test_server_errors_are_retried_with_backoff(local_server, fetch):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(statuses=[500, 503]))
    waits = []
    download, _ = fetch(settings=fast_settings(sleep=waits.append, backoff=0.5))
    assert download.partial.read_bytes() == DATA
    assert waits == [0.5, 1.0]  # exponential
    assert [r.status for r in gets(local_server)] == [500, 503, 200]


def test_404_is_not_retried(local_server, fetch):
    with pytest.raises(NetworkError) as exc:
        fetch(url=local_server.url("/missing.bin"))
    assert exc.value.exit_code == 6 and "404" in exc.value.message and exc.value.hint
    assert len(gets(local_server)) == 1


def test_connection_refused_is_retried_then_a_network_error(fetch):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits = []
    with pytest.raises(NetworkError) as exc:
        fetch(url=f"http://127.0.0.1:{port}/model.bin", settings=fast_settings(retries=2, sleep=waits.append))
    assert exc.value.exit_code == 6 and "after 3 attempts" in exc.value.message
    assert len(waits) == 2


def test_redirect_to_file_scheme_is_refused(local_server, fetch):
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(redirect_to="file:///etc/passwd"))
    with pytest.raises(NetworkError) as exc:
        fetch()
    assert "file://" in exc.value.message and exc.value.exit_code == 6
    assert len(gets(local_server)) == 1


def test_redirect_to_http_is_followed(local_server, fetch):
    local_server.add("/real.bin", DATA)
    local_server.add(PATH, b"")
    local_server.set_fault(PATH, Fault(redirect_to=local_server.url("/real.bin")))
    download, _ = fetch()
    assert download.partial.read_bytes() == DATA


def test_retries_exhausted_keep_the_partial_and_a_new_run_resumes(local_server, fetch):
    local_server.add(PATH, DATA, etag="v1")
    local_server.set_fault(PATH, Fault(drop_after=400_000))
    with pytest.raises(NetworkError) as exc:
        fetch(settings=fast_settings(retries=0))
    assert "partial file is kept" in exc.value.hint
    kept = fetch.partial.stat().st_size
    assert 0 < kept <= 400_000
    download, copy = fetch()  # "run the same command again"
    assert download.partial.read_bytes() == DATA and copy.sha256 == sha256(DATA)
    resumed = gets(local_server)[1]
    assert resumed.range == f"bytes={kept}-" and resumed.headers["if-range"] == '"v1"' and resumed.status == 206


def test_a_stalled_body_is_retried_and_resumed(local_server, fetch):
    """No byte for stall_timeout seconds: give up on that connection, resume on a new one."""
    local_server.add(PATH, DATA)
    local_server.set_fault(PATH, Fault(stall_after=600_000, stall_seconds=30))
    download, _ = fetch(settings=fast_settings(stall_timeout=0.5))
    assert download.partial.read_bytes() == DATA
    second = gets(local_server)[1]
    assert second.range is not None and second.status == 206


def test_wrong_checksum_deletes_the_partial_file(local_server, fetch):
    local_server.add(PATH, DATA)
    with pytest.raises(ChecksumMismatch):
        fetch(expected="0" * 64)
    assert not fetch.partial.exists() and not fetch.meta.exists()


def test_fetch_small_is_bounded(local_server):
    url = local_server.add("/SHA256SUMS", b"x" * 5000)
    with make_client(fast_settings()) as client:
        assert fetch_small(client, url).text == "x" * 5000
        with pytest.raises(NetworkError):
            fetch_small(client, url, limit=1000)
        with pytest.raises(NetworkError):
            fetch_small(client, local_server.url("/nope"))


def test_parse_sha256sum():
    a, b = "a" * 64, "B" * 64
    listing = f"{a}  GeoLite2-City.tar.gz\n{b} *GeoLite2-ASN.tar.gz\n"
    assert parse_sha256sum(listing, "GeoLite2-City.tar.gz") == a
    assert parse_sha256sum(listing, "GeoLite2-ASN.tar.gz") == b.lower()
    assert parse_sha256sum(f"{a}  dir/some.bin\n", "some.bin") == a
    assert parse_sha256sum(f"{a}  only.bin\n", None) == a  # its only line
    with pytest.raises(NetworkError):
        parse_sha256sum(listing, "other.tar.gz")


# --- write-back during a durable direct install ---------------------------------------------


def test_a_direct_install_writes_back_as_it_downloads_and_bundle_staging_does_not(local_server, serve_pack, monkeypatch, tmp_path):
    """A direct install syncs the pack before it becomes visible, so its download starts the
    disk early (Copy's writeback); a bundle's staging is never synced, so it must not pay for that."""
    from devops_cp.app import App
    from executor import durable
    from executor.engine import Engine
    from executor.transfer import WRITEBACK_STEP
    from executor.txn import PackTransaction

    calls = []
    monkeypatch.setattr(durable, "write_behind", lambda out, keep: calls.append(out.name))
    big = payload(WRITEBACK_STEP + 1_000_000)
    serve_pack("big", big)
    app = App(settings=fast_settings())
    plan = app.plan("big")
    engine = Engine(app.store, settings=app.settings)
    try:
        (outcome,) = engine.install([plan], confirm=lambda *a: True)
        assert outcome.record is not None and len(calls) == 1
        calls.clear()
        with PackTransaction(app.store, tmp_path / "bundle-staging", plan.key) as txn:
            engine.stage(plan, txn)  # what bundle does
            assert txn.files
        assert calls == []
    finally:
        engine.close()


def test_the_engine_and_its_steps_load_httpx_only_when_something_downloads():
    """A sideload never touches the network: importing the engine must not cost httpx's start-up."""
    import subprocess
    import sys

    code = "import sys, executor.engine, executor.steps; print(sorted(m for m in ('httpx', 'httpcore', 'h11', 'executor.http') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
