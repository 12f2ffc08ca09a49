"""THE streaming copy (executor/transfer.py): hash while writing, length cap, disk full, progress."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from executor.events import Meter, Progress, StepDone, StepStarted
from executor import file_maker
from executor.transfer import CHUNK_SIZE, Copy, HashingReader, SmallFileWriter, SmallFiles, SmallFilesProcess, closing_output, copy_file, file_chunks, hash_file
from manifests.errors import ChecksumMismatch, LengthError, NoSpaceError

from conftest import payload, sha256


def test_copy_writes_hashes_and_counts(tmp_path):
    data = payload(3 * CHUNK_SIZE + 17)
    dest = tmp_path / "sub" / "out.bin"
    copy = copy_file(io.BytesIO(data), dest, what="test")
    assert dest.read_bytes() == data
    assert copy.done == len(data)
    assert copy.sha256 == sha256(data)
    copy.check(sha256(data), len(data))


def test_check_refuses_a_wrong_hash_and_a_wrong_size():
    copy = Copy(None, what="thing").feed([b"abc"])
    with pytest.raises(ChecksumMismatch) as exc:
        copy.check("0" * 64)
    assert exc.value.exit_code == 3
    assert "thing" in exc.value.message and exc.value.actual == sha256(b"abc")
    with pytest.raises(LengthError) as exc:
        copy.check(None, 4)
    assert exc.value.exit_code == 3


def test_length_cap_refuses_the_chunk_that_crosses_it_and_writes_nothing_of_it():
    out = io.BytesIO()
    copy = Copy(out, what="capped", limit=5)
    with pytest.raises(LengthError) as exc:
        copy.feed([b"abc", b"def"])
    assert "5 bytes" in exc.value.message
    assert out.getvalue() == b"abc" and copy.done == 3


def test_copy_file_respects_size_and_limit(tmp_path):
    data = payload(1000)
    copy = copy_file(io.BytesIO(data), tmp_path / "a", what="a", size=400)
    assert (tmp_path / "a").read_bytes() == data[:400] and copy.done == 400
    with pytest.raises(LengthError):
        copy_file(io.BytesIO(data), tmp_path / "b", what="b", limit=999)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_hash_is_independent_of_how_the_stream_is_cut(chunks):
    copy = Copy(None, what="x").feed(chunks)
    joined = b"".join(chunks)
    assert copy.sha256 == hashlib.sha256(joined).hexdigest()
    assert copy.done == len(joined)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000), st.integers(min_value=0, max_value=6000))
def test_file_chunks_reads_at_most_size(data, size):
    assert b"".join(file_chunks(io.BytesIO(data), size)) == data[:size]


def test_hash_file_and_hashing_reader(tmp_path):
    data = payload(CHUNK_SIZE + 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path).sha256 == sha256(data)
    with open(path, "rb") as raw:
        reader = HashingReader(raw)
        assert reader.read(10) == data[:10]
        copy = reader.drain()  # the rest is hashed even though nobody read it
    assert copy.sha256 == sha256(data) and copy.done == len(data)


def test_meter_reports_bytes_total_percent_speed_eta():
    events = []
    meter = Meter(events.append, "pack", 0, "file.bin", 1000)
    meter.restart(0, 1000)
    meter.update(500, force=True)
    meter.done(1000)
    assert isinstance(events[0], StepStarted) and events[0].total == 1000
    progress = [e for e in events if isinstance(e, Progress)]
    half = next(e for e in progress if e.downloaded == 500)
    assert half.total == 1000 and half.percent == 50 and half.speed_bps > 0 and half.eta_seconds is not None
    assert progress[-1].percent == 100
    assert isinstance(events[-1], StepDone) and events[-1].size == 1000


# --- disk full, under pyfakefs -------------------------------------------------------------


def test_disk_full_while_writing_becomes_no_space_error(fs):
    """pyfakefs raises ENOSPC once the fake disk is full; the copy names the place and the size."""
    fs.create_dir("/data")
    fs.set_disk_usage(100_000, "/data")
    data = payload(300_000)
    with pytest.raises(NoSpaceError) as exc:
        with open("/data/out.part", "wb") as out:
            Copy(out, what="out", limit=len(data)).feed(file_chunks(io.BytesIO(data)))
    err = exc.value
    assert err.exit_code == 5
    assert err.where == "/data" and err.needed == len(data)
    assert "/data" in err.message and "needs" in err.message
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.ENOSPC


def test_disk_full_surfacing_only_when_the_buffer_is_flushed_is_still_no_space_error(fs):
    """A write smaller than the io buffer fails only at flush (as EDQUOT often does on NFS):
    the copy flushes before it returns, so the error is ours, not a raw OSError at close()."""
    fs.create_dir("/data")
    fs.set_disk_usage(1000, "/data")
    with pytest.raises(NoSpaceError) as exc:
        with closing_output(open("/data/out.part", "wb")) as out:  # close() must not replace the error
            Copy(out, what="out").feed([b"x" * 2000])
    assert exc.value.where == "/data" and exc.value.needed == 2000


# --- disk space reserved before the first byte (fallocate) -------------------------------------------


def test_closing_output_reserves_the_space_to_come_and_leaves_the_size_alone(tmp_path):
    """The blocks are allocated past the end (a resume reads a partial file's size, so it must not grow)."""
    with open(tmp_path / "half.part", "wb") as f:
        f.write(b"x" * 100_000)
    with closing_output(open(tmp_path / "half.part", "ab"), reserve=8 << 20) as out:
        st = os.fstat(out.fileno())
        if st.st_blocks * 512 < 8 << 20:
            pytest.skip(f"the filesystem of {tmp_path} does not allocate ahead (fallocate): nothing to see here")
        assert st.st_size == 100_000
        Copy(out, what="half").feed([b"y" * 1000])
    assert (tmp_path / "half.part").read_bytes() == b"x" * 100_000 + b"y" * 1000


def test_space_that_cannot_be_reserved_is_no_space_error_before_the_first_byte_tmpfs(tmpfs):
    mnt = tmpfs("2m")
    with pytest.raises(NoSpaceError) as exc:
        with closing_output(open(mnt / "big.part", "wb"), reserve=3 << 20) as out:
            out.write(b"never")
    assert exc.value.where == str(mnt) and exc.value.needed == 3 << 20
    assert isinstance(exc.value.__cause__, OSError) and exc.value.__cause__.errno == errno.ENOSPC
    assert (mnt / "big.part").stat().st_size == 0
    assert shutil.disk_usage(mnt).used < 1 << 20  # nothing stays reserved either


def test_no_reservation_under_pyfakefs(fs):
    """libc cannot see a fake file: the writes allocate, as on a filesystem without fallocate."""
    fs.create_dir("/data")
    with closing_output(open("/data/out", "wb"), reserve=1 << 30) as out:
        out.write(b"fine")
    assert open("/data/out", "rb").read() == b"fine"


def test_other_write_errors_are_not_disguised_as_disk_full(tmp_path):
    class Broken(io.RawIOBase):
        name = str(tmp_path / "x")

        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError) as exc:
        Copy(Broken(), what="x").feed([b"data"])
    assert not isinstance(exc.value, NoSpaceError) and exc.value.errno == errno.EIO


