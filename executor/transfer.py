"""THE streaming copy. Every byte this tool moves (an HTTP body, an archive member,
a file on a USB stick) goes through `Copy.feed`: written once, hashed on the way,
counted against a length cap, reported as progress. Nothing else loops over chunks.

`Copy` with plain=True is the reference: one thread, plain writes. The fast paths sit behind
the same calls and are skipped when plain (WriteSettings.plain, DEVOPS_CP_PLAIN_WRITES=1):
HashThread (sha256 on a second core), WriteThread (a download's writes off the receiving
thread), write-behind and fallocate (executor/durable.py), and the small-file writers behind
the `Writer` interface (`small_file_writer`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol

from executor import durable, file_maker
from executor.interrupt import STOP, interrupted
from executor.file_maker import write_whole as _write_whole
from executor.events import Meter
from executor.store import STAGING_NAME
from manifests.errors import ChecksumMismatch, FileTooLargeError, LengthError, NoSpaceError

CHUNK_SIZE = 1 << 20  # large reads: fewer Python round trips, memory stays flat
HASH_AHEAD = 4 << 20  # a copy longer than this hashes on a second core (see HashThread)
HASH_BATCH = 1 << 20  # bytes handed to that thread at a time
WRITEBACK_STEP = 16 << 20  # a copy with writeback=True starts writing to disk every this many bytes
WRITEBACK_KEEP = 2 * WRITEBACK_STEP  # ... and lets go of the page cache more than this far behind
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class Copy:
    """One streaming copy into `out` (or into nothing, to hash only)."""

    def __init__(
        self,
        out: BinaryIO | None,
        *,
        what: str,
        limit: int | None = None,
        meter: Meter | None = None,
        done: int = 0,
        hasher: "hashlib._Hash | None" = None,
        writeback: bool = False,
        plain: bool = False,
        write_thread: bool = False,
    ):
        """`writeback`: the file will be synced before it becomes visible; write it to disk as it
        is copied (durable.write_behind), so that sync has little left to do.
        `write_thread`: `out` is a file only this copy writes to while it feeds; past HASH_AHEAD
        its writes go to a WriteThread (for a socket's bytes: receiving costs as much as writing).
        `plain`: the reference path, no HashThread, no WriteThread and no write-behind."""
        self.out = out
        self.writeback = writeback
        self.plain = plain
        self.write_thread = write_thread
        self.what = what
        self.limit = limit
        self.meter = meter
        self.done = done
        self.hasher = hasher or hashlib.sha256()

    def feed(self, chunks: Iterable[bytes]) -> "Copy":
        out, hasher, meter, limit = self.out, self.hasher, self.meter, self.limit
        start, worker, writer = self.done, None, None
        next_writeback = self.done + WRITEBACK_STEP if self.writeback and not self.plain else None
        hash_ahead = None if self.plain else start + HASH_AHEAD
        try:
            for chunk in chunks:
                if STOP.is_set():  # Ctrl-C: stop at this chunk; a partial download stays resumable
                    raise interrupted()
                size = len(chunk)
                if limit is not None and self.done + size > limit:
                    raise LengthError(
                        f"{self.what} is longer than the {limit} bytes declared for it",
                        hint="the source sent more than it announced; nothing was installed",
                    )
                if worker is None and hash_ahead is not None and self.done >= hash_ahead:
                    worker = HashThread(hasher)
                    if out is not None and self.write_thread:
                        writer = WriteThread(out, limit=limit, done=self.done, next_writeback=next_writeback)
                if worker is not None:
                    chunk = stable(chunk)
                if writer is not None:
                    writer.add(chunk)
                elif out is not None:
                    try:
                        out.write(chunk)
                        if next_writeback is not None and self.done + size >= next_writeback:
                            out.flush()
                            durable.write_behind(out, WRITEBACK_KEEP)
                            next_writeback += WRITEBACK_STEP
                    except OSError as exc:
                        raise translate_write_error(exc, out, self.limit or self.done + size) from exc
                if worker is None:
                    hasher.update(chunk)
                else:
                    worker.add(chunk)
                self.done += size
                if meter is not None:
                    meter.update(self.done)
            if writer is not None:
                writer, finishing = None, writer
                finishing.close()  # every byte written, or the first write error raised
            if out is not None:
                try:
                    out.flush()  # a full disk (or an NFS quota) may only say so now, not at close()
                except OSError as exc:
                    raise translate_write_error(exc, out, self.limit or self.done) from exc
        finally:
            if writer is not None:  # failing anyway: what was queued is written, its error dropped
                writer.close(raise_error=False)
            if worker is not None:  # whatever happened, the hash covers exactly the `done` bytes
                worker.close()
        return self

    @property
    def sha256(self) -> str:
        return self.hasher.hexdigest()

    def check(self, expected_sha256: str | None, expected_size: int | None = None) -> None:
        if expected_size is not None and self.done != expected_size:
            raise LengthError(
                f"{self.what} is {self.done} bytes, {expected_size} were declared",
                hint="the copy is truncated or the source is damaged; nothing was installed",
            )
        if expected_sha256 is not None and self.sha256 != expected_sha256:
            raise ChecksumMismatch(self.what, expected_sha256, self.sha256)


def stable(chunk) -> bytes | memoryview:
    """The chunk as bytes another thread may keep: a reused buffer (bytearray, mmap) would change under it."""
    if type(chunk) is bytes or (type(chunk) is memoryview and type(chunk.obj) is bytes):
        return chunk
    return bytes(chunk)


class _BatchThread:
    """Chunks handed to a second thread HASH_BATCH bytes at a time, for `take` to use in order.

    hashlib, the socket and the file calls all release the GIL on large buffers, so that
    thread's work overlaps the caller's instead of following it. At most QUEUE batches wait,
    so memory stays flat; close() returns once every chunk added has been taken.
    """

    QUEUE = 4

    def __init__(self, name: str):
        self.batch: list[bytes] = []
        self.batched = 0
        self.queue: queue.Queue = queue.Queue(maxsize=self.QUEUE)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def add(self, chunk) -> None:
        self.batch.append(stable(chunk))
        self.batched += len(chunk)
        if self.batched >= HASH_BATCH:
            self.queue.put(self.batch)
            self.batch, self.batched = [], 0

    def take(self, batch: list[bytes]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            self.take(batch)

    def close(self) -> None:
        if self.batch:
            self.queue.put(self.batch)
            self.batch, self.batched = [], 0
        self.queue.put(None)
        self.thread.join()


class HashThread(_BatchThread):
    """sha256 on a second core while the copy loop reads and writes the next chunks."""

    def __init__(self, hasher: "hashlib._Hash"):
        self.hasher = hasher
        super().__init__("copy-sha256")

    def take(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self.hasher.update(chunk)


class WriteThread(_BatchThread):
    """A copy's writes (and write-behind) on another thread, while the caller receives the next
    chunks: for a download from a fast server, receiving and writing each cost a core's worth.
    The first write error stops the writing; the caller hears of it at its next add() or at
    close(). What the file holds is always a prefix of what was added."""

    def __init__(self, out: BinaryIO, *, limit: int | None, done: int, next_writeback: int | None):
        """`done`: the copy's count so far, which `next_writeback` is in."""
        self.out, self.limit = out, limit
        self.written = done
        self.next_writeback = next_writeback
        self.error: Exception | None = None
        super().__init__("copy-write")

    def add(self, chunk) -> None:
        if self.error is not None:
            raise self.error
        super().add(chunk)

    def take(self, batch: list[bytes]) -> None:
        if self.error is not None:
            return  # keep taking batches, so that the caller never blocks on a full queue
        out = self.out
        try:
            for chunk in batch:
                out.write(chunk)
                self.written += len(chunk)
            if self.next_writeback is not None and self.written >= self.next_writeback:
                out.flush()
                durable.write_behind(out, WRITEBACK_KEEP)
                self.next_writeback += WRITEBACK_STEP
        except OSError as exc:
            self.error = translate_write_error(exc, out, self.limit or self.written)
            self.error.__cause__ = exc  # as `raise ... from exc` would, on the caller's side

    def close(self, raise_error: bool = True) -> None:
        super().close()
        if raise_error and self.error is not None:
            raise self.error


class InlineHash:
    """HashThread's interface, hashing in the calling thread: the plain path."""

    def __init__(self, hasher: "hashlib._Hash"):
        self.hasher = hasher
        self.add = hasher.update

    def close(self) -> None:
        pass


def hash_worker(hasher: "hashlib._Hash", *, plain: bool = False) -> "HashThread | InlineHash":
    return InlineHash(hasher) if plain else HashThread(hasher)


def translate_write_error(exc: OSError, out: BinaryIO | str, needed: int) -> Exception:
    """A full disk or quota as NoSpaceError naming the data dir, a file too large for the filesystem
    as FileTooLargeError; other errors unchanged. `out`: a file or its path."""
    if exc.errno not in _SPACE_ERRNOS and exc.errno != errno.EFBIG:
        return exc
    name = out if isinstance(out, str) else getattr(out, "name", ".")
    where = os.path.dirname(os.path.abspath(name))
    where = where.split(os.sep + STAGING_NAME)[0]  # the data dir, not a staging folder about to go
    if exc.errno == errno.EFBIG:
        return FileTooLargeError(where, needed)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    return NoSpaceError(where, needed, free)


SMALL_FILE = 256 << 10  # files up to this size may be given to a Writer whole


class Writer(Protocol):
    """Creates new files, each given whole. `with writer:` closes it when the block ends normally
    (every file written, or the first failure raised) and abandons it when the block raised."""

    def write(self, path: str, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abandon(self) -> None: ...

    def __enter__(self) -> "Writer": ...

    def __exit__(self, exc_type, exc, tb) -> None: ...


def small_file_writer(plain: bool = False) -> Writer:
    """The reference `PlainWriter` when plain, else the fast one (a thread, then a child process)."""
    return PlainWriter() if plain else SmallFileWriter()


class _WriterContext:
    def close(self) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


class PlainWriter(_WriterContext):
    """The reference Writer: each file written at once, in the calling thread, through Copy."""

    def write(self, path: str, data: bytes) -> None:
        with closing_output(open(path, "wb"), plain=True) as out:
            Copy(out, what=path, plain=True).feed((data,))

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


class SmallFiles(_WriterContext):
    """Small files created and written on a second thread, each given whole.

    For a file of a few KiB, creating it costs more than copying its bytes, and open, write and
    close all release the GIL: while this thread makes the files, the caller reads and hashes
    the next ones. At most QUEUE batches of about BATCH_BYTES wait, so memory stays flat. A
    failure stops the writing; the caller hears of it at its next write() or at close(), which
    returns only once every file given is on disk (or the first error is raised).
    """

    QUEUE = 8
    BATCH_BYTES = 1 << 20
    BATCH_FILES = 256

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=self.QUEUE)
        self.batch: list[tuple[str, bytes]] = []
        self.batched = 0
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name="small-files", daemon=True)
        self.thread.start()

    def write(self, path: str, data: bytes) -> None:
        """Queue `data` as the whole content of a new file at `path` (whose folder exists)."""
        if self.error is not None:
            self._raise()
        self.batch.append((path, data))
        self.batched += len(data)
        if self.batched >= self.BATCH_BYTES or len(self.batch) >= self.BATCH_FILES:
            self.queue.put(self.batch)
            self.batch, self.batched = [], 0

    def close(self) -> None:
        """Every file written, or the first failure raised."""
        if self.thread.is_alive():
            self.queue.put(self.batch)
            self.queue.put(None)
            self.thread.join()
            self.batch = []
        if self.error is not None:
            self._raise()

    def abandon(self) -> None:
        """Stop without writing what is still queued (the caller is failing anyway)."""
        self.error = self.error or _Abandoned()
        self.batch = []
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.05)  # the queue may be full of batches it will skip
            except queue.Full:
                continue
            self.thread.join()

    def _raise(self) -> None:
        error = self.error
        if isinstance(error, _Abandoned):
            raise RuntimeError("SmallFiles used after it was abandoned")
        raise error

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            for path, data in batch:
                if self.error is not None:
                    break  # keep taking batches, so that the caller never blocks on a full queue
                try:
                    _write_whole(path, data)
                except OSError as exc:
                    self.error = translate_write_error(exc, path, len(data))


