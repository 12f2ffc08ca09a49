"""Reading a bundle where it lies: one archive or its parts, never joined, never written next to.

`open_bundle()` finds the archive (or the signed parts index and every part, each
checked for presence and size before anything is read), and `BundleReader` walks
the tar stream inside the zstd stream: manifest first, signature second, then the
payload members in manifest order. Every structural rule is enforced here:
plain files only, names and sizes exactly as the manifest lists them, nothing
extra, nothing missing, nothing after the end, and decompression bounded by the
sizes the manifest declares.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import zstandard

from executor.extract import ForwardOnly, MemberBytes, next_member
from executor.transfer import hash_file
from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME, BundleManifest, FileEntry, PartEntry, PartsIndex, parts_index_name, verify_parts_index
from manifests.errors import BundleStructureError, DataPackError, LengthError, SignatureError, TrustError, UsageError
from manifests.signing import SIGNATURE_SIZE

MAX_MANIFEST = 64 * 2**20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_PART_NAME = re.compile(r"^(.+)\.(\d{3})$")
MEMBER_OVERHEAD = 4096 + 511  # tar and pax headers plus block padding, per member
BLOCKSIZE = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class BundleLocation:
    name: str  # OUT.tar.zst, as the user named it
    directory: Path
    parts: tuple[Path, ...]  # the archive itself, or its parts in order
    index_path: Path | None = None  # the signed parts index of a split bundle

    @property
    def split(self) -> bool:
        return self.index_path is not None


def bundle_name(path: Path) -> str:
    """OUT.tar.zst for OUT.tar.zst itself or any of its parts' names (OUT.tar.zst.001, ...)."""
    match = _PART_NAME.match(path.name)
    return match.group(1) if match and not path.name.endswith(".tar.zst") else path.name


def locate(path: Path) -> BundleLocation:
    """OUT.tar.zst, or any of its parts' names, -> where its bytes are."""
    path = Path(path)
    directory = path.parent
    name = bundle_name(path)
    index = directory / parts_index_name(name)
    if index.is_file():
        return BundleLocation(name, directory, (), index)
    if (directory / name).is_file():
        return BundleLocation(name, directory, (directory / name,))
    if (directory / f"{name}.001").exists():
        raise BundleStructureError(f"{index} is missing: a split bundle cannot be checked without its parts index", hint="copy the .parts.json and .parts.json.sig files next to the parts")
    raise UsageError(f"no bundle at {path}", hint="pass the bundle's .tar.zst name (or one of its parts)")


def read_parts_index(location: BundleLocation, trusted, allow_unsigned: bool) -> PartsIndex:
    data = location.index_path.read_bytes()
    sig_path = location.index_path.with_name(location.index_path.name + ".sig")
    signature = sig_path.read_bytes() if sig_path.exists() else None
    try:
        index, _ = verify_parts_index(data, signature, trusted, allow_unsigned=allow_unsigned)
    except (SignatureError, BundleStructureError) as exc:  # say which file: the manifest has the same errors
        raise type(exc)(f"parts index {location.index_path.name}: {exc.message}", hint=exc.hint) from exc
    return index


class FrameWalker:
    """Follows the zstd frame and block headers of the compressed bytes, skipping block contents.

    python-zstandard's stream reader ends silently when its input stops in the middle of a
    frame (a truncated copy) and calls bytes after the last frame "unknown frame descriptor".
    Walking the headers tells a complete stream from a cut one, and names trailing garbage.
    """

    _ZSTD = 0xFD2FB528
    _SKIPPABLE = 0x184D2A50  # 0x184D2A50 .. 0x184D2A5F
    _FCS_SIZES = (0, 2, 4, 8)
    _DICT_ID_SIZES = (0, 1, 2, 4)
    _MAX_BLOCK = 128 << 10  # no block of any type holds more (RFC 8878, Block_Maximum_Size)

    def __init__(self) -> None:
        self.state, self.need, self.skip = "magic", 4, 0
        self.buf = bytearray()
        self.offset = 0  # compressed bytes seen
        self.frames = 0
        self.checksum = False
        self.problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None and self.frames > 0 and self.state == "magic" and not self.buf and not self.skip

    def why_incomplete(self) -> str:
        if self.problem:
            return self.problem
        if self.frames == 0 and self.offset == 0:
            return "the bundle is empty"
        return f"the bundle is truncated: its compressed stream stops in the middle of a frame, after {self.offset} bytes"

    def feed(self, data: bytes) -> None:
        if self.problem is not None:
            return
        view, i, n = memoryview(data), 0, len(data)
        while i < n and self.problem is None:
            if self.skip:
                step = min(self.skip, n - i)
                self.skip -= step
                i += step
                continue
            take = min(self.need - len(self.buf), n - i)
            self.buf += view[i : i + take]
            i += take
            if len(self.buf) == self.need:
                header = bytes(self.buf)
                self.buf.clear()
                self._advance(header, self.offset + i - len(header))
        self.offset += n

    def _advance(self, header: bytes, at: int) -> None:
        value = int.from_bytes(header, "little")
        if self.state == "magic":
            if value == self._ZSTD:
                self.state, self.need = "descriptor", 1
            elif value & 0xFFFFFFF0 == self._SKIPPABLE:
                self.state, self.need = "skippable", 4
            else:
                self.problem = f"the bundle has trailing garbage: the bytes from offset {at} on are not zstd data"
        elif self.state == "skippable":
            self.skip = value
            self._frame_done()
        elif self.state == "descriptor":
            single = (value >> 5) & 1
            self.checksum = bool(value & 4)
            if value & 8:
                self.problem = f"the bundle is damaged: invalid zstd frame header at offset {at}"
                return
            rest = (0 if single else 1) + self._DICT_ID_SIZES[value & 3] + (self._FCS_SIZES[value >> 6] or single)
            self.state, self.need = ("frame-header", rest) if rest else ("block", 3)
        elif self.state == "frame-header":
            self.state, self.need = "block", 3
        elif self.state == "block":
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3 or size > self._MAX_BLOCK:
                self.problem = f"the bundle is damaged: invalid zstd block at offset {at}"
                return
            self.skip = 1 if kind == 1 else size
            if value & 1:  # the frame's last block
                if self.checksum:
                    self.state, self.need = "checksum", 4
                else:
                    self._frame_done()
        elif self.state == "checksum":
            self._frame_done()

    def _frame_done(self) -> None:
        self.frames += 1
        self.state, self.need = "magic", 4