# --- SmallFiles / SmallFilesProcess: small files created beside the caller --------------------------------

WRITERS = pytest.mark.parametrize("writer", [SmallFiles, SmallFilesProcess], ids=["thread", "process"])


@WRITERS
def test_small_files_writes_every_file_whole(tmp_path, writer):
    files = {str(tmp_path / f"f{i:04d}"): payload(i * 37 % 5000, seed=i) for i in range(3 * SmallFiles.BATCH_FILES + 5)}
    files[str(tmp_path / "empty")] = b""
    files[str(tmp_path / "large")] = payload(3 * SmallFilesProcess.PIPE_BYTES + 1)  # more than the pipe holds at once
    with writer() as small:
        for path, data in files.items():
            small.write(path, data)
    assert {path: open(path, "rb").read() for path in files} == files


@WRITERS
def test_small_files_reports_the_first_failure_and_writes_nothing_after_it(tmp_path, writer):
    small = writer()
    small.write(str(tmp_path / "first"), b"1")
    small.write(str(tmp_path / "no-such-folder" / "second"), b"2")
    small.write(str(tmp_path / "third"), b"3")
    with pytest.raises(FileNotFoundError) as exc:
        small.close()
    assert exc.value.filename == str(tmp_path / "no-such-folder" / "second")
    assert (tmp_path / "first").read_bytes() == b"1"
    assert not (tmp_path / "third").exists()


