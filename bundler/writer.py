"""Writes the archive: tar stream -> zstd -> parts on disk, each part hashed as it is written.

Layout: `manifest.json`, `manifest.json.sig`, then every payload member in manifest
order, so a reader can check the signature before it reads any payload.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import zstandard

from bundler import raw_frames
from executor import durable
from executor.extract import tar_checksum
from executor.transfer import WRITEBACK_KEEP, WRITEBACK_STEP, Copy, HashThread, InlineHash, file_chunks, hash_worker, translate_write_error
from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME, PartEntry, part_name
from manifests.errors import FileTooLargeError

ZSTD_LEVEL = 3
ZSTD_JOB_SIZE = 2 << 20  # bounds the compressor's memory (see write_archive)


class PartWriter:
    """A write-only file that becomes OUT (or OUT.001, OUT.002, ... of at most `split_size` bytes).

    Parts are written under temporary names and renamed only by `finish()`, so a failed
    bundle never leaves something that looks like a bundle.
    """

    def __init__(self, out: Path, split_size: int | None, *, plain: bool = False):
        """`plain`: the part's hash in this thread, no write-behind (WriteSettings.plain)."""
        self.out = out
        self.split_size = split_size
        self.plain = plain
        self.parts: list[PartEntry] = []
        self._tmp_paths: list[Path] = []
        self._file: BinaryIO | None = None
        self._hash: HashThread | InlineHash | None = None  # the part's sha256, on a second core unless plain
        self._size = 0
        self._behind = 0  # bytes of the current part not yet handed to write_behind

    def _final_name(self, number: int) -> str:
        return part_name(self.out.name, number) if self.split_size else self.out.name

    def _open_next(self) -> None:
        self._close_current()
        tmp = self.out.with_name(f".{self._final_name(len(self.parts) + 1)}.tmp")
        self._tmp_paths.append(tmp)
        self._file = open(tmp, "wb")
        self._hash, self._size, self._behind = hash_worker(hashlib.sha256(), plain=self.plain), 0, 0

    def _close_current(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _write_error(exc, self._file, self._size) from exc
        self._file.close()
        self._file = None
        self._hash.close()
        self.parts.append(PartEntry(self._final_name(len(self.parts) + 1), self._size, self._hash.hasher.hexdigest()))

    def write(self, data) -> int:
        try:
            self._write(memoryview(data))
        except OSError as exc:  # a full stick, or a part larger than its filesystem holds
            raise _write_error(exc, self._file, self._size + len(data)) from exc
        return len(data)

    def _write(self, view: memoryview) -> None:
        while view:
            if self._file is None or (self.split_size and self._size >= self.split_size):
                self._open_next()
            room = len(view) if not self.split_size else min(len(view), self.split_size - self._size)
            piece = view[:room]
            self._file.write(piece)
            self._hash.add(piece)
            self._size += room
            self._behind += room
            view = view[room:]
        if self._behind >= WRITEBACK_STEP and not self.plain:  # each part is fsynced when it ends: start on it now
            self._file.flush()
            durable.write_behind(self._file, WRITEBACK_KEEP)
            self._behind = 0

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def finish(self) -> list[PartEntry]:
        self._close_current()
        for tmp, part in zip(self._tmp_paths, self.parts):
            os.replace(tmp, self.out.with_name(part.name))
        durable.fsync_dir(self.out.parent)
        return self.parts

    def abort(self) -> None:
        if self._file is not None:
            self._hash.close()
            try:
                self._file.close()
            except OSError:
                pass  # after a failed write the buffer fails again: the error in flight already says it
        for tmp in self._tmp_paths:
            tmp.unlink(missing_ok=True)


def _write_error(exc: OSError, out: BinaryIO, size: int) -> Exception:
    """A full stick as NoSpaceError; a part too large for its filesystem (FAT32) says how to split."""
    error = translate_write_error(exc, out, size)
    if isinstance(error, FileTooLargeError):
        error.hint = "split the bundle into parts that filesystem holds: --split-size fat32 (4 GiB - 1 byte) or smaller"
    return error


@dataclass(frozen=True)
class Member:
    """One payload member: a staged file, or bytes that `fetch` writes itself (a live download).

    `sha256`: what the signed manifest says; the bytes are checked against it as they are
    written, so a bundle is never signed over a payload that changed after it was hashed.
    """

    name: str
    path: Path | None
    size: int
    sha256: str | None = None
    fetch: Callable[[BinaryIO], Copy] | None = None


class _ArchiveMeter:
    """Progress of one member's copy, reported as bytes of the whole archive."""

    def __init__(self, on_bytes: Callable[[int], None]):
        self.on_bytes, self.reported = on_bytes, 0

    def update(self, done: int, force: bool = False) -> None:
        self.on_bytes(done - self.reported)
        self.reported = done


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0  # reproducible: the manifest carries the times that matter
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


# The fields of a plain ustar header around the name and the size, as tarfile writes them for
# mode 0644, uid/gid 0, mtime 0, a regular file, no link, no owner names.
_MODE_OWNER = b"0000644\0" + b"0000000\0" * 2
_AFTER_SIZE = b"00000000000\0" + b" " * 8 + tarfile.REGTYPE
_AFTER_TYPE = b"\0" * 100 + tarfile.POSIX_MAGIC + b"\0" * (64 + 16 + 167)  # link; magic; owners, device numbers, prefix, padding
_MAX_PLAIN_SIZE = 8**11 - 1  # what 11 octal digits hold; larger sizes need a pax header


def header(name: str, size: int) -> bytes:
    """The tar header tarfile.addfile would write for this member, byte for byte.

    tarfile builds it field by field through several layers (~50 us): for 20,000 small files
    a second of the bundle. A short ASCII name and a size that fits take a plain ustar header,
    assembled here from its fixed parts; anything else goes to tarfile (pax headers).
    """
    raw = name.encode("ascii", "ignore")
    if len(raw) != len(name) or len(raw) > 100 or size > _MAX_PLAIN_SIZE:
        return _header(name, size)
    block = raw.ljust(100, b"\0") + _MODE_OWNER + b"%011o\0" % size + _AFTER_SIZE + _AFTER_TYPE
    return block[:148] + b"%06o\0 " % tar_checksum(block) + block[156:]


class _NoFlush:
    """The compressor as a member's copy sees it. Copy.feed flushes its output at the end (so a
    full disk says so); flushing a zstd writer ends a block and waits for every worker thread,
    which for 20,000 small members cost seconds. The archive is flushed once, when it closes."""

    def __init__(self, out: BinaryIO):
        self.write = out.write

    def flush(self) -> None:
        pass


class TarWriter:
    """The tar format written straight into the compressor: header, data, zero padding.

    Byte for byte what tarfile.addfile writes (PAX headers, 512-byte blocks, two zero blocks and
    padding to a 10 KiB record at the end), but the data of a member can be pushed in by whoever
    has it (a download) instead of pulled from a file object, and nothing is buffered here.
    """

    def __init__(self, out: BinaryIO, *, parts: BinaryIO | None = None, level: int = ZSTD_LEVEL, plain: bool = False):
        """`parts`: where `out`, a zstd writer at `level`, writes the archive. Given, a large member
        that does not compress goes around `out` into it (bundler/raw_frames.py)."""
        self.out = out
        self.member_out = _NoFlush(out)
        self.parts, self.level = parts, level
        self.plain = plain
        self.offset = 0

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._write(header(name, len(data)))
        self._write(data)
        self._pad()

    def add(self, member: Member, on_bytes: Callable[[int], None]) -> None:
        self._write(header(member.name, member.size))
        routed = raw_frames.MemberRoute(self.out, self.parts, member.size, self.level) if self.parts is not None and member.size >= raw_frames.LARGE_MEMBER else None
        out = routed or self.member_out
        if member.fetch is not None:
            copy = member.fetch(out)
            on_bytes(copy.done)
        else:
            with open(member.path, "rb") as raw:
                copy = Copy(out, what=member.name, limit=member.size, meter=_ArchiveMeter(on_bytes), plain=self.plain).feed(file_chunks(raw, member.size))
        if routed is not None:
            routed.end()
        copy.check(member.sha256, member.size)
        self.offset += member.size
        self._pad()

    def _pad(self) -> None:
        self._write(b"\0" * (-self.offset % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self._write(b"\0" * (-self.offset % tarfile.RECORDSIZE))


def write_archive(
    out: Path,
    manifest: bytes,
    signature: bytes | None,
    members: list[Member],
    *,
    split_size: int | None = None,
    level: int = ZSTD_LEVEL,
    on_bytes: Callable[[int], None] = lambda n: None,
    plain: bool = False,
) -> list[PartEntry]:
    parts = PartWriter(out, split_size, plain=plain)
    try:
        # Every core compresses, in jobs of ZSTD_JOB_SIZE: libzstd's default job at level 3 is
        # several MiB and its worker pool then holds about 110 MiB; 2 MiB jobs hold about 30.
        params = zstandard.ZstdCompressionParameters.from_level(level, threads=-1, job_size=ZSTD_JOB_SIZE, write_checksum=True)
        compressor = zstandard.ZstdCompressor(compression_params=params)
        with compressor.stream_writer(parts, closefd=False) as zst:
            tar = TarWriter(zst, parts=parts, level=level, plain=plain)
            tar.add_bytes(MANIFEST_NAME, manifest)
            if signature is not None:
                tar.add_bytes(SIGNATURE_NAME, signature)
            for member in members:
                tar.add(member, on_bytes)
            tar.close()
        return parts.finish()
    except BaseException:
        parts.abort()
        raise
