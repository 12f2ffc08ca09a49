"""Rebuilding a file from the host's old copy and the chunks a bundle carried.

The new file is written into the pack's staging area chunk by chunk, in recipe order: a
chunk the host has is read from its old file, a carried one from the bundle member. Each
chunk's hash is checked before it is written, the whole file's length and sha256 against
the signed manifest before the pack can be committed (Copy: the one chunk loop).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from executor.transfer import Copy, closing_output, hash_file
from manifests.chunk_format import HOST, chunk_hash, iter_recipe, read_recipe
from manifests.errors import BundleStructureError, PolicyError

FULL_BUNDLE_HINT = "this bundle was made for this host as it was when exported; make a full bundle (without --for) or export again and make a new one"


def check_host_file(path: Path, what: str, meter, *versions: tuple[int, str]) -> int:
    """Before anything is written: the host's file the bundle builds on is there and is one of
    `versions` (size, sha256): the one exported or, after an update already applied, the new one.
    Returns the index of the version found."""
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        raise PolicyError(f"{what}: this host has no {path}, which the bundle builds on", hint=FULL_BUNDLE_HINT) from None
    if any(size == actual_size for size, _ in versions):
        digest = hash_file(path, meter).sha256
        for index, (size, sha256) in enumerate(versions):
            if (size, sha256) == (actual_size, digest):
                return index
    raise PolicyError(f"{what}: {path} is not the file the bundle was made for (changed since the export, or another host)", hint=FULL_BUNDLE_HINT)


def rebuild(out_path: str, base: Path, member: BinaryIO, *, size: int, sha256: str, base_size: int, carried_size: int, what: str, plain: bool = False) -> Copy:
    """Write the new file at `out_path` (staging); exit 3 on any recipe or chunk that lies."""
    recipe = read_recipe(member.read, size=size, base_size=base_size, carried_size=carried_size, what=what)
    with open(base, "rb") as old, closing_output(open(out_path, "wb"), reserve=size, plain=plain) as out:
        copy = Copy(out, what=what, limit=size, writeback=True, plain=plain).feed(_chunks(recipe, old.fileno(), member, what))
    copy.check(sha256, size)
    return copy


def _chunks(recipe: bytes, old_fd: int, member: BinaryIO, what: str) -> Iterator[bytes]:
    for index, (kind, offset, length, digest) in enumerate(iter_recipe(recipe)):
        if kind == HOST:
            data = os.pread(old_fd, length, offset)
            source = "the host's file"
        else:
            data = _read_exact(member, length, what)
            source = "the bundle"
        if len(data) != length:
            raise PolicyError(f"{what}: the host's file ended before chunk {index}: it changed while being read", hint=FULL_BUNDLE_HINT)
        if chunk_hash(data) != digest:
            raise BundleStructureError(f"{what}: chunk {index} from {source} does not match its hash in the recipe", hint="the bundle is damaged or hostile; nothing was installed")
        yield data


def _read_exact(member: BinaryIO, size: int, what: str) -> bytes:
    data = member.read(size)
    while len(data) < size:
        more = member.read(size - len(data))
        if not more:
            raise BundleStructureError(f"{what}: the bundle ends inside a carried chunk", hint="the bundle is truncated; copy it again")
        data += more
    return data
