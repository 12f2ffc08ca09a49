"""Segmented downloads (executor/segmented.py) against a real server on 127.0.0.1 that caps every
connection's rate, as CDNs and release storage do: several connections, the same bytes, and every
range answer checked against the first."""

from __future__ import annotations

import threading

import pytest
from conftest import fast_settings, gets, payload, sha256
from support.localserver import Fault, LocalServer
from support.waiting import wait_for

from executor import segmented
from executor.http import Download, make_client
from manifests.errors import ChecksumMismatch

PATH = "/packs/model.bin"
RATE = 4 << 20  # bytes per second per connection
SIZE = 16 << 20  # four seconds over one connection at RATE
SMALL = 12 << 20  # enough for several connections (small_pieces: seconds of work at RATE), quick over one


@pytest.fixture
def small_pieces(monkeypatch):
    """Sizes scaled down with the file, so that a 16 MiB file is large and is cut into pieces."""
    monkeypatch.setattr(segmented, "MIN_SIZE", 2 << 20)
    monkeypatch.setattr(segmented, "PIECE", 1 << 20)


@pytest.fixture
def capped():
    with LocalServer(rate_per_connection=RATE) as server:
        yield server


def download(server, partial, *, expected, connections=8, path=PATH, settings=None, **extra):
    """(Download, Copy) of `path` into `partial`."""
    settings = settings or fast_settings()
    with make_client(settings) as client:
        fetch = Download(client=client, url=server.url(path), partial=partial, what=path, settings=settings, connections=connections, **extra)
        return fetch, fetch.run(expected)


def ranged(server, path=PATH):
    return [r for r in gets(server, path) if r.range is not None]


@pytest.mark.usefixtures("small_pieces", "http_path")
def test_a_large_file_comes_over_several_connections_byte_for_byte(capped, tmp_path):
    data = payload(SIZE)
    capped.add(PATH, data, etag="v1")
    fetch, copy = download(capped, tmp_path / "m.part", expected=sha256(data))
    assert fetch.partial.read_bytes() == data and copy.sha256 == sha256(data) and copy.done == SIZE
    assert fetch.connections_used == 8
    assert capped.peak_bodies_in_flight >= 2  # seen by the server: bodies sent at the same time
    ranges = ranged(capped)
    assert len(ranges) >= 7 and all(r.headers["if-range"] == '"v1"' and r.status == 206 for r in ranges)
    assert not fetch.meta_path.exists() or "ranges" in fetch.meta_path.read_text()


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize(
    "etag, last_modified, pinned, several",
    [
        ("v1", None, False, True),  # a strong ETag
        (None, "auto", False, True),  # Last-Modified
        (None, None, True, True),  # no validator, but the sha256 is pinned
        (None, None, False, False),  # nothing keeps two versions apart: one stream
        ('W/"v1"', None, False, False),  # a weak ETag cannot go in If-Range: one stream
    ],
)
def test_several_connections_only_when_the_file_cannot_change_under_us(capped, tmp_path, etag, last_modified, pinned, several):
    data = payload(SMALL)
    capped.add(PATH, data, etag=etag, last_modified=last_modified)
    fetch, copy = download(capped, tmp_path / "m.part", expected=sha256(data) if pinned else None)
    assert fetch.partial.read_bytes() == data and copy.sha256 == sha256(data)
    assert (capped.peak_bodies_in_flight > 1) is several
    assert (fetch.connections_used == 8) is several
    if not several:
        assert len(gets(capped, PATH)) == 1


@pytest.mark.usefixtures("small_pieces")
def test_a_stream_slow_for_want_of_cpu_gets_no_helpers(capped, tmp_path, monkeypatch):
    """The same capped file, but the process's threads say they ran or waited to run on a whole core
    while the lead was probed (a machine too busy to give it more): one stream, the same bytes."""
    import time

    monkeypatch.setattr(segmented, "cpu_wanted", time.monotonic)  # as much CPU wanted as wall time passed: one core
    data = payload(SMALL)
    capped.add(PATH, data, etag="v1")
    fetch, copy = download(capped, tmp_path / "m.part", expected=sha256(data))
    assert fetch.partial.read_bytes() == data and copy.sha256 == sha256(data)
    assert fetch.connections_used == 0 and len(gets(capped, PATH)) == 1 and capped.peak_bodies_in_flight == 1