def test_small_files_disk_full_is_no_space_error(fs):
    fs.set_disk_usage(100_000)
    fs.create_dir("/data")
    small = SmallFiles()
    for i in range(5):
        small.write(f"/data/f{i}", b"x" * 30_000)
    with pytest.raises(NoSpaceError) as exc:
        small.close()
    assert exc.value.where == "/data"


def test_small_files_process_disk_full_is_no_space_error_at_the_next_write(tmpfs):
    """The child stops at the full disk; the caller hears of it as soon as the pipe breaks."""
    mnt = tmpfs("1m")
    small = SmallFilesProcess()
    with pytest.raises(NoSpaceError) as exc:
        for i in range(1000):  # 4 MB into 1 MB: the child fails long before the last write
            small.write(str(mnt / f"f{i:04d}"), b"x" * 4096)
        small.close()
    assert exc.value.where == str(mnt)
    small.abandon()
    assert small.process.returncode is not None


@WRITERS
def test_small_files_abandoned_mid_way_stops_without_writing_the_rest(tmp_path, monkeypatch, writer):
    """An error in the caller: the queue or pipe may be full, the writer still stops, and soon."""
    from executor import transfer

    real = transfer._write_whole
    monkeypatch.setattr(transfer, "_write_whole", lambda path, data: (time.sleep(0.001), real(path, data)))  # the thread's
    count = SmallFiles.BATCH_FILES * (SmallFiles.QUEUE + 2)
    with pytest.raises(RuntimeError, match="the caller failed"):
        with writer() as small:
            for i in range(count):
                small.write(str(tmp_path / f"f{i}"), b"x" * 4096)
            raise RuntimeError("the caller failed")
    if writer is SmallFiles:
        assert not small.thread.is_alive()
    else:
        assert small.process.returncode is not None
        assert small.process.stdin.closed and small.process.stdout.closed
    assert len(list(tmp_path.iterdir())) < count


def test_small_file_writer_starts_a_process_only_past_min_files(tmp_path, monkeypatch):
    """A handful of files never pays for a process; past MIN_FILES the rest go to one."""
    monkeypatch.setattr(SmallFilesProcess, "MIN_FILES", 10)
    files = {str(tmp_path / f"f{i:02d}"): payload(i * 100, seed=i) for i in range(25)}
    with SmallFileWriter() as writer:
        for n, (path, data) in enumerate(files.items(), 1):
            writer.write(path, data)
            assert (writer.process is None) == (n <= 10)
    assert writer.process.process.returncode == 0 and not writer.thread.thread.is_alive()
    assert {path: open(path, "rb").read() for path in files} == files


@pytest.mark.parametrize("broken", ["no interpreter", "no such program"])
def test_small_file_writer_without_a_child_process_writes_everything_on_the_thread(tmp_path, monkeypatch, broken):
    """A frozen or embedded Python may have no interpreter to start: slower, never a failure."""
    monkeypatch.setattr(SmallFilesProcess, "MIN_FILES", 3)
    monkeypatch.setattr("sys.executable", "" if broken == "no interpreter" else str(tmp_path / "no-python"))
    files = {str(tmp_path / f"f{i}"): payload(500, seed=i) for i in range(10)}
    with SmallFileWriter() as writer:
        for path, data in files.items():
            writer.write(path, data)
    assert writer.process is None
    assert {path: open(path, "rb").read() for path in files} == files


def test_small_file_writer_failure_on_the_thread_stops_the_process_too(tmp_path, monkeypatch):
    monkeypatch.setattr(SmallFilesProcess, "MIN_FILES", 2)
    writer = SmallFileWriter()
    writer.write(str(tmp_path / "no-such-folder" / "a"), b"a")  # the thread's file fails
    for i in range(5):
        writer.write(str(tmp_path / f"f{i}"), b"x")  # the 3rd and later: the process's
    with pytest.raises(FileNotFoundError):
        writer.close()
    assert writer.process.process.returncode is not None


