"""Making files durable before they become visible.

`syncfs` (one filesystem sync for a whole pack, just before its swap) is the fast path on
Linux; one fsync per file is the plain path, taken where syncfs is missing and whenever the
engine writes plainly (WriteSettings.plain). Whether to sync at all is the engine's
decision (WriteSettings.durable), not this module's.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import BinaryIO, Iterable

# The running process's own symbols, libc's among them (find_library would run ldconfig).
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
_syncfs = getattr(_libc, "syncfs", None)
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
    if _syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return _syncfs(fd) == 0
    finally:
        os.close(fd)


def write_behind(out: BinaryIO, keep: int) -> None:
    """Start writing an open file's dirty pages to disk now; let go of what is on disk already.

    For a file that will be synced before it becomes visible (the file flushed first): the sync
    then has little left to do, and the page cache holds only the last `keep` bytes of a 50 GB
    copy instead of pushing everything else out. A no-op where sync_file_range is missing.
    """
    write_behind_fd(out.fileno(), out.tell(), keep)


def write_behind_fd(fd: int, end: int, keep: int) -> None:
    """write_behind for an open descriptor whose first `end` bytes are done with: a file written
    out of order (executor/segmented.py) passes the end of what it has hashed, so no page it has
    yet to read back is dropped."""
    if _sync_file_range is None:
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

    A full disk then says so before the first byte, and the file gets long extents. A full disk or
    quota, or a file too large for the filesystem (FAT32's 4 GiB), is an OSError; where fallocate
    is missing or the filesystem does not do it, nothing is reserved.
    """
    if _fallocate is None or length <= 0:
        return
    if _fallocate(out.fileno(), _FALLOC_FL_KEEP_SIZE, out.tell(), length) != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(code, os.strerror(code), out.name)


def sync_files(root: Path, files: Iterable[Path], *, plain: bool = False) -> None:
    """Every staged file of a pack on disk: one syncfs, else (and always when plain) one fsync per file."""
    if not plain and syncfs(root):
        return
    for path in files:
        fsync_path(path)


def write_atomic(path: Path, data: bytes) -> None:
    """Small metadata files (records, journals): temp file, fsync, rename, fsync the dir."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk or a read-only folder: no temp file left behind
        raise
    fsync_dir(path.parent)