def test_cpu_wanted_counts_the_time_a_thread_waited_for_a_core_as_well_as_the_time_it_ran():
    """Threads that spin count; threads that sleep do not. With more spinning threads than cores, the
    time they waited for one counts too: a starved process still wants a core per spinning thread."""
    import hashlib
    import os
    import time

    done = threading.Event()

    def spin():
        data = bytes(1 << 16)
        while not done.is_set():
            hashlib.sha256(data).digest()  # releases the GIL: the threads run side by side

    cores = os.cpu_count() or 1
    threads = [threading.Thread(target=done.wait) for _ in range(4)] + [threading.Thread(target=spin) for _ in range(cores + 1)]
    before, started = segmented.cpu_wanted(), time.monotonic()
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # let them spin (nothing is timed: the ratio below is CPU over wall time)
        wanted = (segmented.cpu_wanted() - before) / (time.monotonic() - started)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert wanted > cores * 0.8  # well past CPU_BOUND whatever else the machine runs


@pytest.mark.usefixtures("small_pieces")
def test_a_server_without_ranges_and_a_small_file_keep_one_stream(capped, tmp_path):
    data = payload(SMALL)
    capped.add(PATH, data, etag="v1")
    capped.add("/small.bin", data[: 1 << 20], etag="v2")
    capped.set_fault(PATH, Fault(ignore_range=True))  # no Accept-Ranges
    fetch, _ = download(capped, tmp_path / "m.part", expected=sha256(data))
    small, _ = download(capped, tmp_path / "s.part", expected=sha256(data[: 1 << 20]), path="/small.bin")
    assert fetch.partial.read_bytes() == data and small.partial.read_bytes() == data[: 1 << 20]
    assert len(gets(capped)) == 2 and capped.peak_bodies_in_flight == 1


@pytest.mark.usefixtures("small_pieces", "http_path")
def test_a_chunked_body_keeps_one_stream_even_with_ranges_and_an_etag(capped, tmp_path):
    """Transfer-Encoding: chunked (a proxy re-framing the body) with Accept-Ranges: bytes and a strong
    ETag, and the sha256 pinned: no length to cut into ranges, so one stream, byte for byte."""
    data = payload(SMALL)
    capped.add(PATH, data, etag="v1")
    capped.set_fault(PATH, Fault(chunked=True))
    with make_client(fast_settings()) as client, client.stream("GET", capped.url(PATH)) as response:
        headers = response.headers  # what the download below is answered: the test tests something
        assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        assert headers["accept-ranges"] == "bytes" and headers["etag"] == '"v1"'
    fetch, copy = download(capped, tmp_path / "m.part", expected=sha256(data))
    assert fetch.partial.read_bytes() == data and copy.sha256 == sha256(data) and copy.done == SMALL
    assert fetch.connections_used == 0 and len(gets(capped, PATH)) == 2 and capped.peak_bodies_in_flight == 1


@pytest.mark.usefixtures("small_pieces")
def test_the_connections_stay_within_the_limit(capped, tmp_path):
    data = payload(SMALL)
    capped.add(PATH, data, etag="v1")
    fetch, _ = download(capped, tmp_path / "m.part", expected=sha256(data), connections=3)
    assert fetch.partial.read_bytes() == data and fetch.connections_used == 3 and capped.peak_bodies_in_flight >= 2


@pytest.mark.usefixtures("small_pieces")
def test_one_connection_per_download_turns_it_off(capped, tmp_path):
    data = payload(SMALL)
    capped.add(PATH, data, etag="v1")
    fetch, _ = download(capped, tmp_path / "m.part", expected=sha256(data), connections=1)
    assert fetch.partial.read_bytes() == data and len(gets(capped)) == 1 and fetch.connections_used == 0


