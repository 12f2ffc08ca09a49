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
from manifests.names import IDENTIFIER_RULE, is_identifier, is_relative_path

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
        raise ExportError(f"{name} is not valid JSON: {exc}", hint="export it again on the host with `devops-cp data status --export FILE`") from None
    top = _Reader(name, "", doc)
    top.only("export_format", "tool_version", "reads_manifest_formats", "host", "created", "chunker", "packs", "free_space", "gpus", "wants")
    if top.get("export_format", int) != EXPORT_FORMAT:
        raise top.fail("export_format", f"version {top.value['export_format']} is not supported, this tool reads version {EXPORT_FORMAT}")
    if top.get("chunker", dict) != CHUNKER_DOC:
        raise top.fail("chunker", f"the host cut its files with other settings than this builder ({CHUNKER_DOC})", hint="use the same devops-cp version on both sides")
    formats = top.items("reads_manifest_formats")
    if not all(type(v) is int and v > 0 for v in formats):
        raise top.fail("reads_manifest_formats", "must be a list of positive integers")
    host = top.child("host")
    host.only("name", "export_id")
    packs = tuple(_pack(top.child("packs", i)) for i in range(len(top.items("packs"))))
    if len({p.key for p in packs}) != len(packs):
        raise top.fail("packs", "lists a pack key twice")
    free = {}
    for i in range(len(top.items("free_space"))):
        entry = top.child("free_space", i)
        entry.only("data_type", "free_bytes")
        free[entry.pack_id("data_type")] = entry.count("free_bytes")
    gpus = tuple(top.child("gpus", i).value for i in range(len(top.items("gpus"))))
    wants = []
    for i in range(len(top.items("wants"))):
        w = top.child("wants", i)
        w.only("pack", "choices")
        wants.append(Want(w.pack_id("pack"), w.choices("choices")))
    return HostState(
        tool_version=top.text("tool_version"), reads_manifest_formats=tuple(formats), host_name=host.text("name"), export_id=host.text("export_id"),
        created=top.text("created"), packs=packs, free_space=free, gpus=gpus, wants=tuple(wants),
    )  # fmt: skip


def _pack(p: _Reader) -> HostPack:
    p.only("key", "id", "choices", "data_type", "source", "fetched_at", "files")
    files = []
    for i in range(len(p.items("files"))):
        f = p.child("files", i)
        f.only("path", "size", "sha256", *(["chunks"] if "chunks" in f.value else []))
        path, size = f.path("path"), f.count("size")
        chunks = None
        if "chunks" in f.value:
            c = f.child("chunks")
            c.only("count", "index")
            what = f"export: {p.value['key']}/{path}"
            count = c.count("count")
            check_count(count, size, what)  # before decoding what a lie could make large
            try:
                raw = base64.b64decode(c.get("index", str), validate=True)
            except binascii.Error:
                raise c.fail("index", "is not base64") from None
            chunks = check_index(raw, count, size, what)
        files.append(HostFile(path, size, f.sha256("sha256"), chunks))
    if len({f.path for f in files}) != len(files):
        raise p.fail("files", "lists a path twice")
    return HostPack(p.text("key"), p.pack_id("id"), p.choices("choices"), p.pack_id("data_type"), p.text("source", empty=True), p.text("fetched_at"), tuple(files))


class _Reader:
    """Typed reads from one JSON object of the export, naming the field in every error."""

    def __init__(self, doc: str, where: str, value: Any):
        self.doc, self.where, self.value = doc, where, value
        if not isinstance(value, dict):
            raise self.fail(None, "must be a JSON object")

    def fail(self, key: str | None, problem: str, hint: str = "export it again on the host with `devops-cp data status --export FILE`") -> ExportError:
        name = f"{self.where}.{key}" if self.where and key else key or self.where or "(top level)"
        return ExportError(f"{self.doc}: field '{name}': {problem}", hint=hint)

    def only(self, *allowed: str) -> None:
        missing = [k for k in allowed if k not in self.value]
        if missing:
            raise self.fail(missing[0], "missing")
        extra = sorted(set(self.value) - set(allowed))
        if extra:
            raise self.fail(extra[0], "unknown field")

    def get(self, key: str, kind: type) -> Any:
        value = self.value[key]
        if type(value) is not kind:
            raise self.fail(key, f"must be a {kind.__name__}")
        return value

    def text(self, key: str, *, empty: bool = False) -> str:
        value = self.get(key, str)
        if (not empty and not value) or len(value) > 4096 or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise self.fail(key, "must be a non-empty string of at most 4096 printable characters")
        return value

    def count(self, key: str) -> int:
        value = self.get(key, int)
        if value < 0:
            raise self.fail(key, "must not be negative")
        return value

    def sha256(self, key: str) -> str:
        value = self.get(key, str)
        if not _SHA256.fullmatch(value):
            raise self.fail(key, "must be 64 lowercase hex digits")
        return value

    def pack_id(self, key: str) -> str:
        value = self.get(key, str)
        if not is_identifier(value):
            raise self.fail(key, f"must be {IDENTIFIER_RULE}, got {value!r}")
        return value

    def path(self, key: str) -> str:
        value = self.text(key)
        if not is_relative_path(value):
            raise self.fail(key, f"{value!r} is not a relative path inside the pack")
        return value

    def choices(self, key: str) -> dict[str, str]:
        value = self.get(key, dict)
        if not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()):
            raise self.fail(key, "must map choice names to values (strings)")
        return dict(value)

    def items(self, key: str) -> list:
        value = self.get(key, list)
        if len(value) > MAX_ITEMS:
            raise self.fail(key, f"has {len(value)} entries, more than the {MAX_ITEMS} allowed")
        return value

    def child(self, key: str, index: int | None = None) -> _Reader:
        value = self.value[key] if index is None else self.value[key][index]
        return _Reader(self.doc, f"{self.where + '.' if self.where else ''}{key}{'' if index is None else f'[{index}]'}", value)


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")
