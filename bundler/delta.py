"""bundle --for: what each file of the new version costs to carry to a host that exported its state.

- the host has it (same sha256): kept, nothing carried;
- the host has an older version with a chunk index: rebuilt from the host's chunks and the
  carried ones; the member is the recipe followed by the carried chunks (manifests/chunk_format.py);
- anything else: whole.

The new file is read once: cut into chunks, each looked up in the host's index, the chunks the
host lacks spilled to a file beside the staged one, so the member's sha256 is known before the
manifest that signs it is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from executor.chunking import cut
from executor.events import Meter
from executor.transfer import file_chunks
from manifests.chunk_format import (
    CARRIED,
    HOST,
    INDEX_THRESHOLD,
    RecipeWriter,
    chunk_hash,
    iter_index,
)
from manifests.hoststate import HostFile

WORTH_IT = 0.5  # a rebuild that carries more than this share of the file is carried whole instead


@dataclass(frozen=True)
class Delivery:
    kind: str  # "kept", "rebuilt" or "whole"
    recipe: bytes = b""
    spill: Path | None = None  # the carried chunks' bytes, in recipe order
    member_size: int = 0
    member_sha256: str = ""
    base_size: int = 0
    base_sha256: str = ""
    chunks: int = 0
    carried_chunks: int = 0


KEPT = Delivery("kept")
WHOLE = Delivery("whole")


def decide(staged: Path, size: int, sha256: str, host: HostFile | None, meter: Callable[[], Meter] | None = None) -> Delivery:
    """`meter`: makes the progress meter of the read, for the files that are read."""
    if host is None:
        return WHOLE
    if host.sha256 == sha256 and host.size == size:
        return KEPT
    if host.chunks is None or size < INDEX_THRESHOLD:
        return WHOLE
    return _rebuild(staged, size, host, meter) or WHOLE


def _rebuild(staged: Path, size: int, host: HostFile, meter: Callable[[], Meter] | None) -> Delivery | None:
    have: dict[bytes, int] = {}  # a chunk's hash -> (its offset in the host's file << 16) | its length
    offset = 0
    for length, digest in iter_index(host.chunks):
        have.setdefault(digest, offset << 16 | length)
        offset += length
    spill = staged.with_name(f".{staged.name}.carried")
    recipe = RecipeWriter()
    carried = 0
    progress = meter() if meter is not None else None
    with open(staged, "rb") as new, open(spill, "wb") as out:
        for data in cut(new, progress):
            digest = chunk_hash(data)
            found = have.get(digest)
            if found is not None and found & 0xFFFF == len(data):
                recipe.add(HOST, found >> 16, len(data), digest)
                continue
            recipe.add(CARRIED, 0, len(data), digest)
            out.write(data)
            carried += len(data)
    if progress is not None:
        progress.done(size)
    del have
    chunks, carried_chunks, recipe = recipe.count, recipe.carried, recipe.encode()
    if len(recipe) + carried > size * WORTH_IT:
        spill.unlink()
        return None
    member_hash = hashlib.sha256(recipe)
    with open(spill, "rb") as f:  # small: the chunks the host lacks
        for chunk in file_chunks(f):
            member_hash.update(chunk)
    return Delivery(
        "rebuilt", recipe, spill, len(recipe) + carried, member_hash.hexdigest(), host.size, host.sha256,
        chunks=chunks, carried_chunks=carried_chunks,
    )  # fmt: skip
