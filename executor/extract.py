"""Safe extraction of tar.gz / tar.zst / tar.xz / tar / zip into a pack transaction.

One member walk (`iter_archive`, `iter_tar_stream`) enforces every rule: member names
are checked (no absolute paths, no '..', no links, no devices, no duplicates, no file
where another member has a folder), leading folders are stripped, and the total is
bounded, so a decompression bomb stops early. Extraction places what the walk yields,
each member through the one streaming copy, so it is hashed and its size capped on the way;
a consumer that writes no files (the bundler) gets the same refusals.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import zstandard

from executor.events import Meter
from executor.preflight import Room
from executor.transfer import CHUNK_SIZE, SMALL_FILE, Copy, closing_output, file_chunks, small_file_writer
from manifests.errors import LengthError, NoSpaceError, UnsafeArchiveError
from manifests.names import archive_member_path


UNPACK_BOUND = 2  # an extracted pack may unpack to twice its recipe's estimate before we call it a bomb
DEFAULT_BOUND = 20  # without an estimate: twenty times the archive,
SMALL_ARCHIVE_BOUND = 16 * 2**20  # but at least this: a tiny archive's headers alone may be 20 times its size


def unpack_bound(estimate: int | None, archive_size: int | None = None) -> int | None:
    """The most bytes an archive may unpack to. With the recipe's estimate: twice it (an estimate);
    without one: DEFAULT_BOUND times the archive (at least SMALL_ARCHIVE_BOUND). Past it, extraction
    stops with LengthError (exit 3). Extraction onto disk is also held within the free space less the
    margin (`Room`): past that, NoSpaceError (exit 5), so the exit code says which limit bit."""
    if estimate:
        bound = estimate * UNPACK_BOUND
    elif archive_size is not None:
        bound = max(archive_size * DEFAULT_BOUND, SMALL_ARCHIVE_BOUND)
    else:
        bound = None
    return bound


def safe_member_path(name: str, strip: int, archive: str) -> str | None:
    """The member's path after stripping, or None when nothing is left (a top folder).

    The rule is manifests/names.py's, the one every path from outside passes."""
    try:
        return archive_member_path(name, strip)
    except ValueError as exc:
        raise UnsafeArchiveError(f"{archive}: {exc}", hint="the archive is damaged or hostile; nothing was installed") from None


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

    def peek(self, size: int) -> bytes:
        """The next `size` bytes (fewer at the end of the stream), left unread."""
        if len(self.buf) - self.off < size:
            self.buf, self.off = self.buf[self.off :] + self.raw.read(max(size, self.READ_AHEAD)), 0
        return self.buf[self.off : self.off + size]

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.pos:
            raise tarfile.ReadError("the tar stream would have to be read backwards")
        if pos - self.pos <= len(self.buf) - self.off:  # within the read-ahead: skipped, not copied out
            self.off += pos - self.pos
            self.pos = pos
            return pos
        while self.pos < pos:
            if not self.read(min(pos - self.pos, 1 << 16)):
                raise tarfile.ReadError("unexpected end of data")
        return self.pos


# --- reading tar headers and members fast -------------------------------------------------
# tarfile's header parsing costs more per member than copying a small file's bytes, and its
# extractfile() puts two file objects and a copy between the stream and the reader. Packs of
# 20,000 small files (and bundles of them) go through here, read front to back once.

BLOCKSIZE = tarfile.BLOCKSIZE
_USTAR_MAGIC = b"ustar\x0000"  # POSIX ustar, as tarfile writes it in PAX_FORMAT
# The number fields exactly in tarfile's own form (octal digits, then a NUL; the checksum's
# 6 digits, a NUL and a space): mode, uid, gid, size, mtime, checksum; then devmajor, devminor.
_NUMBERS = re.compile(rb"[0-7]{7}\0[0-7]{7}\0[0-7]{7}\0[0-7]{11}\0[0-7]{11}\0[0-7]{6}\0 ")
_DEVICE_NUMBERS = re.compile(rb"(?:[0-7]{7}\0|\0{8}){2}")  # left empty for files by Python 3.11+