class PartsStream:
    """The raw bytes of every part in order; each part's size and sha256 checked as it ends."""

    def __init__(self, parts: list[tuple[Path, PartEntry | None]], against: str = "the signed parts index"):
        self.against = against  # what the sha256 of each part comes from, for the error
        for path, entry in parts:
            if not path.is_file():
                raise BundleStructureError(f"part {path.name} is missing from {path.parent}", hint="copy every part of the bundle, then try again")
            if entry is not None and path.stat().st_size != entry.size:
                raise BundleStructureError(f"part {path.name} is damaged: {path.stat().st_size} bytes, {entry.size} expected", hint="copy that part again")
        self.parts = parts
        self.index = -1
        self.file: BinaryIO | None = None
        self.hasher = hashlib.sha256()
        self.frames = FrameWalker()
        self._next()

    def _next(self) -> bool:
        self._check_current()
        self.index += 1
        if self.index >= len(self.parts):
            self.file = None
            return False
        self.file = open(self.parts[self.index][0], "rb")
        self.hasher = hashlib.sha256()
        return True

    def _check_current(self) -> None:
        if self.file is None:
            return
        self.file.close()
        path, entry = self.parts[self.index]
        if entry is not None and self.hasher.hexdigest() != entry.sha256:
            raise BundleStructureError(f"{self.what(path.name)} is damaged: its sha256 does not match {self.against}", hint="copy it again; nothing was installed")

    def what(self, name: str) -> str:
        return name if self.against == "--checksum" else f"part {name}"

    def read(self, size: int = -1) -> bytes:
        while self.file is not None:
            data = self.file.read(size)
            if data:
                if self.parts[self.index][1] is not None:  # a part's hash is checked only against a signed index
                    self.hasher.update(data)
                self.frames.feed(data)
                return data
            self._next()
        return b""

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def at_end(self) -> bool:
        return self.file is None

    def damaged_part(self) -> str | None:
        """After a failure: the first part read so far whose bytes do not match the signed index (read again, in place)."""
        for path, entry in self.parts[: self.index + 1]:
            if entry is None:
                continue
            try:
                if hash_file(path).sha256 != entry.sha256:
                    return path.name
            except OSError:
                return path.name
        return None


class _Bounded:
    """Decompressed bytes, at most `limit` of them: a bomb stops at the declared sizes."""

    def __init__(self, raw, limit: int):
        self.raw, self.limit, self.count = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise LengthError("the bundle decompresses to more than its manifest declares", hint="the bundle is damaged or hostile; nothing was installed")
        return data


_ARCHIVE_ERRORS = (tarfile.TarError, zstandard.ZstdError, EOFError)


def _structure_errors(exc: Exception, raw: "PartsStream | None" = None) -> BundleStructureError:
    """A third-party archive error, in our words; the frame walker says what it was when it knows."""
    frames = raw.frames if raw is not None else None
    if frames is not None and (frames.problem or (raw.at_end() and not frames.complete)):
        return BundleStructureError(f"{frames.why_incomplete()} ({exc})", hint="copy the bundle again; nothing was installed")
    return BundleStructureError(f"the bundle is damaged or truncated: {exc}", hint="copy it again; nothing was installed")