@pytest.mark.usefixtures("small_pieces")
def test_a_wrong_content_range_is_refused_and_the_file_fetched_again_as_one_stream(capped, tmp_path):
    data = payload(SMALL)
    capped.add(PATH, data, etag="v1")
    capped.set_fault(PATH, Fault(range_shift=4096, range_shift_from=1))  # every range but the first answer is off
    fetch, copy = download(capped, tmp_path / "m.part", expected=sha256(data), settings=fast_settings(retries=3))
    assert fetch.partial.read_bytes() == data and copy.sha256 == sha256(data)
    requests = gets(capped, PATH)
    assert requests[0].range is None and any(r.range and r.status == 206 for r in requests[1:])  # the refused range
    assert requests[-1].range is None and requests[-1].status == 200  # then the whole file, one stream
    assert fetch._single


@pytest.mark.usefixtures("small_pieces")
def test_a_file_that_changes_mid_way_is_restarted_not_stitched(capped, tmp_path):
    old, new = payload(SIZE, seed=1), payload(SIZE, seed=2)
    capped.add(PATH, old)  # ETag from the content: a new version has a new one
    result: dict = {}

    def run() -> None:
        try:
            result["fetch"], result["copy"] = download(capped, tmp_path / "m.part", expected=None)
        except BaseException as exc:  # noqa: BLE001  (raised again in the test's thread)
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: capped.bytes_sent(PATH) >= SIZE // 4, "a quarter of the old version sent")
    capped.replace(PATH, new)
    thread.join()
    assert "error" not in result, result.get("error")
    assert result["fetch"].partial.read_bytes() == new and result["copy"].sha256 == sha256(new)
    changed = [r for r in gets(capped, PATH) if r.range is not None and r.status == 200]
    assert changed  # a range asked with the old ETag in If-Range got the whole new version: restarted


@pytest.mark.usefixtures("small_pieces")
def test_a_pinned_file_that_changes_mid_way_fails_its_checksum(capped, tmp_path):
    old, new = payload(SIZE, seed=1), payload(SIZE, seed=2)
    capped.add(PATH, old)
    errors: list = []

    def run() -> None:
        try:
            download(capped, tmp_path / "m.part", expected=sha256(old))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: capped.bytes_sent(PATH) >= SIZE // 4, "a quarter of the old version sent")
    capped.replace(PATH, new)
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], ChecksumMismatch) and errors[0].exit_code == 3
    assert not (tmp_path / "m.part").exists()


@pytest.mark.usefixtures("small_pieces")
def test_a_refused_signed_url_is_resolved_again_from_the_original(capped, tmp_path):
    """The original URL redirects to a signed, expiring one (release storage, S3); when that
    starts answering 403, the remaining ranges go through the original URL to a new signature."""
    data = payload(SIZE)
    for name in (PATH, "/signed/1", "/signed/2"):  # PATH itself only ever redirects
        capped.add(name, data, etag="v1")
    capped.set_fault(PATH, Fault(redirect_to=capped.url("/signed/1")))
    result: dict = {}

    def run() -> None:
        try:
            result["fetch"], result["copy"] = download(capped, tmp_path / "m.part", expected=sha256(data))
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: capped.bytes_sent("/signed/1") >= SIZE // 4, "a quarter sent from the first signature")
    capped.set_fault("/signed/1", Fault(statuses=[403] * 1000))  # expired
    capped.set_fault(PATH, Fault(redirect_to=capped.url("/signed/2")))
    thread.join()
    assert "error" not in result, result.get("error")
    assert result["fetch"].partial.read_bytes() == data
    assert any(r.status == 403 for r in gets(capped, "/signed/1"))
    assert len(gets(capped, PATH)) >= 2 and ranged(capped, "/signed/2")


@pytest.mark.usefixtures("small_pieces")
def test_a_dropped_range_is_resumed_on_its_own(capped, tmp_path):
    data = payload(SIZE)
    capped.add(PATH, data, etag="v1")
    capped.set_fault(PATH, Fault(drop_after=300_000, drop_times=3))
    fetch, copy = download(capped, tmp_path / "m.part", expected=sha256(data))
    assert fetch.partial.read_bytes() == data and copy.sha256 == sha256(data)
    assert capped.bytes_sent(PATH) < SIZE + (4 << 20)  # the dropped pieces went on from where they broke