def tar_checksum(block: bytes) -> int:
    """What a header's checksum field must say: the sum of its bytes, the field itself counted as
    8 spaces. NULs add nothing and most of a header is NULs: they are dropped before summing."""
    return sum(block.translate(None, b"\0")) - sum(block[148:156]) + 8 * 32


def plain_file_header(block: bytes) -> tarfile.TarInfo | None:
    """A regular file's POSIX ustar header with a good checksum -> its TarInfo; else None (not an error).

    Exactly as tarfile would read it: the name up to its first NUL, after the prefix and a '/'
    when there is a prefix. None for everything else: other types, pax or GNU headers, number
    fields in any other form (base-256, spaces...), bad checksums, names that are not UTF-8, a short block.
    """
    if len(block) != BLOCKSIZE or block[156:157] != tarfile.REGTYPE or block[257:265] != _USTAR_MAGIC:
        return None
    if not _NUMBERS.fullmatch(block, 100, 156) or not _DEVICE_NUMBERS.fullmatch(block, 329, 345):
        return None
    if int(block[148:154], 8) != tar_checksum(block):
        return None
    try:
        name = block[:100].split(b"\0", 1)[0].decode("utf-8")
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    member = tarfile.TarInfo(f"{prefix}/{name}" if prefix else name)
    member.size = int(block[124:135], 8)
    return member



def next_member(tf: tarfile.TarFile) -> tarfile.TarInfo | None:
    """tf.next() over a ForwardOnly, with a plain file's ustar header read by plain_file_header.

    The shortcut takes only that one exact form, whose meaning is not in doubt; every other
    header (pax, GNU, links, folders, anything odd or hostile) and the end are tarfile's.
    """
    if tf.firstmember is None and not tf.pax_headers:
        stream = tf.fileobj
        stream.seek(tf.offset)  # past the previous member's data and padding
        member = plain_file_header(stream.peek(BLOCKSIZE))
        if member is not None:
            stream.read(BLOCKSIZE)
            member.offset, member.offset_data = tf.offset, tf.offset + BLOCKSIZE
            tf.offset = member.offset_data + -(-member.size // BLOCKSIZE) * BLOCKSIZE
            return member
    member = tf.next()
    tf.members.clear()  # tarfile keeps every TarInfo it read (for getmembers()); we never look back
    return member


class MemberBytes:
    """A member's bytes read straight from the tar stream, never past its end."""

    def __init__(self, stream: ForwardOnly, member: tarfile.TarInfo):
        stream.seek(member.offset_data)  # where the header left it: a no-op, or a refused seek backwards
        self.stream, self.left = stream, member.size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.stream.read(size)
        if len(data) < size:
            raise tarfile.ReadError("unexpected end of data")
        self.left -= size
        return data



def _decompressed(raw: BinaryIO, fmt: str) -> BinaryIO:
    if fmt == "tar.zst":  # several frames (pzstd's output, or pieces compressed apart and concatenated) are one stream
        return zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20, read_across_frames=True)
    if fmt == "tar.gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if fmt == "tar.xz":
        return lzma.LZMAFile(raw)
    if fmt == "tar":
        return raw
    raise ValueError(f"not a tar format: {fmt!r}")


def member_chunks(source: BinaryIO, size: int) -> Iterable[bytes]:
    """At most `size` bytes of `source`, as Copy.feed takes them: file_chunks, or the one read it
    would make when they fit in a chunk (most members are small: no generator per member).
    For readers whose read(n) returns n bytes unless at the end: files, archive members."""
    return (source.read(size),) if size <= CHUNK_SIZE else file_chunks(source, size)


ArchiveItem = tuple[str, int, "_MemberReader"]  # path after stripping, size, a reader of exactly `size` bytes


