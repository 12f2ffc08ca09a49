"""`status --export`: what this host has (install records, and a chunk index of each large file,
computed now), its free space and GPUs, and the packs it wants.

The chunk index is computed at export, not kept from install time: it costs one read of each
indexed file (bench/RESULTS.md has the figure), shown as progress, and it describes the bytes
that are on disk now, not what was installed weeks ago.
"""

from __future__ import annotations

import shutil
import socket
import uuid
from pathlib import Path

from executor.chunking import index_file
from executor.events import Listener, Meter, ignore
from executor.preflight import existing_parent
from executor.store import Store, now_iso
from manifests.chunk_format import INDEX_THRESHOLD
from manifests.errors import PolicyError
from manifests.hardware import Hardware
from manifests.hoststate import HostFile, HostPack, HostState, Want
from manifests.version import VERSION

# The manifest format versions sideload reads; a builder makes a bundle for --for only if 3 is here.
READS_MANIFEST_FORMATS = (1, 2, 3)


def export_state(store: Store, hardware: Hardware, wants: list[Want], listener: Listener = ignore) -> HostState:
    records = store.records()
    to_index = [(r, f) for r in records for f in r.files if f.size >= INDEX_THRESHOLD]
    meter = Meter(listener, "export", 0, "chunk index", sum(f.size for _, f in to_index))
    done = 0
    packs = []
    for record in records:
        files = []
        for f in record.files:
            if f.size < INDEX_THRESHOLD:
                files.append(HostFile(f.path, f.size, f.sha256))
                continue
            path = Path(record.data_dir) / f.path
            try:
                found = index_file(path, _Offset(meter, done))
            except FileNotFoundError:
                raise PolicyError(f"{record.key}: {path} is missing", hint=f"repair it (`devops-cp data install {record.pack_id} --reinstall`) or remove the pack, then export again") from None
            done += f.size
            files.append(HostFile(f.path, found.size, found.sha256, found.index))  # what is on disk now
        packs.append(HostPack(record.key, record.pack_id, dict(record.choices), record.data_type, record.source, record.fetched_at, tuple(files)))
    meter.done(done)
    return HostState(
        tool_version=VERSION,
        reads_manifest_formats=READS_MANIFEST_FORMATS,
        host_name=socket.gethostname() or "unknown",
        export_id=uuid.uuid4().hex,
        created=now_iso(),
        packs=tuple(packs),
        free_space=_free_space(store, {r.data_type for r in records} | set(store.config.data_dirs)),
        gpus=tuple({"vendor": g.vendor, "name": g.name, "memory_total_mb": g.memory_total_mb} for g in hardware.gpus),
        wants=tuple(wants),
    )


def _free_space(store: Store, data_types: set[str]) -> dict[str, int]:
    return {t: shutil.disk_usage(existing_parent(store.data_dir(t))).free for t in sorted(data_types)}


class _Offset:
    """One file's progress, reported as bytes of the whole export."""

    def __init__(self, meter: Meter, before: int):
        self.meter, self.before = meter, before

    def update(self, done: int, force: bool = False) -> None:
        self.meter.update(self.before + done, force)