def test_the_child_leaves_ctrl_c_to_its_parent(tmp_path):
    """Ctrl-C reaches the whole process group; the child must not die of it (nor print a traceback):
    the parent decides, by closing it or abandoning the update."""
    import signal

    small = SmallFilesProcess()
    small.write(str(tmp_path / "before"), b"1")
    small.process.stdin.flush()
    deadline = time.monotonic() + 30
    while not (tmp_path / "before").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # once it has written a file, the child is in its loop, SIGINT ignored
    small.process.send_signal(signal.SIGINT)
    small.write(str(tmp_path / "after"), b"2")
    small.close()
    assert small.process.returncode == 0
    assert (tmp_path / "before").read_bytes() == b"1" and (tmp_path / "after").read_bytes() == b"2"


def _frames(files: dict[bytes, bytes]) -> bytes:
    return b"".join(file_maker.FRAME.pack(len(path), len(data)) + path + data for path, data in files.items())


def test_file_maker_child_writes_each_frame_and_reports_the_count(tmp_path):
    files = {bytes(tmp_path / f"f{i}"): payload(i * 1000, seed=i) for i in range(5)}
    out = io.StringIO()
    assert file_maker.serve(io.BytesIO(_frames(files)), out, parent=os.getppid()) == 0
    assert out.getvalue() == "ok 5\n"
    assert {path: open(path, "rb").read() for path in files} == files


def test_file_maker_child_of_a_dead_parent_writes_nothing_more(tmp_path):
    """A killed sideload leaves its child behind: it must not go on adding files to the abandoned update."""
    files = {bytes(tmp_path / "a"): b"a", bytes(tmp_path / "b"): b"b"}
    out = io.StringIO()
    assert file_maker.serve(io.BytesIO(_frames(files)), out, parent=os.getppid() + 1) == file_maker.ORPHANED
    assert list(tmp_path.iterdir()) == [] and out.getvalue() == ""


@pytest.mark.parametrize("cut", [3, file_maker.FRAME.size + 2, -1])
def test_file_maker_child_drops_a_frame_cut_short(tmp_path, cut):
    """The parent died while sending: the cut file is never created, the whole ones before it are."""
    stream = _frames({bytes(tmp_path / "whole"): b"whole"}) + _frames({bytes(tmp_path / "cut"): b"12345"})[:cut]
    assert file_maker.serve(io.BytesIO(stream), io.StringIO()) == file_maker.ORPHANED
    assert [p.name for p in tmp_path.iterdir()] == ["whole"]


# --- a download's writes on another thread (WriteThread) --------------------------------------


def _write_threads(monkeypatch) -> list[str]:
    """The names of the threads that wrote through a WriteThread."""
    from executor import transfer

    names: list[str] = []
    take = transfer.WriteThread.take
    monkeypatch.setattr(transfer.WriteThread, "take", lambda self, batch: names.append(threading.current_thread().name) or take(self, batch))
    return names


@pytest.mark.parametrize("plain", [False, True], ids=["fast", "plain"])
def test_a_long_copy_with_write_thread_writes_every_byte_in_order_on_that_thread(tmp_path, monkeypatch, plain):
    """Past HASH_AHEAD the writes go to the WriteThread (unless plain): the file, the hash and the
    count are those of the plain copy, and write-behind comes at the same offsets."""
    from executor import durable, transfer

    names = _write_threads(monkeypatch)
    calls = []
    real = durable.write_behind
    monkeypatch.setattr(durable, "write_behind", lambda out, keep: calls.append(out.tell()) or real(out, keep))
    data = payload(2 * transfer.WRITEBACK_STEP + 3 * CHUNK_SIZE + 17)
    with open(tmp_path / "out.bin", "wb") as out:
        copy = Copy(out, what="long", writeback=True, write_thread=True, plain=plain).feed(file_chunks(io.BytesIO(data)))
    assert (tmp_path / "out.bin").read_bytes() == data
    assert copy.done == len(data) and copy.sha256 == sha256(data)
    assert set(names) == (set() if plain else {"copy-write"})
    assert calls == ([] if plain else [transfer.WRITEBACK_STEP, 2 * transfer.WRITEBACK_STEP])