class _Abandoned(Exception):
    pass


class SmallFilesProcess(_WriterContext):
    """SmallFiles' job done by a child Python (executor/file_maker.py) instead of a thread.

    The child has its own GIL: it creates files back to back while this process parses and
    hashes the next members. Files go to it through a pipe of PIPE_BYTES; when the pipe is
    full, write() waits, so memory stays flat. The same contract as SmallFiles: a failure is
    raised at the next write() or at close(), which returns once every file is on disk.
    Starting the child has a cost: SmallFileWriter starts one only after MIN_FILES files.
    """

    MIN_FILES = 500
    PIPE_BYTES = 1 << 20

    def __init__(self) -> None:
        import fcntl  # POSIX only, as is this class (see SmallFileWriter)

        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", file_maker.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=self.PIPE_BYTES,
        )
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            try:
                fcntl.fcntl(self.process.stdin.fileno(), fcntl.F_SETPIPE_SZ, self.PIPE_BYTES)
            except OSError:
                pass  # over the system's pipe-max-size: the default pipe works, in smaller steps
        self.sent = 0

    def write(self, path: str, data: bytes) -> None:
        """Queue `data` as the whole content of a new file at `path` (whose folder exists)."""
        name = os.fsencode(path)
        try:
            self.process.stdin.write(file_maker.FRAME.pack(len(name), len(data)) + name)
            self.process.stdin.write(data)
        except BrokenPipeError:
            self._raise_failure()
        self.sent += 1

    def close(self) -> None:
        """Every file written, or the first failure raised."""
        try:
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # the child stopped early: its report says why
        report = self.process.stdout.read().decode()
        self.process.wait()
        if report != f"ok {self.sent}\n":
            self._raise_failure(report)

    def abandon(self) -> None:
        """Stop without writing what is still queued (the caller is failing anyway)."""
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass  # the buffered frames have nowhere to go: dropped

    def _raise_failure(self, report: str | None = None) -> None:
        if report is None:
            report = self.process.stdout.read().decode()
            self.process.wait()
        try:
            number, message, path, size = json.loads(report)
        except (ValueError, TypeError):  # not the child's report: it died some other way
            raise OSError(errno.EIO, f"the process writing small files stopped (exit {self.process.returncode}): {report.strip() or 'no report'}") from None
        raise translate_write_error(OSError(number, message, path), path, size)