class _MemberReader(MemberBytes):
    """One payload member's bytes; a stream that ends early and archive errors are BundleStructureError."""

    def __init__(self, stream: ForwardOnly, member: tarfile.TarInfo, raw: PartsStream):
        self.raw = raw
        try:
            super().__init__(stream, member)
        except _ARCHIVE_ERRORS as exc:
            raise _structure_errors(exc, raw) from exc

    def read(self, size: int = -1) -> bytes:
        try:
            return super().read(size)
        except _ARCHIVE_ERRORS as exc:
            raise _structure_errors(exc, self.raw) from exc


class BundleReader:
    def __init__(self, location: BundleLocation, index: PartsIndex | None = None, *, sha256: str | None = None):
        """`sha256`: what the operator says the single archive's sha256 is (--checksum), checked
        as its bytes are read, before anything from it can be committed."""
        if location.split:
            parts = [(location.directory / p.name, p) for p in index.parts]
            against = "the signed parts index"
        else:
            path = location.parts[0]
            parts = [(path, PartEntry(path.name, path.stat().st_size, sha256) if sha256 else None)]
            against = "--checksum"
        self.raw = PartsStream(parts, against)
        self.stream = _Bounded(zstandard.ZstdDecompressor().stream_reader(self.raw, read_size=1 << 20, read_across_frames=True), MAX_MANIFEST + 2 * MEMBER_OVERHEAD)
        self._pending: tarfile.TarInfo | None = None
        try:
            self.tar = tarfile.open(fileobj=ForwardOnly(self.stream), mode="r:")
        except _ARCHIVE_ERRORS as exc:
            self.close()
            raise self._diagnosed(_structure_errors(exc, self.raw)) from exc
        except DataPackError as exc:
            self.close()
            raise self._diagnosed(exc) from exc

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if isinstance(exc, DataPackError):
            better = self._diagnosed(exc)
            if better is not exc:
                raise better from exc

    def _diagnosed(self, exc: DataPackError) -> DataPackError:
        """Whatever failed, a split bundle's damaged part is what a person must fix: name it."""
        if not isinstance(exc, TrustError) or self.raw.parts[0][1] is None:  # one archive: nothing to name
            return exc
        name = self.raw.damaged_part()
        if name is None or exc.message.startswith(f"{self.raw.what(name)} "):
            return exc
        return BundleStructureError(
            f"{self.raw.what(name)} is damaged: its sha256 does not match {self.raw.against} ({exc.message})",
            hint="copy that part again; nothing was installed",
        )

    def _next_member(self) -> tarfile.TarInfo | None:
        try:
            member = self.tar.next()
        except _ARCHIVE_ERRORS as exc:
            raise _structure_errors(exc, self.raw) from exc
        self.tar.members.clear()  # tarfile keeps every TarInfo it read (for getmembers()); we never look back
        return member

    def _next_payload_member(self) -> tarfile.TarInfo | None:
        try:
            return next_member(self.tar)  # plain file headers without tarfile's parsing: see there
        except _ARCHIVE_ERRORS as exc:
            raise _structure_errors(exc, self.raw) from exc

    def _read_small(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if not member.isreg() or member.size > limit:
            raise BundleStructureError(f"bundle member {member.name!r} is not a plain file of at most {limit} bytes")
        try:
            return self.tar.extractfile(member).read()
        except _ARCHIVE_ERRORS as exc:
            raise _structure_errors(exc, self.raw) from exc

    def read_header(self) -> tuple[bytes, bytes | None]:
        """The manifest's exact bytes and its signature (None when the bundle is unsigned)."""
        first = self._next_member()
        if first is None or first.name != MANIFEST_NAME:
            raise BundleStructureError(f"this is not a bundle: its first member is {first.name if first else 'missing'!r}, not {MANIFEST_NAME}")
        manifest = self._read_small(first, MAX_MANIFEST)
        second = self._next_member()
        signature = None
        if second is not None and second.name == SIGNATURE_NAME:
            signature = self._read_small(second, SIGNATURE_SIZE)
        else:
            self._pending = second
        return manifest, signature

    def payload(self, manifest: BundleManifest) -> Iterator[tuple[FileEntry, BinaryIO]]:
        """Each listed file's entry and a reader of exactly its bytes, in manifest order."""
        carried = [f for f in manifest.files if f.in_archive]  # a file kept from the host has no member
        self.stream.limit = self.stream.count + sum(f.member_size + MEMBER_OVERHEAD for f in carried) + 2 * 10240
        listed = {f.member for f in carried}
        seen: set[str] = set()
        for entry in carried:
            member = self._pending or self._next_payload_member()
            self._pending = None
            if member is None:
                raise BundleStructureError(f"the bundle ends before {entry.member!r}, which its manifest lists", hint="the bundle is truncated; copy it again")
            _check_member(member, entry, listed, seen)
            seen.add(member.name)
            yield entry, _MemberReader(self.tar.fileobj, member, self.raw)
        if self._pending is not None:
            _refuse_extra(self._pending.name, seen)
        self._check_end(seen)

    def _check_end(self, seen: set[str]) -> None:
        """After the last listed member: the tar's end marker (two zero blocks) and zero padding, nothing else.

        Read here rather than with tarfile's next(), which takes a cut or garbled header for the end.
        """
        stream = self.tar.fileobj
        zeros = 0
        try:
            stream.seek(self.tar.offset)  # past the last member's padding
            while chunk := stream.read(1 << 16):
                if chunk.strip(b"\0"):
                    at = len(chunk) - len(chunk.lstrip(b"\0"))
                    name = _header_name(chunk[at - at % BLOCKSIZE :]) if zeros + at < 2 * BLOCKSIZE else None
                    if name is not None:
                        _refuse_extra(name, seen)
                    raise BundleStructureError("the bundle has data after its last member", hint="the bundle was altered; nothing was installed")
                zeros += len(chunk)
        except _ARCHIVE_ERRORS as exc:
            raise _structure_errors(exc, self.raw) from exc
        if zeros < 2 * BLOCKSIZE:
            raise BundleStructureError("the bundle is truncated: its archive stops without the end-of-archive marker", hint="copy it again; nothing was installed")

    def finish(self) -> None:
        """Nothing may follow the archive's end; the compressed stream must be whole; every part must check out."""
        try:
            while chunk := self.stream.read(1 << 16):  # payload() read to the tar's end already: only the frame's end is left
                if chunk.strip(b"\0"):
                    raise BundleStructureError("the bundle has data after its last member", hint="the bundle was altered; nothing was installed")
        except _ARCHIVE_ERRORS as exc:
            raise _structure_errors(exc, self.raw) from exc
        self.raw.read()  # reach the end, so the last part's hash is checked
        if not self.raw.at_end():
            raise BundleStructureError("the bundle has bytes after its compressed stream")
        if not self.raw.frames.complete:
            raise BundleStructureError(self.raw.frames.why_incomplete(), hint="copy it again; nothing was installed")
        self.tar = self.stream = None  # the decompressor's window and read buffers: not needed while the packs are committed


def _header_name(block: bytes) -> str | None:
    """The member name in a tar header block (a PAX header's `path` when there is one), or None."""
    try:
        info = tarfile.TarInfo.frombuf(block[:BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.TarError:
        return None
    if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
        found = re.search(rb"\d+ path=([^\n]*)\n", block[BLOCKSIZE : BLOCKSIZE + info.size])
        return found.group(1).decode("utf-8", "surrogateescape") if found else None
    return info.name


def _refuse_extra(name: str, seen: set[str]) -> None:
    if name in seen:
        raise BundleStructureError(f"bundle member {name!r} appears twice", hint="the bundle is hostile or damaged; nothing was installed")
    raise BundleStructureError(f"bundle member {name!r} is not listed in the manifest", hint="the bundle was altered; nothing was installed")


def _check_member(member: tarfile.TarInfo, entry: FileEntry, listed: set[str], seen: set[str]) -> None:
    name = member.name
    if not member.isreg():
        kind = "symlink" if member.issym() else "hardlink" if member.islnk() else "directory" if member.isdir() else "device or special file"
        raise BundleStructureError(f"bundle member {name!r} is a {kind}; only plain files are accepted", hint="the bundle is hostile or damaged; nothing was installed")
    if name in seen:
        raise BundleStructureError(f"bundle member {name!r} appears twice", hint="the bundle is hostile or damaged; nothing was installed")
    if name != entry.member:
        why = "is out of order" if name in listed else "is not listed in the manifest"
        raise BundleStructureError(f"bundle member {name!r} {why} (expected {entry.member!r})", hint="the bundle was altered; nothing was installed")
    if member.size != entry.member_size:
        longer = "longer" if member.size > entry.member_size else "shorter"
        raise BundleStructureError(f"bundle member {name!r} is {longer} than declared ({member.size} bytes, manifest says {entry.member_size})", hint="the bundle was altered; nothing was installed")


def looks_like_bundle(path: Path) -> bool:
    """By content, not name: a bundle's stream starts with a tar member named manifest.json."""
    try:
        location = locate(path)
    except (UsageError, BundleStructureError):
        return False
    if location.split:
        return True
    with open(location.parts[0], "rb") as f:
        if f.read(4) != ZSTD_MAGIC:
            return False
        f.seek(0)
        try:
            head = zstandard.ZstdDecompressor().stream_reader(f).read(512)
        except zstandard.ZstdError:
            return False
    return head[:100].rstrip(b"\0") == MANIFEST_NAME.encode()