def test_a_full_disk_met_by_the_write_thread_is_no_space_error_and_the_file_a_prefix_tmpfs(tmpfs, monkeypatch):
    """A real 6 MiB filesystem fills while the WriteThread writes a 12 MiB copy: NoSpaceError naming
    the place, the file holds only bytes of the copy in order, and no copy thread is left running."""
    names = _write_threads(monkeypatch)
    mnt = tmpfs("6m")
    data = payload(12 << 20)
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(NoSpaceError) as exc:
        with closing_output(open(mnt / "out.part", "wb")) as out:
            Copy(out, what="out", limit=len(data), write_thread=True).feed(file_chunks(io.BytesIO(data)))
    assert names and set(names) == {"copy-write"}, "the disk filled before the WriteThread started: nothing was tested"
    assert exc.value.where == str(mnt) and exc.value.exit_code == 5
    assert isinstance(exc.value.__cause__, OSError) and exc.value.__cause__.errno == errno.ENOSPC
    written = (mnt / "out.part").read_bytes()
    assert 4 << 20 < len(written) < len(data) and written == data[: len(written)]
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name in ("copy-write", "copy-sha256")]


def test_a_download_past_hash_ahead_writes_on_the_write_thread_and_resumes_a_drop(local_server, tmp_path, monkeypatch, http_path):
    """A real 12 MiB download dropped at 9 MiB: the WriteThread wrote it, the partial file was a
    prefix the resume continued from, and the bytes are identical; through both HTTP paths."""
    from support.localserver import Fault
    from executor.http import Download, make_client

    from conftest import fast_settings, gets

    names = _write_threads(monkeypatch)
    data = payload(12 << 20, seed=3)
    local_server.add("/big.bin", data, etag="v1")
    local_server.set_fault("/big.bin", Fault(drop_after=9 << 20))
    partial = tmp_path / "big.bin.part"
    with make_client(fast_settings()) as client:
        copy = Download(client, local_server.url("/big.bin"), partial, "big", settings=fast_settings(), writeback=True).run(sha256(data))
    assert partial.read_bytes() == data and copy.sha256 == sha256(data) and copy.done == len(data)
    first, second = gets(local_server)
    assert second.range == f"bytes={first.body_bytes_sent}-" and second.status == 206
    assert set(names) == {"copy-write"}


def test_ctrl_c_while_the_write_thread_writes_keeps_every_counted_byte_for_the_resume(local_server, tmp_path, http_path):
    """Ctrl-C (STOP) at 8 MiB of a 12 MiB download whose writes are on the WriteThread: Interrupted,
    the partial file holds every byte counted so far, in order, and the next run resumes after them."""
    from executor import interrupt
    from executor.events import Meter
    from executor.http import Download, make_client
    from manifests.errors import Interrupted

    from conftest import fast_settings, gets

    data = payload(12 << 20, seed=4)
    local_server.add("/big.bin", data, etag="v1")
    partial = tmp_path / "big.bin.part"

    class CtrlCAt8MiB(Meter):
        def update(self, done, force=False):
            if done >= 8 << 20:
                interrupt.STOP.set()

    def fetch(meter=None):
        with make_client(fast_settings()) as client:
            return Download(client, local_server.url("/big.bin"), partial, "big", settings=fast_settings(), writeback=True, meter=meter).run(sha256(data))

    try:
        with pytest.raises(Interrupted):
            fetch(CtrlCAt8MiB(lambda event: None, "p", 0, "big", len(data)))
    finally:
        interrupt.STOP.clear()
    kept = partial.read_bytes()
    assert 8 << 20 <= len(kept) < len(data) and kept == data[: len(kept)]
    copy = fetch()
    assert partial.read_bytes() == data and copy.sha256 == sha256(data)
    assert gets(local_server)[-1].range == f"bytes={len(kept)}-"