class SmallFileWriter(_WriterContext):
    """Small files for whoever does not know how many will come: SmallFiles' thread for the first
    SmallFilesProcess.MIN_FILES, then a child process for the rest (where there can be one), so
    that a handful of files never pays for starting a process and 20,000 never share the GIL."""

    def __init__(self) -> None:
        self.thread = SmallFiles()
        self.process: SmallFilesProcess | None = None
        self.count = 0

    def write(self, path: str, data: bytes) -> None:
        self.count += 1
        if self.count == SmallFilesProcess.MIN_FILES + 1:
            self.process = self._start_process()
        (self.process or self.thread).write(path, data)

    @staticmethod
    def _start_process() -> "SmallFilesProcess | None":
        """None where there can be no child Python (no interpreter to run, the module inside a zip):
        the thread goes on alone, slower, never failing for it."""
        if os.name != "posix" or not sys.executable or not os.path.isfile(file_maker.__file__):
            return None
        try:
            return SmallFilesProcess()
        except OSError:
            return None

    def close(self) -> None:
        """Every file written, or the first failure raised (the other writer then abandoned)."""
        try:
            self.thread.close()
            if self.process is not None:
                self.process.close()
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        self.thread.abandon()
        if self.process is not None:
            self.process.abandon()


@contextmanager
def closing_output(out: BinaryIO, *, reserve: int = 0, plain: bool = False) -> Iterator[BinaryIO]:
    """Close `out` without letting close() hide the real error; first (unless plain), reserve
    disk space for the `reserve` bytes about to be written (durable.reserve): a full disk is a
    NoSpaceError before the first byte.

    After a failed write the io buffer still holds bytes, so close() fails again with a raw
    OSError that would replace the NoSpaceError in flight; that second failure is dropped.
    """
    try:
        if not plain:
            try:
                durable.reserve(out, reserve)
            except OSError as exc:
                raise translate_write_error(exc, out, reserve) from exc
        yield out
    except BaseException:
        try:
            out.close()
        except OSError:
            pass  # the same failure again: the exception in flight already says it
        raise
    out.close()


