"""Content-defined chunks as bytes: a host's chunk index, and the recipe that rebuilds a file.

Pure: encoders and bounded decoders, no files. Both sides of the round trip read what the
other wrote as untrusted input, so every decoder checks its counts against the sizes it
was told before it allocates anything.

A chunk index is `count` records of (length: u32, hash: 16 bytes), the chunks of one file in
order. A recipe is the head of a rebuilt file's bundle member: MAGIC, a u32 count, then one
record per chunk of the new file, (kind: u8, offset: u64, length: u32, hash: 16 bytes); the
carried chunks' bytes follow the recipe, in the order the recipe uses them.
"""

from __future__ import annotations

import hashlib
import struct

from manifests.errors import BundleStructureError

# The chunker's settings (FastCDC 2020): the host that indexes and the builder that matches
# must cut alike, so the export names them and the builder refuses others.
CHUNKER = "fastcdc2020"
MIN_CHUNK = 1024
AVG_CHUNK = 4096
MAX_CHUNK = 32768
HASH_SIZE = 16  # the first 16 bytes of the chunk's sha256
INDEX_THRESHOLD = 1 << 20  # smaller files are compared on their sha256 only: kept or carried whole

_INDEX_RECORD = struct.Struct(">I16s")
_RECIPE_RECORD = struct.Struct(">BQI16s")
_RECIPE_HEAD = struct.Struct(">8sI")
MAGIC = b"DCPRCP01"
HOST, CARRIED = 0, 1


def chunk_hash(data) -> bytes:
    return hashlib.sha256(data).digest()[:HASH_SIZE]


def max_chunks(size: int) -> int:
    """The most chunks a file of `size` bytes can have: every chunk but the last is MIN_CHUNK or more."""
    return size // MIN_CHUNK + 1


# --- the host's chunk index -------------------------------------------------------------
# Kept as its encoded bytes (20 per chunk) everywhere, never as a list of objects: a 1 GiB file
# has a quarter of a million chunks.


def index_record(length: int, digest: bytes) -> bytes:
    return _INDEX_RECORD.pack(length, digest)


def iter_index(data: bytes):
    """(length, hash) of each chunk, in file order."""
    return _INDEX_RECORD.iter_unpack(data)


def index_count(data: bytes) -> int:
    return len(data) // _INDEX_RECORD.size


def check_count(count: int, size: int, what: str) -> None:
    if count > max_chunks(size):
        raise BundleStructureError(f"{what}: claims {count} chunks, but a file of {size} bytes has at most {max_chunks(size)}", hint="the export is damaged or hostile; export again on the host")


def check_index(data: bytes, count: int, size: int, what: str) -> bytes:
    """Refuses (exit 3) an index that claims more chunks than `size` bytes can hold, whose bytes
    do not match its count, or whose chunks do not add up to the file."""
    check_count(count, size, what)
    if len(data) != count * _INDEX_RECORD.size:
        raise BundleStructureError(f"{what}: its index holds {len(data)} bytes, {count} chunks need {count * _INDEX_RECORD.size}", hint="the export is damaged; export again on the host")
    total = 0
    for length, _ in iter_index(data):
        if not 0 < length <= MAX_CHUNK:
            total = -1
            break
        total += length
    if total != size:
        raise BundleStructureError(f"{what}: its chunks do not add up to the file's {size} bytes", hint="the export is damaged or hostile; export again on the host")
    return data


# --- the recipe ---------------------------------------------------------------------------


class RecipeWriter:
    """The recipe as it is decided, chunk by chunk, straight into its encoded bytes."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.count = self.carried = 0

    def add(self, kind: int, offset: int, length: int, digest: bytes) -> None:
        self.body += _RECIPE_RECORD.pack(kind, offset, length, digest)
        self.count += 1
        self.carried += kind == CARRIED

    def encode(self) -> bytes:
        return _RECIPE_HEAD.pack(MAGIC, self.count) + self.body


def recipe_size(count: int) -> int:
    return _RECIPE_HEAD.size + count * _RECIPE_RECORD.size


def read_recipe(read, *, size: int, base_size: int, carried_size: int, what: str) -> bytes:
    """The recipe's records from `read(n)` (a bundle member), checked against what the signed manifest
    says: the new file's `size`, the host file's `base_size`, the member's `carried_size`. Exit 3 on a
    recipe that reads past the host's file, claims more chunks than the file can have, or builds
    a file of another size. `iter_recipe` then reads the records."""
    hint = "the bundle is damaged or hostile; nothing was installed"
    head = read(_RECIPE_HEAD.size)
    if len(head) != _RECIPE_HEAD.size or head[:8] != MAGIC:
        raise BundleStructureError(f"{what}: its chunk recipe does not start with {MAGIC.decode()}", hint=hint)
    count = _RECIPE_HEAD.unpack(head)[1]
    if count > max_chunks(size) or recipe_size(count) > carried_size:
        raise BundleStructureError(f"{what}: its chunk recipe claims {count} chunks, more than a file of {size} bytes or its member can hold", hint=hint)
    body = read(count * _RECIPE_RECORD.size)
    if len(body) != count * _RECIPE_RECORD.size:
        raise BundleStructureError(f"{what}: its chunk recipe is truncated", hint=hint)
    total = carried = 0
    for index, (kind, offset, length, _) in enumerate(iter_recipe(body)):
        if kind not in (HOST, CARRIED) or not 0 < length <= MAX_CHUNK:
            raise BundleStructureError(f"{what}: chunk {index} of its recipe is malformed", hint=hint)
        if kind == HOST and offset + length > base_size:
            raise BundleStructureError(f"{what}: chunk {index} of its recipe reads past the end of the host's file ({offset + length} > {base_size} bytes)", hint=hint)
        total += length
        carried += length if kind == CARRIED else 0
    if total != size:
        raise BundleStructureError(f"{what}: its chunk recipe builds {total} bytes, the manifest says {size}", hint=hint)
    if recipe_size(count) + carried != carried_size:
        raise BundleStructureError(f"{what}: its recipe needs {carried} carried bytes, the member holds {carried_size - recipe_size(count)}", hint=hint)
    return body


def iter_recipe(body: bytes):
    """(kind, offset, length, hash) of each chunk of the new file, in order."""
    return _RECIPE_RECORD.iter_unpack(body)