# --- streamed into a bundle: a bounded window ---------------------------------------------


class Sink:
    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


@pytest.mark.usefixtures("small_pieces")
def test_a_streamed_download_holds_at_most_its_window(capped, monkeypatch):
    window = 2 << 20
    monkeypatch.setattr(segmented, "STREAM_WINDOW", window)
    held = {"now": 0, "peak": 0}

    class Counting(segmented.MemorySink):
        def put(self, offset, data):
            super().put(offset, data)
            with self.lock:
                held["now"] = sum(len(c) for c in self.chunks.values())
                held["peak"] = max(held["peak"], held["now"])

    monkeypatch.setattr(segmented, "MemorySink", Counting)
    data = payload(SIZE)
    capped.add(PATH, data, etag="v1")
    sink = Sink()
    settings = fast_settings()
    with make_client(settings) as client:
        fetch = Download(client=client, url=capped.url(PATH), partial=None, what=PATH, settings=settings, size_cap=SIZE, connections=8)
        copy = fetch.stream_into(sink, sha256(data))
    assert b"".join(sink.parts) == data and copy.sha256 == sha256(data)
    assert fetch.connections_used == 8 and capped.peak_bodies_in_flight > 1
    assert 0 < held["peak"] <= window + 8 * (256 << 10)  # the window, and at most one read more per connection


# --- kill -9 half way, then the next run --------------------------------------------------


def _journaled(home) -> int:
    """Bytes the journal beside the staging file says arrived (0 before there is one)."""
    import json

    for meta in home.rglob("*.part.json"):
        try:
            ranges = json.loads(meta.read_text()).get("ranges") or []
        except (OSError, ValueError):
            continue  # between two saves
        return sum(end - start for start, end in ranges)
    return 0


