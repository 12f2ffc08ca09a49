"""Safe extraction of tar.gz / tar.zst / tar.xz / tar / zip into a pack transaction.

Member names are checked (no absolute paths, no '..', no links, no devices, no
duplicates), leading folders are stripped, and every member goes through the one
streaming copy, so it is hashed and its size capped on the way. The total is bounded,
so a decompression bomb stops early.
"""

from __future__ import annotations

import gzip
import lzma
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

import zstandard

from executor.events import Meter
from executor.transfer import Copy, closing_output, file_chunks
from manifests.errors import LengthError, UnsafeArchiveError


def safe_member_path(name: str, strip: int, archive: str) -> str | None:
    """The member's path after stripping, or None when nothing is left (a top folder)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} would land outside its directory", hint="the archive is damaged or hostile; nothing was installed")
    parts = [p for p in path.parts if p not in ("", ".")]
    if len(parts) <= strip:
        return None
    return "/".join(parts[strip:])


class ForwardOnly:
    """A forward-only stream as tarfile's seekable mode reads it: tell(), and seek() forward only.

    tarfile's stream mode ('r|') passes every byte through its own buffer, joining and
    re-slicing it on each read: copies of the payload, and a copy of up to the whole buffer
    for every 512-byte header, which dominates an archive of many small files. Here small
    reads (headers, small members) come from a read-ahead buffer of READ_AHEAD bytes and
    large ones go straight through. Read front to back, tarfile never seeks backwards; a
    request to is refused as damage.
    """

    READ_AHEAD = 1 << 20

    def __init__(self, raw: BinaryIO):
        self.raw, self.pos = raw, 0
        self.buf, self.off = b"", 0

    def read(self, size: int = -1) -> bytes:
        have = len(self.buf) - self.off
        if size < 0:
            data = self.buf[self.off :] + self.raw.read()
            self.buf, self.off = b"", 0
        elif have >= size or (have == 0 and size < self.READ_AHEAD and self._refill() >= size):
            data = self.buf[self.off : self.off + size]
            self.off += len(data)
        else:  # a large read, or a small one across the end of the buffer: the rest of it, then straight through
            head = self.buf[self.off :]
            self.buf, self.off = b"", 0
            data = head + self.raw.read(size - len(head)) if head else self.raw.read(size)
        self.pos += len(data)
        return data

    def _refill(self) -> int:
        self.buf, self.off = self.raw.read(self.READ_AHEAD), 0
        return len(self.buf)

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.pos:
            raise tarfile.ReadError("the tar stream would have to be read backwards")
        while self.pos < pos:
            if not self.read(min(pos - self.pos, 1 << 16)):
                raise tarfile.ReadError("unexpected end of data")
        return self.pos


def _decompressed(raw: BinaryIO, fmt: str) -> BinaryIO:
    if fmt == "tar.zst":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20)
    if fmt == "tar.gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if fmt == "tar.xz":
        return lzma.LZMAFile(raw)
    if fmt == "tar":
        return raw
    raise ValueError(f"not a tar format: {fmt!r}")


def _tar_members(raw: BinaryIO, fmt: str) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """One pass, flat memory, whatever the archive's size: the members of a tar read front to back."""
    with tarfile.open(fileobj=ForwardOnly(_decompressed(raw, fmt)), mode="r:") as tf:
        while (member := tf.next()) is not None:
            tf.members.clear()  # tarfile keeps every TarInfo it read (for getmembers()); we never look back
            yield tf, member


class _Extractor:
    def __init__(self, txn, dest_rel: str, strip: int, max_total: int | None, meter: Meter | None, archive: str):
        self.txn, self.dest_rel, self.strip = txn, dest_rel, strip
        self.max_total, self.meter, self.archive = max_total, meter, archive
        self.total = 0
        self.seen: set[str] = set()

    def place(self, name: str, size: int, source: BinaryIO) -> None:
        rel = safe_member_path(name, self.strip, self.archive)
        if rel is None:
            return
        rel = f"{self.dest_rel}/{rel}"
        if rel in self.seen:
            raise UnsafeArchiveError(f"{self.archive}: member {name!r} appears twice", hint="the archive is damaged or hostile")
        self.seen.add(rel)
        if self.max_total is not None and self.total + size > self.max_total:
            raise LengthError(f"{self.archive} unpacks to more than the {self.max_total} bytes allowed for it", hint="raise unpacked_size_bytes in the recipe if the data really grew")
        try:
            out = open(self.txn.path_for(rel), "wb")
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
            # `a` as a file and `a/b` below it: not an archive any tool we know of writes.
            raise UnsafeArchiveError(f"{self.archive}: member {name!r} clashes with another member's file or folder", hint="the archive is damaged or hostile; nothing was installed") from exc
        with closing_output(out):
            copy = Copy(out, what=f"{self.archive}:{name}", limit=size).feed(file_chunks(source, size + 1))
        copy.check(None, size)
        self.total += size
        if self.meter is not None:
            self.meter.update(self.total)
        self.txn.add(rel, copy.done, copy.sha256)

    def refuse(self, name: str, kind: str) -> None:
        raise UnsafeArchiveError(f"{self.archive}: member {name!r} is a {kind}, which is not extracted", hint="only plain files and folders are accepted")


@contextmanager
def _damaged_archive_is_untrusted(name: str) -> Iterator[None]:
    """Third-party archive errors become ours, at this one boundary."""
    try:
        yield
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zstandard.ZstdError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise UnsafeArchiveError(f"{name} is damaged: {exc}", hint="get a fresh copy; nothing was installed") from exc


def extract_tar_stream(raw: BinaryIO, fmt: str, txn, dest_rel: str, *, strip: int = 0, max_total: int | None = None, name: str = "archive", meter: Meter | None = None) -> int:
    """Extract a tar stream (read front to back, once) into `txn` under `dest_rel`."""
    ex = _Extractor(txn, dest_rel, strip, max_total, meter, name)
    with _damaged_archive_is_untrusted(name):
        for tf, member in _tar_members(raw, fmt):
            if member.isdir():
                safe_member_path(member.name, strip, name)
            elif member.isreg():
                ex.place(member.name, member.size, tf.extractfile(member))
            else:
                ex.refuse(member.name, "link" if member.issym() or member.islnk() else "special file")
    return ex.total


def _extract_zip(archive: Path, ex: _Extractor) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                safe_member_path(info.filename, ex.strip, ex.archive)
                continue
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits at all (zipfile.writestr, Windows): a file
                ex.refuse(info.filename, "link or special file")
            with zf.open(info) as source:
                ex.place(info.filename, info.file_size, source)


def extract(archive: Path, fmt: str, txn, dest_rel: str, *, strip: int = 0, max_total: int | None = None, meter: Meter | None = None) -> int:
    """Extract a file on disk into `txn` under `dest_rel`; returns the bytes unpacked."""
    if fmt != "zip":
        with open(archive, "rb") as raw:
            return extract_tar_stream(raw, fmt, txn, dest_rel, strip=strip, max_total=max_total, name=archive.name, meter=meter)
    ex = _Extractor(txn, dest_rel, strip, max_total, meter, archive.name)
    with _damaged_archive_is_untrusted(archive.name):
        _extract_zip(archive, ex)
    return ex.total
