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
from dataclasses import dataclass

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


def encode_index(chunks: list[tuple[int, bytes]]) -> bytes:
    return b"".join(_INDEX_RECORD.pack(length, digest) for length, digest in chunks)


def check_count(count: int, size: int, what: str) -> None:
    if count > max_chunks(size):
        raise BundleStructureError(f"{what}: claims {count} chunks, but a file of {size} bytes has at most {max_chunks(size)}", hint="the export is damaged or hostile; export again on the host")


def decode_index(data: bytes, count: int, size: int, what: str) -> list[tuple[int, bytes]]:
    """Refuses (exit 3) an index that claims more chunks than `size` bytes can hold, whose bytes
    do not match its count, or whose chunks do not add up to the file."""
    check_count(count, size, what)
    if len(data) != count * _INDEX_RECORD.size:
        raise BundleStructureError(f"{what}: its index holds {len(data)} bytes, {count} chunks need {count * _INDEX_RECORD.size}", hint="the export is damaged; export again on the host")
    chunks = list(_INDEX_RECORD.iter_unpack(data))
    if sum(length for length, _ in chunks) != size or any(not 0 < length <= MAX_CHUNK for length, _ in chunks):
        raise BundleStructureError(f"{what}: its chunks do not add up to the file's {size} bytes", hint="the export is damaged or hostile; export again on the host")
    return chunks


# --- the recipe ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    kind: int  # HOST: bytes [offset, offset + length) of the host's old file; CARRIED: the next bytes of the member
    offset: int
    length: int
    hash: bytes


def encode_recipe(steps: list[Step]) -> bytes:
    head = _RECIPE_HEAD.pack(MAGIC, len(steps))
    return head + b"".join(_RECIPE_RECORD.pack(s.kind, s.offset, s.length, s.hash) for s in steps)


def recipe_size(count: int) -> int:
    return _RECIPE_HEAD.size + count * _RECIPE_RECORD.size


def read_recipe(read, *, size: int, base_size: int, carried_size: int, what: str) -> list[Step]:
    """The recipe from `read(n)` (a bundle member), checked against what the signed manifest says:
    the new file's `size`, the host file's `base_size`, the member's `carried_size`. Exit 3 on a
    recipe that reads past the host's file, claims more chunks than the file can have, or builds
    a file of another size."""
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
    steps, total, carried = [], 0, 0
    for index, (kind, offset, length, digest) in enumerate(_RECIPE_RECORD.iter_unpack(body)):
        if kind not in (HOST, CARRIED) or not 0 < length <= MAX_CHUNK:
            raise BundleStructureError(f"{what}: chunk {index} of its recipe is malformed", hint=hint)
        if kind == HOST and offset + length > base_size:
            raise BundleStructureError(f"{what}: chunk {index} of its recipe reads past the end of the host's file ({offset + length} > {base_size} bytes)", hint=hint)
        total += length
        carried += length if kind == CARRIED else 0
        steps.append(Step(kind, offset if kind == HOST else 0, length, digest))
    if total != size:
        raise BundleStructureError(f"{what}: its chunk recipe builds {total} bytes, the manifest says {size}", hint=hint)
    if recipe_size(count) + carried != carried_size:
        raise BundleStructureError(f"{what}: its recipe needs {carried} carried bytes, the member holds {carried_size - recipe_size(count)}", hint=hint)
    return steps
