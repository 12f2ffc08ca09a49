"""The manifest's fields for a bundle made for one host (`bundle --for`): pure models and their JSON.

`for_host` (top level) names the host and the export the bundle was made from: such a bundle
carries only what that host lacked, so it is useless anywhere else (`mirror` refuses it).
A file's `from_host` says how the host gets it without the bundle carrying it whole:
- "kept": the host's copy is the new version already (same size and sha256); no member;
- "rebuilt": from the host's copy (`base_size`, `base_sha256`) and the member, which holds the
  recipe and the chunks the host lacks (`carried_size`, `carried_sha256`; manifests/chunk_format.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FOR_HOST_VERSION = 3  # the manifest format version of a bundle made for one host
KEPT, REBUILT = "kept", "rebuilt"


@dataclass(frozen=True, slots=True)
class FromHost:
    kind: str  # KEPT or REBUILT
    base_size: int
    base_sha256: str
    carried_size: int = 0
    carried_sha256: str = ""
    chunks: int = 0
    carried_chunks: int = 0


@dataclass(frozen=True)
class ForHost:
    name: str  # the host's name when it exported, for people: the check is on its files
    export_id: str
    exported_at: str


def from_host_doc(value: FromHost) -> dict[str, Any]:
    if value.kind == KEPT:
        return {"kind": KEPT}
    return {
        "kind": REBUILT, "base_size": value.base_size, "base_sha256": value.base_sha256, "carried_size": value.carried_size,
        "carried_sha256": value.carried_sha256, "chunks": value.chunks, "carried_chunks": value.carried_chunks,
    }  # fmt: skip


def for_host_doc(value: ForHost) -> dict[str, Any]:
    return {"name": value.name, "export_id": value.export_id, "exported_at": value.exported_at}


def from_host_from_doc(obj, size: int, sha256: str) -> FromHost:
    """`obj`: the codec's typed reader of the `from_host` object (only, text, integer, sha256, fail)."""
    kind = obj.text("kind")
    if kind == KEPT:
        obj.only("kind")
        return FromHost(KEPT, size, sha256)
    if kind != REBUILT:
        raise obj.fail("kind", f"must be {KEPT!r} or {REBUILT!r}, got {kind!r}")
    obj.only("kind", "base_size", "base_sha256", "carried_size", "carried_sha256", "chunks", "carried_chunks")
    chunks, carried_chunks = obj.integer("chunks", minimum=1), obj.integer("carried_chunks")
    if carried_chunks > chunks:
        raise obj.fail("carried_chunks", f"is more than the file's {chunks} chunks")
    return FromHost(REBUILT, obj.integer("base_size"), obj.sha256("base_sha256"), obj.integer("carried_size"), obj.sha256("carried_sha256"), chunks, carried_chunks)


def for_host_from_doc(obj) -> ForHost:
    obj.only("name", "export_id", "exported_at")
    return ForHost(obj.text("name"), obj.text("export_id"), obj.text("exported_at"))