def file_chunks(f: BinaryIO, size: int | None = None) -> Iterator[bytes]:
    """Chunks of an open file; at most `size` bytes when given."""
    remaining = size
    while remaining is None or remaining > 0:
        chunk = f.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def hash_file(path: Path, meter: Meter | None = None, *, plain: bool = False) -> Copy:
    """Hash a file that is already on disk (a resumed partial download, a local source)."""
    with open(path, "rb") as f:
        return Copy(None, what=str(path), meter=meter, plain=plain).feed(file_chunks(f))


def copy_file(
    source: BinaryIO, dest: Path, *, what: str, size: int | None = None, limit: int | None = None, meter: Meter | None = None,
    writeback: bool = False, plain: bool = False,
) -> Copy:
    """Stream `source` into a new file at `dest`, hashing as it goes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with closing_output(open(dest, "wb"), reserve=size or 0, plain=plain) as out:
        return Copy(out, what=what, limit=limit, meter=meter, writeback=writeback, plain=plain).feed(file_chunks(source, size))


class HashingReader:
    """A file object that hashes what is read through it, for one-pass
    'extract while verifying' of a local archive (tarfile reads it front to back)."""

    def __init__(self, raw: BinaryIO, meter: Meter | None = None, what: str | None = None, *, plain: bool = False):
        self.raw = raw
        self.copy = Copy(None, what=what or getattr(raw, "name", "stream"), meter=meter, plain=plain)

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.copy.feed((data,))
        return data

    def drain(self) -> Copy:
        """Hash what the reader did not need (tar's zero padding), so the hash covers the whole file."""
        self.copy.feed(file_chunks(self.raw))
        return self.copy