class _Walk:
    """The rules of one member walk, member by member, in archive order."""

    def __init__(self, strip: int, max_total: int | None, archive: str, room: Room | None = None):
        self.strip, self.max_total, self.archive, self.room = strip, max_total, archive, room
        self.unpacked = 0  # every plain member's bytes, also the ones stripped away: they are decompressed too
        self.files: set[str] = set()
        self.folders: set[str] = set()  # named by a folder member or above a file; never also in `files`

    def file(self, name: str, size: int) -> str | None:
        """The file's path after stripping, or None when stripping leaves nothing of it."""
        self.unpacked += size
        if self.max_total is not None and self.unpacked > self.max_total:
            raise LengthError(f"{self.archive} unpacks to more than the {self.max_total} bytes allowed for it", hint="raise unpacked_size_bytes in the recipe if the data really grew")
        if self.room is not None and not self.room.holds(self.unpacked):
            raise NoSpaceError(self.room.where, self.room.needed(self.unpacked), self.room.free)
        rel = safe_member_path(name, self.strip, self.archive)
        if rel is None:
            return None
        if rel in self.files:
            raise UnsafeArchiveError(f"{self.archive}: member {name!r} appears twice", hint="the archive is damaged or hostile")
        if rel in self.folders:
            self._clash(name)
        self._add_folders(name, rel.rpartition("/")[0])
        self.files.add(rel)
        return rel

    def folder(self, name: str) -> None:
        rel = safe_member_path(name, self.strip, self.archive)
        if rel is not None:
            self._add_folders(name, rel)

    def _add_folders(self, name: str, folder: str) -> None:
        """`folder` and those above it; each is checked once, so a walk stays linear."""
        while folder and folder not in self.folders:
            if folder in self.files:
                self._clash(name)
            self.folders.add(folder)
            folder = folder.rpartition("/")[0]

    def _clash(self, name: str) -> None:
        # `a` as a file and `a/b` below it: not an archive any tool we know of writes.
        raise UnsafeArchiveError(f"{self.archive}: member {name!r} clashes with another member's file or folder", hint="the archive is damaged or hostile; nothing was installed")

    def refuse(self, name: str, kind: str) -> None:
        raise UnsafeArchiveError(f"{self.archive}: member {name!r} is a {kind}, which is not extracted", hint="only plain files and folders are accepted")


_DAMAGE = (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zstandard.ZstdError, EOFError, zlib.error, lzma.LZMAError)


def _damaged(name: str, exc: Exception) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{name} is damaged: {exc}", hint="get a fresh copy; nothing was installed")


@contextmanager
def _damaged_archive_is_untrusted(name: str) -> Iterator[None]:
    """Third-party archive errors become ours, at this one boundary."""
    try:
        yield
    except _DAMAGE as exc:
        raise _damaged(name, exc) from exc


class _MemberReader:
    """A member's bytes; reading them is inside the boundary too (a truncated member is damage).

    `tar_offset`: where the bytes start in the (decompressed) tar stream; None in a zip. In an
    uncompressed tar file that is the file offset, so a reader of the file can find them again.
    """

    def __init__(self, source: BinaryIO, archive: str, tar_offset: int | None = None):
        self.source, self.archive, self.tar_offset = source, archive, tar_offset

    def read(self, size: int = -1) -> bytes:
        try:  # the boundary above, without a context manager per read: a member of a few KiB is read twice
            return self.source.read(size)
        except _DAMAGE as exc:
            raise _damaged(self.archive, exc) from exc


def iter_tar_stream(raw: BinaryIO, fmt: str, *, strip: int = 0, max_total: int | None = None, name: str = "archive", room: Room | None = None) -> Iterator[ArchiveItem]:
    """Every plain file of a tar stream read front to back, once (see iter_archive)."""
    walk = _Walk(strip, max_total, name, room)
    with _damaged_archive_is_untrusted(name), tarfile.open(fileobj=ForwardOnly(_decompressed(raw, fmt)), mode="r:") as tf:
        while (member := next_member(tf)) is not None:
            if member.isdir():
                walk.folder(member.name)
            elif not member.isreg():
                walk.refuse(member.name, "link" if member.issym() or member.islnk() else "special file")
            elif (rel := walk.file(member.name, member.size)) is not None:
                yield rel, member.size, _MemberReader(MemberBytes(tf.fileobj, member), name, member.offset_data)