def test_kill_9_half_way_then_a_resume_fetches_only_what_is_missing(capped, write_recipe, isolated_env):
    """The real command, SIGKILLed once the journal says half the file arrived; the next run
    asks only for the missing ranges: the server sends at most 1.2x the file in all."""
    import signal
    import subprocess
    import sys

    from conftest import download_step

    size = 40 << 20  # above segmented.MIN_SIZE: nothing is scaled down in the child
    data = payload(size)
    url = capped.add("/packs/big.bin", data, etag="v1")
    write_recipe("big", [download_step(url, "big/big.bin", data)])
    command = [sys.executable, "-c", "from devops_cp.cli import main; main()", "data", "install", "big", "--yes", "--progress", "none"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _journaled(isolated_env.home) >= size // 2, "the journal to hold half the file", seconds=120)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    journaled, first_run = _journaled(isolated_env.home), len(gets(capped))
    assert size // 2 <= journaled < size

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (isolated_env.sample_dir() / "big" / "big.bin").read_bytes() == data
    resumed = gets(capped)[first_run:]
    assert resumed[0].range is not None and resumed[0].headers["if-range"] == '"v1"'  # not from zero
    assert capped.bytes_sent("/packs/big.bin") <= 1.2 * size
    assert not list(isolated_env.home.rglob("*.part*"))  # the staging file and its journal are gone


# --- the setting ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, ok", [("1", True), ("8", True), ("0", False), ("65", False), ('"eight"', False), ("true", False)])
def test_max_connections_per_download_is_checked(isolated_env, value, ok):
    from executor.config import load_config
    from manifests.errors import ConfigError

    path = isolated_env.write_config(f"max_connections_per_download = {value}\n")
    if ok:
        assert load_config(path).max_connections_per_download == int(value)
    else:
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        assert exc.value.exit_code == 2 and "max_connections_per_download" in exc.value.message


def test_the_engine_takes_the_config_or_its_own_parameter(isolated_env):
    """`install --from` a site mirror passes connections_per_download=1: a fleet of hosts each
    opening eight connections would be its own denial of service."""
    from devops_cp.app import App
    from executor.engine import Engine

    isolated_env.write_config("max_connections_per_download = 5\n")
    store = App(settings=fast_settings()).store
    assert Engine(store).step_context().connections == 5
    assert Engine(store, connections_per_download=1).step_context().connections == 1


@pytest.mark.usefixtures("small_pieces")
def test_credentials_never_follow_the_redirect_to_a_signed_url_on_another_host(capped, tmp_path):
    """Ranges go straight to the signed URL the original redirected to; like httpx on the
    redirect itself, they carry no credentials to a host other than the configured one."""
    import httpx

    data = payload(SIZE)
    with LocalServer(rate_per_connection=RATE) as storage:
        storage.add("/blob", data, etag="v1")
        capped.add(PATH, data, etag="v1")
        capped.set_fault(PATH, Fault(redirect_to=storage.url("/blob")))
        fetch, _ = download(capped, tmp_path / "m.part", expected=sha256(data), auth=httpx.BasicAuth("user", "secret"))
        assert fetch.partial.read_bytes() == data and fetch.connections_used == 8
        assert gets(capped, PATH)[0].headers.get("authorization")  # the configured host got them
        blob = gets(storage, "/blob")
        assert len(blob) >= 8 and all(r.headers.get("authorization") is None for r in blob)


@pytest.mark.usefixtures("small_pieces")
def test_a_bundle_stages_its_downloads_over_several_connections(capped, write_recipe, tmp_path):
    """What `bundle` stages (a download without a pinned checksum) goes through the same machinery."""
    from conftest import download_step

    from devops_cp.app import App
    from executor.engine import Engine
    from executor.txn import PackTransaction

    data = payload(SIZE)
    url = capped.add(PATH, data, etag="v1")
    write_recipe("staged", [download_step(url, "staged/model.bin", data, checksum=False)])
    app = App(settings=fast_settings())
    plan = app.plan("staged")
    engine = Engine(app.store, settings=app.settings)
    try:
        with PackTransaction(app.store, tmp_path / "bundle-staging", plan.key) as txn:
            engine.stage(plan, txn)  # what bundle does
            assert txn.files["staged/model.bin"].sha256 == sha256(data)
    finally:
        engine.close()
    assert capped.peak_bodies_in_flight >= 2 and len(ranged(capped)) >= 7


@pytest.mark.usefixtures("small_pieces")
def test_an_interrupt_keeps_the_ranges_that_arrived_for_the_next_run(capped, tmp_path):
    """Ctrl-C while several connections run: the journal says what arrived, the next run asks
    only for the rest, and the file is whole. What was asked is checked, not what the server
    pushed ahead on a connection closed once its piece was done: that depends on how soon the
    client closed it, so on the machine's load."""
    import json

    from executor.events import Meter

    data = payload(SIZE)
    capped.add(PATH, data, etag="v1")
    partial = tmp_path / "m.part"

    class Interrupting(Meter):
        def update(self, done, force=False):
            if done >= SIZE // 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download(capped, partial, expected=sha256(data), meter=Interrupting(lambda event: None, "p", 0, "m", SIZE))
    ranges = json.loads(partial.with_name(partial.name + ".json").read_text())["ranges"]
    arrived = sum(end - start for start, end in ranges)
    assert SIZE // 2 <= arrived < SIZE and len(ranges) >= 1
    assert ranges[0][0] == 0
    wait_for(lambda: capped.bodies_in_flight == 0, "the interrupted run's connections to close")

    first_run = len(gets(capped, PATH))
    fetch, copy = download(capped, partial, expected=sha256(data))
    assert fetch.partial.read_bytes() == data and copy.sha256 == sha256(data)
    asked = [r.range.removeprefix("bytes=").split("-") for r in gets(capped, PATH)[first_run:]]
    assert asked[0] == [str(ranges[0][1]), ""]  # on from the end of what arrived from byte 0, not from zero
    for first, last in asked:  # each asks from a byte that had not arrived; a bounded range, for nothing that had
        end = int(last) + 1 if last else int(first) + 1
        assert not any(start < end and int(first) < stop for start, stop in ranges), (first, last, ranges)
