"""Making files durable before they become visible.

`syncfs` (one filesystem sync for a whole pack) is the fast path on Linux;
per-file fsync is the plain path, used where syncfs is missing and under pyfakefs,
which cannot see syncfs.

DEVOPS_CP_NO_SYNC=1 skips the per-pack sync (sync_files) and nothing else: the
benchmarks (`python -m bench`) report what durability costs with it. Not for real use:
after a power loss a pack installed that way may be visible with empty files.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path
from typing import BinaryIO, Iterable

# The symbols of the running process, libc's among them: ctypes.util.find_library("c") would
# run `ldconfig -p` in a subprocess (about 6 ms of every command's start-up) to name the same
# library. A symbol that is missing (syncfs outside Linux) is None below, as before.
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
_syncfs = getattr(_libc, "syncfs", None)
NO_SYNC_ENV = "DEVOPS_CP_NO_SYNC"
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_FALLOC_FL_KEEP_SIZE = 1  # allocate past the end, size unchanged: a resume reads a partial file's size
_SYNC_FILE_RANGE_WAIT_BEFORE = 1  # wait for pages already being written
_SYNC_FILE_RANGE_WRITE = 2  # start writing dirty pages; do not wait for them
_SYNC_FILE_RANGE_WAIT_AFTER = 4  # wait for the pages this call started writing


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fsync_path(path)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic


def syncfs(path: Path) -> bool:
    """Flush the whole filesystem holding `path`; False where that is not possible."""
    if _syncfs is None or not _is_real_path(path):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return _syncfs(fd) == 0
    finally:
        os.close(fd)


def _is_real_path(path: Path) -> bool:
    # pyfakefs patches os but not libc: a fake path must take the plain route.
    return getattr(os.open, "__module__", "") in ("posix", "nt")


def _early_writeback() -> bool:
    """Whether writing to disk ahead of the sync makes sense: not under pyfakefs (libc sees no fake
    file), nor with DEVOPS_CP_NO_SYNC=1 (nothing will be synced)."""
    return os.environ.get(NO_SYNC_ENV) != "1" and _is_real_path(None)


def write_behind(out: BinaryIO, keep: int) -> None:
    """Start writing an open file's dirty pages to disk now; let go of what is on disk already.

    For a file that will be synced before it becomes visible, called as the copy goes on (with the
    file flushed): the disk works while the copy does, so that sync has little left to do. The pages
    more than `keep` bytes behind the end are waited for (the disk is then the pace, as the sync
    would make it anyway) and dropped from the page cache, which keeps holding only the last bytes
    of a 50 GB copy instead of pushing everything else out. Reusing those few pages also spares the
    cost of fresh ones, large on virtual machines that hand free memory back to their host
    (bench/RESULTS.md). A no-op where sync_file_range is missing, under pyfakefs, and with
    DEVOPS_CP_NO_SYNC=1.
    """
    write_behind_fd(out.fileno(), out.tell(), keep)


def write_behind_fd(fd: int, end: int, keep: int) -> None:
    """write_behind for an open descriptor whose first `end` bytes are done with: a file written
    out of order (executor/segmented.py) passes the end of what it has hashed, so no page it has
    yet to read back is dropped."""
    if _sync_file_range is None or not _early_writeback():
        return
    _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
    behind = end - keep
    if behind > 0:
        start = max(0, behind - keep)  # not just the last step's: calls come at uneven offsets
        _sync_file_range(fd, start, behind - start, _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, start, behind - start, os.POSIX_FADV_DONTNEED)


def reserve(out: BinaryIO, length: int) -> None:
    """Allocate disk blocks now for the next `length` bytes of an open file; its size is unchanged.

    A full disk then says so before the first byte instead of halfway through, nothing else can
    take the space while the copy runs, the file gets long extents, and the writes skip the
    filesystem's block allocation page by page: writing 1 GiB durably took 0.29 s of system time
    instead of 0.36 s (bench/RESULTS.md). A full disk or quota, or a file too large for the
    filesystem (FAT32's 4 GiB), is an OSError; where fallocate is missing or the filesystem does
    not do it (some network and FUSE ones), and under pyfakefs, nothing is reserved and the
    writes allocate as before.
    """
    if _fallocate is None or length <= 0 or not _is_real_path(None):
        return
    if _fallocate(out.fileno(), _FALLOC_FL_KEEP_SIZE, out.tell(), length) != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(code, os.strerror(code), out.name)


class BackgroundSync:
    """While a pack of many files is written, their filesystems synced every INTERVAL seconds.

    What write_behind does for one large file, for thousands of small ones (one call per file
    would cost more than it saves): the disk works while the copy goes on, and the sync before the
    pack becomes visible finds little left to do. Only that: sync_files still makes the pack
    durable. A no-op where syncfs is missing, under pyfakefs, and with DEVOPS_CP_NO_SYNC=1.
    """

    INTERVAL = 0.25

    def __init__(self, paths: Iterable[Path]):
        self.paths = list(paths)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="background-sync", daemon=True)

    def __enter__(self) -> "BackgroundSync":
        if _syncfs is not None and _early_writeback():
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        while not self.stop.wait(self.INTERVAL):
            for path in self.paths:
                try:
                    syncfs(path)
                except OSError:
                    return  # the folder went away: the copy will say what happened


def sync_files(root: Path, files: Iterable[Path], *, use_syncfs: bool = True) -> None:
    """Every staged file of a pack on disk: one syncfs, else one fsync per file."""
    if os.environ.get(NO_SYNC_ENV) == "1":  # benchmarks only (see the module's docstring)
        return
    if use_syncfs and syncfs(root):
        return
    for path in files:
        fsync_path(path)


def write_atomic(path: Path, data: bytes) -> None:
    """Small metadata files (records, journals): temp file, fsync, rename, fsync the dir."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