def _iter_zip(archive: Path, walk: _Walk) -> Iterator[ArchiveItem]:
    with _damaged_archive_is_untrusted(walk.archive), zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                walk.folder(info.filename)
            elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits at all (zipfile.writestr, Windows): a file
                walk.refuse(info.filename, "link or special file")
            elif (rel := walk.file(info.filename, info.file_size)) is not None:
                with zf.open(info) as source:
                    yield rel, info.file_size, _MemberReader(source, walk.archive)


def iter_archive(path: Path, fmt: str, *, strip: int = 0, max_total: int | None = None, name: str | None = None, room: Room | None = None) -> Iterator[ArchiveItem]:
    """Every plain file of an archive on disk, in archive order, checked and stripped.

    Yields (path after stripping `strip` leading folders, size, a reader of exactly `size`
    bytes, valid until the next item). Raises UnsafeArchiveError for a hostile or damaged
    archive and LengthError past `max_total` unpacked bytes; NoSpaceError past `room`. Nothing is written.
    """
    name = name or path.name
    if fmt == "zip":
        yield from _iter_zip(path, _Walk(strip, max_total, name, room))
        return
    with open(path, "rb") as raw:
        yield from iter_tar_stream(raw, fmt, strip=strip, max_total=max_total, name=name, room=room)


def _place(items: Iterator[ArchiveItem], txn, dest_rel: str, meter: Meter | None, archive: str) -> int:
    """Each walked file into `txn` under `dest_rel`, through the one streaming copy; small files
    are read whole and given to a Writer (a fast one creates them while the walk goes on)."""
    total, plain = 0, txn.writes.plain
    try:
        with small_file_writer(plain) as small_files:
            for rel, size, source in items:
                rel = f"{dest_rel}/{rel}"
                what = f"{archive}:{rel}"
                if size <= SMALL_FILE:
                    data = source.read(size + 1)  # one byte more: a member longer than declared is refused
                    copy = Copy(None, what=what, limit=size, plain=plain).feed((data,))
                    copy.check(None, size)
                    small_files.write(txn.path_for(rel), data)
                else:
                    with closing_output(open(txn.path_for(rel), "wb"), reserve=size, plain=plain) as out:
                        copy = Copy(out, what=what, limit=size, plain=plain).feed(member_chunks(source, size + 1))
                    copy.check(None, size)
                total += size
                if meter is not None:
                    meter.update(total)
                txn.add(rel, copy.done, copy.sha256)
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:  # a file another step of the pack placed
        raise UnsafeArchiveError(
            f"{archive}: member {os.path.relpath(exc.filename, txn.files_root)!r} clashes with a file or folder already staged",
            hint="the archive is damaged or hostile; nothing was installed",
        ) from exc
    return total


def extract_tar_stream(raw: BinaryIO, fmt: str, txn, dest_rel: str, *, strip: int = 0, max_total: int | None = None, name: str = "archive", meter: Meter | None = None) -> int:
    """Extract a tar stream (read front to back, once) into `txn` under `dest_rel`, within the room there is."""
    return _place(iter_tar_stream(raw, fmt, strip=strip, max_total=max_total, name=name, room=Room.at(txn.data_dir, txn.files_root)), txn, dest_rel, meter, name)


def extract(archive: Path, fmt: str, txn, dest_rel: str, *, strip: int = 0, max_total: int | None = None, meter: Meter | None = None) -> int:
    """Extract a file on disk into `txn` under `dest_rel`, within the room there is; returns the bytes unpacked."""
    return _place(iter_archive(archive, fmt, strip=strip, max_total=max_total, room=Room.at(txn.data_dir, txn.files_root)), txn, dest_rel, meter, archive.name)
