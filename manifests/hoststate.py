"""What an air-gapped host has and wants (`status --export`): the model and its strict JSON.

Pure. The builder reads the document as untrusted input: `parse_export` refuses anything
malformed or oversized with exit 2 (ExportError), and a chunk index that lies about its
size with exit 3 (manifests/chunk_format.py), before it allocates for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from manifests.chunk_format import (
    AVG_CHUNK,
    CHUNKER,
    HASH_SIZE,
    MAX_CHUNK,
    MIN_CHUNK,
    check_count,
    check_index,
    index_count,
)
from manifests.errors import UsageError
from manifests.fields import Fields

EXPORT_FORMAT = 1
MAX_EXPORT_BYTES = 64 << 20  # a host with 2 TiB of indexed files writes about 5 MiB per 10 GiB: room to spare
MAX_ITEMS = 100_000  # packs, files, wants, data types, GPUs: each list
CHUNKER_DOC = {"algorithm": CHUNKER, "min": MIN_CHUNK, "avg": AVG_CHUNK, "max": MAX_CHUNK, "hash_bytes": HASH_SIZE}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ExportError(UsageError):
    """A host export that is malformed or too large (exit 2)."""


@dataclass(frozen=True)
class HostFile:
    path: str
    size: int
    sha256: str
    chunks: bytes | None = None  # the encoded chunk index (manifests/chunk_format.py); None: below the index threshold


@dataclass(frozen=True)
class HostPack:
    key: str
    id: str
    choices: dict[str, str]
    data_type: str
    source: str
    fetched_at: str
    files: tuple[HostFile, ...]


@dataclass(frozen=True)
class Want:
    pack: str
    choices: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostState:
    tool_version: str
    reads_manifest_formats: tuple[int, ...]
    host_name: str
    export_id: str
    created: str
    packs: tuple[HostPack, ...]
    free_space: dict[str, int]  # data type -> free bytes in its data directory
    gpus: tuple[dict[str, Any], ...]
    wants: tuple[Want, ...]

    def pack(self, key: str) -> HostPack | None:
        return next((p for p in self.packs if p.key == key), None)

    @property
    def data_size(self) -> int:
        return sum(f.size for p in self.packs for f in p.files)


def to_json(state: HostState) -> bytes:
    doc = {
        "export_format": EXPORT_FORMAT,
        "tool_version": state.tool_version,
        "reads_manifest_formats": list(state.reads_manifest_formats),
        "host": {"name": state.host_name, "export_id": state.export_id},
        "created": state.created,
        "chunker": CHUNKER_DOC,
        "packs": [
            {
                "key": p.key, "id": p.id, "choices": p.choices, "data_type": p.data_type, "source": p.source, "fetched_at": p.fetched_at,
                "files": [_file_doc(f) for f in p.files],
            }
            for p in state.packs
        ],
        "free_space": [{"data_type": t, "free_bytes": n} for t, n in sorted(state.free_space.items())],
        "gpus": list(state.gpus),
        "wants": [{"pack": w.pack, "choices": w.choices} for w in state.wants],
    }
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    parse_export(data)  # never write what a builder would refuse
    return data


def _file_doc(f: HostFile) -> dict:
    doc: dict[str, Any] = {"path": f.path, "size": f.size, "sha256": f.sha256}
    if f.chunks is not None:
        doc["chunks"] = {"count": index_count(f.chunks), "index": base64.b64encode(f.chunks).decode("ascii")}
    return doc


# --- reading: strict ------------------------------------------------------------------------


def parse_export(data: bytes, name: str = "export") -> HostState:
    if len(data) > MAX_EXPORT_BYTES:
        raise ExportError(f"{name} is {len(data)} bytes, more than the {MAX_EXPORT_BYTES} an export may have", hint="is it the file `devops-cp data status --export` wrote?")
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ExportError(f"{name} is not valid JSON: {exc}", hint=REEXPORT_HINT) from None
    top = _reader(name, doc)
    top.only("export_format", "tool_version", "reads_manifest_formats", "host", "created", "chunker", "packs", "free_space", "gpus", "wants")
    if top.get("export_format", int, what="an integer") != EXPORT_FORMAT:
        raise top.fail("export_format", f"version {top.value['export_format']} is not supported, this tool reads version {EXPORT_FORMAT}")
    if top.get("chunker", dict, what="a JSON object") != CHUNKER_DOC:
        problem = f"the host cut its files with other settings than this builder ({CHUNKER_DOC})"
        raise ExportError(f"{name}: field 'chunker': {problem}", hint="use the same devops-cp version on both sides")
    formats = top.array("reads_manifest_formats", max_items=MAX_ITEMS)
    if not all(type(v) is int and v > 0 for v in formats):
        raise top.fail("reads_manifest_formats", "must be a list of positive integers")
    host = top.child("host")
    host.only("name", "export_id")
    packs = tuple(_pack(top.child("packs", i)) for i in range(len(top.array("packs", max_items=MAX_ITEMS))))
    if len({p.key for p in packs}) != len(packs):
        raise top.fail("packs", "lists a pack key twice")
    free = {}
    for i in range(len(top.array("free_space", max_items=MAX_ITEMS))):
        entry = top.child("free_space", i)
        entry.only("data_type", "free_bytes")
        free[entry.identifier("data_type")] = entry.integer("free_bytes")
    gpus = tuple(top.child("gpus", i).value for i in range(len(top.array("gpus", max_items=MAX_ITEMS))))
    wants = []
    for i in range(len(top.array("wants", max_items=MAX_ITEMS))):
        w = top.child("wants", i)
        w.only("pack", "choices")
        wants.append(Want(w.identifier("pack"), w.string_map("choices")))
    return HostState(
        tool_version=top.text("tool_version", max_length=MAX_TEXT), reads_manifest_formats=tuple(formats), host_name=host.text("name", max_length=MAX_TEXT), export_id=host.text("export_id", max_length=MAX_TEXT),
        created=top.text("created", max_length=MAX_TEXT), packs=packs, free_space=free, gpus=gpus, wants=tuple(wants),
    )  # fmt: skip


def _pack(p: Fields) -> HostPack:
    p.only("key", "id", "choices", "data_type", "source", "fetched_at", "files")
    files = []
    for i in range(len(p.array("files", max_items=MAX_ITEMS))):
        f = p.child("files", i)
        f.only("path", "size", "sha256", *(["chunks"] if "chunks" in f.value else []))
        path, size = f.relative_path("path", max_length=MAX_TEXT), f.integer("size")
        chunks = None
        if "chunks" in f.value:
            c = f.child("chunks")
            c.only("count", "index")
            what = f"export: {p.value['key']}/{path}"
            count = c.integer("count")
            check_count(count, size, what)  # before decoding what a lie could make large
            try:
                raw = base64.b64decode(c.get("index", str, what="a string"), validate=True)
            except binascii.Error:
                raise c.fail("index", "is not base64") from None
            chunks = check_index(raw, count, size, what)
        files.append(HostFile(path, size, f.sha256("sha256"), chunks))
    if len({f.path for f in files}) != len(files):
        raise p.fail("files", "lists a path twice")
    return HostPack(p.text("key", max_length=MAX_TEXT), p.identifier("id"), p.string_map("choices"), p.identifier("data_type"), p.text("source", empty=True, max_length=MAX_TEXT), p.text("fetched_at", max_length=MAX_TEXT), tuple(files))


REEXPORT_HINT = "export it again on the host with `devops-cp data status --export FILE`"
MAX_TEXT = 4096


def _reader(name: str, doc: Any) -> Fields:
    """A reader of the export: what it refuses is the user's input to fix (exit 2)."""
    return Fields(name, "", doc, lambda message: ExportError(message, hint=REEXPORT_HINT))


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
