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
from dataclasses import dataclass
from pathlib import Path

from executor.chunking import cut
from executor.transfer import file_chunks
from manifests.chunk_format import CARRIED, HOST, INDEX_THRESHOLD, Step, chunk_hash, encode_recipe
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


def decide(staged: Path, size: int, sha256: str, host: HostFile | None) -> Delivery:
    if host is None:
        return WHOLE
    if host.sha256 == sha256 and host.size == size:
        return KEPT
    if host.chunks is None or size < INDEX_THRESHOLD:
        return WHOLE
    return _rebuild(staged, size, host) or WHOLE


def _rebuild(staged: Path, size: int, host: HostFile) -> Delivery | None:
    have: dict[bytes, tuple[int, int]] = {}
    offset = 0
    for length, digest in host.chunks:
        have.setdefault(digest, (offset, length))
        offset += length
    spill = staged.with_name(f".{staged.name}.carried")
    steps: list[Step] = []
    carried = 0
    with open(staged, "rb") as new, open(spill, "wb") as out:
        for data in cut(new):
            digest = chunk_hash(data)
            found = have.get(digest)
            if found is not None and found[1] == len(data):
                steps.append(Step(HOST, found[0], len(data), digest))
                continue
            steps.append(Step(CARRIED, 0, len(data), digest))
            out.write(data)
            carried += len(data)
    recipe = encode_recipe(steps)
    if len(recipe) + carried > size * WORTH_IT:
        spill.unlink()
        return None
    member_hash = hashlib.sha256(recipe)
    with open(spill, "rb") as f:  # small: the chunks the host lacks
        for chunk in file_chunks(f):
            member_hash.update(chunk)
    return Delivery(
        "rebuilt", recipe, spill, len(recipe) + carried, member_hash.hexdigest(), host.size, host.sha256,
        chunks=len(steps), carried_chunks=sum(1 for s in steps if s.kind == CARRIED),
    )  # fmt: skip
