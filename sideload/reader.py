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

from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME, BundleManifest, FileEntry, PartEntry, PartsIndex, parts_index_name, verify_parts_index
from manifests.errors import BundleStructureError, LengthError, UsageError
from manifests.signing import SIGNATURE_SIZE

MAX_MANIFEST = 64 * 2**20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_PART_NAME = re.compile(r"^(.+)\.(\d{3})$")
MEMBER_OVERHEAD = 4096 + 511  # tar and pax headers plus block padding, per member


@dataclass(frozen=True)
class BundleLocation:
    name: str  # OUT.tar.zst, as the user named it
    directory: Path
    parts: tuple[Path, ...]  # the archive itself, or its parts in order
    index_path: Path | None = None  # the signed parts index of a split bundle

    @property
    def split(self) -> bool:
        return self.index_path is not None


def locate(path: Path) -> BundleLocation:
    """OUT.tar.zst, or any of its parts' names, -> where its bytes are."""
    path = Path(path)
    directory = path.parent
    match = _PART_NAME.match(path.name)
    name = match.group(1) if match and not path.name.endswith(".tar.zst") else path.name
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
    index, _ = verify_parts_index(data, signature, trusted, allow_unsigned=allow_unsigned)
    return index


class PartsStream:
    """The raw bytes of every part in order; each part's size and sha256 checked as it ends."""

    def __init__(self, parts: list[tuple[Path, PartEntry | None]]):
        for path, entry in parts:
            if not path.is_file():
                raise BundleStructureError(f"part {path.name} is missing from {path.parent}", hint="copy every part of the bundle, then try again")
            if entry is not None and path.stat().st_size != entry.size:
                raise BundleStructureError(f"part {path.name} is damaged: {path.stat().st_size} bytes, {entry.size} expected", hint="copy that part again")
        self.parts = parts
        self.index = -1
        self.file: BinaryIO | None = None
        self.hasher = hashlib.sha256()
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
            raise BundleStructureError(f"part {path.name} is damaged: its sha256 does not match the signed parts index", hint="copy that part again")

    def read(self, size: int = -1) -> bytes:
        while self.file is not None:
            data = self.file.read(size)
            if data:
                self.hasher.update(data)
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


def _structure_errors(exc: Exception) -> BundleStructureError:
    return BundleStructureError(f"the bundle is damaged or truncated: {exc}", hint="copy it again; nothing was installed")


class BundleReader:
    def __init__(self, location: BundleLocation, index: PartsIndex | None = None):
        if location.split:
            parts = [(location.directory / p.name, p) for p in index.parts]
        else:
            parts = [(location.parts[0], None)]
        self.raw = PartsStream(parts)
        self.stream = _Bounded(zstandard.ZstdDecompressor().stream_reader(self.raw, read_size=1 << 20, read_across_frames=True), MAX_MANIFEST + 2 * MEMBER_OVERHEAD)
        try:
            self.tar = tarfile.open(fileobj=self.stream, mode="r|", bufsize=1 << 20)
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise _structure_errors(exc) from exc
        self._pending: tarfile.TarInfo | None = None

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_member(self) -> tarfile.TarInfo | None:
        try:
            return self.tar.next()
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise _structure_errors(exc) from exc

    def _read_small(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if not member.isreg() or member.size > limit:
            raise BundleStructureError(f"bundle member {member.name!r} is not a plain file of at most {limit} bytes")
        try:
            return self.tar.extractfile(member).read()
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise _structure_errors(exc) from exc

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
        self.stream.limit = self.stream.count + sum(f.size + MEMBER_OVERHEAD for f in manifest.files) + 2 * 10240
        listed = {f.member for f in manifest.files}
        seen: set[str] = set()
        for entry in manifest.files:
            member = self._pending or self._next_member()
            self._pending = None
            if member is None:
                raise BundleStructureError(f"the bundle ends before {entry.member!r}, which its manifest lists", hint="the bundle is truncated; copy it again")
            _check_member(member, entry, listed, seen)
            seen.add(member.name)
            try:
                yield entry, self.tar.extractfile(member)
            except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
                raise _structure_errors(exc) from exc
        extra = self._pending or self._next_member()
        if extra is not None:
            raise BundleStructureError(f"bundle member {extra.name!r} is not listed in the manifest", hint="the bundle was altered; nothing was installed")

    def finish(self) -> None:
        """Nothing may follow the tar's end but its zero padding; every part must check out."""
        try:
            while chunk := self.stream.read(1 << 16):
                if chunk.strip(b"\0"):
                    raise BundleStructureError("the bundle has data after its last member", hint="the bundle was altered; nothing was installed")
        except zstandard.ZstdError as exc:
            raise BundleStructureError(f"the bundle has trailing garbage or a damaged end: {exc}") from exc
        self.raw.read()  # reach the end, so the last part's hash is checked
        if not self.raw.at_end():
            raise BundleStructureError("the bundle has bytes after its compressed stream")


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
    if member.size != entry.size:
        longer = "longer" if member.size > entry.size else "shorter"
        raise BundleStructureError(f"bundle member {name!r} is {longer} than declared ({member.size} bytes, manifest says {entry.size})", hint="the bundle was altered; nothing was installed")


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
