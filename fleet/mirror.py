"""`mirror BUNDLE --to SITE`: a verified bundle published as one OCI artifact per pack.

One pass over the bundle. The manifest's signature is checked before any byte is sent; every
member is hashed as it goes out, and a blob is committed (the registry's final PUT, the
layout's rename) only after its bytes matched the signed manifest. Manifests and tags go last,
after the whole bundle checked out (`reader.finish()`), so a bundle that fails verification
publishes nothing a host could find (exit 3 or 4), and a mirror cut short shows no tag whose
blobs are missing: run it again and blobs already there are not sent twice.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from executor.events import Listener, Meter, ignore
from executor.transfer import Copy, HashingReader, file_chunks
from fleet import artifact
from fleet.artifact import PackLayout
from fleet.publish import LayoutWriter, RegistryWriter
from manifests.bundle import BundleManifest, FileEntry, parse_timestamp, verify_manifest
from manifests.errors import PolicyError
from sideload.api import TrustOptions, trusted_keys
from sideload.reader import BundleReader, locate, read_parts_index


@dataclass
class Published:
    key: str
    tags: list[str]
    digest: str
    layers: int
    note: str = ""


@dataclass
class MirrorReport:
    bundle_id: str
    created: str
    signer: str | None
    packs: list[Published] = field(default_factory=list)
    uploaded_bytes: int = 0
    reused_blobs: int = 0


class _TarLayer:
    """A pack's small files as one deterministic tar (same files, same bytes: same digest)."""

    def __init__(self, directory: Path, layout: PackLayout):
        self.layout = layout
        self.path = directory / f"{layout.pack.id}-{hashlib.sha256(layout.pack.key.encode()).hexdigest()[:8]}.tar"
        self.file = open(self.path, "wb")
        self.hasher = hashlib.sha256()
        self.tar = tarfile.open(fileobj=self, mode="w|", format=tarfile.PAX_FORMAT)

    def write(self, data) -> int:  # tarfile writes through here: hashed on the way to disk
        if self.file.closed:
            return len(data)  # abandoned: tarfile's stream flushes its last block when collected
        self.hasher.update(data)
        return self.file.write(data)

    def abandon(self) -> None:
        self.file.close()

    def add(self, entry: FileEntry, source) -> None:
        info = tarfile.TarInfo(entry.path)
        info.size, info.mode, info.mtime = entry.size, 0o644, 0
        reader = HashingReader(source, what=entry.member)
        self.tar.addfile(info, reader)
        reader.drain().check(entry.sha256, entry.size)

    def close(self) -> tuple[str, int]:
        self.tar.close()
        self.file.close()
        return "sha256:" + self.hasher.hexdigest(), self.path.stat().st_size


def open_target(address, endpoint=None):
    return LayoutWriter(address.path) if address.kind == "dir" else RegistryWriter(endpoint)


def refuse_host_bundle(manifest: BundleManifest) -> None:
    """An update bundle made for one host (`bundle --for`) is not for a whole site."""
    if manifest.for_host is not None:
        raise PolicyError(
            f"bundle {manifest.bundle_id} was made for one host ({manifest.for_host.name}, export of {manifest.for_host.exported_at}) and holds only what that host lacked",
            hint="bundle the packs without --for to publish them for a site",
        )


def mirror_bundle(path: Path, target, trust: TrustOptions, listener: Listener = ignore) -> MirrorReport:
    keys = trusted_keys(trust.trust_files)
    location = locate(path)
    index = read_parts_index(location, keys, False) if location.split else None
    with BundleReader(location, index) as reader:
        manifest_bytes, signature = reader.read_header()
        now = datetime.now(UTC)
        manifest, signer = verify_manifest(manifest_bytes, signature, keys, allow_unsigned=False, now=now, allow_expired=trust.allow_expired)
        refuse_host_bundle(manifest)
        report = MirrorReport(manifest.bundle_id, manifest.created, signer)
        layouts = artifact.layout_packs(manifest)
        header = _put_small(target, report, [manifest_bytes, signature, artifact.EMPTY_CONFIG])
        with tempfile.TemporaryDirectory(prefix="devops-cp-mirror-") as scratch:
            tars = {layout.pack.key: _TarLayer(Path(scratch), layout) for layout in layouts if layout.in_tar}
            try:
                _send_members(reader, manifest, layouts, tars, target, report, listener)
                reader.finish()  # nothing after the end, every part's hash: before anything is published
                manifests = []
                for layout in layouts:
                    layers = artifact.header_blobs(header[0], len(manifest_bytes), header[1], len(signature))
                    layers += [artifact.file_blob(entry) for entry in layout.own]
                    if layout.in_tar:
                        digest, size = tars[layout.pack.key].close()
                        _put_file(target, report, tars[layout.pack.key].path, digest)
                        layers.append(artifact.tar_blob(layout, digest, size))
                    manifests.append(_pack_manifest(target, report, layout, manifest.created, layers, header[2]))
            finally:
                for tar in tars.values():
                    tar.abandon()
        target.put_manifests(manifests)
    return report


def _put_small(target, report: MirrorReport, blobs: list[bytes]) -> list[str]:
    digests = []
    for data in blobs:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if target.has_blob(digest):
            report.reused_blobs += 1
        else:
            with target.blob_writer() as out:
                out.write(data)
                out.commit(digest)
            report.uploaded_bytes += len(data)
        digests.append(digest)
    return digests


def _put_file(target, report: MirrorReport, path: Path, digest: str) -> None:
    if target.has_blob(digest):
        report.reused_blobs += 1
        return
    with open(path, "rb") as source, target.blob_writer() as out:
        copy = Copy(out, what=str(path)).feed(file_chunks(source))
        copy.check(digest.split(":", 1)[1])  # the file as written
        out.commit(digest)
    report.uploaded_bytes += copy.done


def _send_members(reader: BundleReader, manifest: BundleManifest, layouts: list[PackLayout], tars: dict[str, _TarLayer], target, report: MirrorReport, listener: Listener) -> None:
    """Every payload member checked against the manifest; a pack's large files uploaded, its small ones put in its tar."""
    alone = {(e.pack_key, e.path) for layout in layouts for e in layout.own}
    meter = Meter(listener, "mirror", 0, f"bundle {manifest.bundle_id[:12]}", manifest.total_size)
    done = 0
    for entry, source in reader.payload(manifest):
        chunks, own = file_chunks(source, entry.size), (entry.pack_key, entry.path) in alone
        if entry.pack_key in tars and not own:
            tars[entry.pack_key].add(entry, source)
        elif own and not target.has_blob(artifact.sha256_digest(entry.sha256)):
            with target.blob_writer() as out:
                Copy(out, what=entry.member, limit=entry.size).feed(chunks).check(entry.sha256, entry.size)
                out.commit(artifact.sha256_digest(entry.sha256))
            report.uploaded_bytes += entry.size
        else:  # there already, or the tool's wheels (not mirrored): checked, sent nowhere
            Copy(None, what=entry.member, limit=entry.size).feed(chunks).check(entry.sha256, entry.size)
            report.reused_blobs += own
        done += entry.size
        meter.update(done)
    meter.done(done)


def _pack_manifest(target, report: MirrorReport, layout: PackLayout, created: str, layers, config_digest: str) -> tuple[bytes, list[str]]:
    data = artifact.artifact_manifest(layout.pack, created, layers, config_digest)
    version = artifact.version_of(created)
    tags = [artifact.tag_for(layout.pack.key, version)]
    latest = artifact.tag_for(layout.pack.key, artifact.LATEST)
    current = target.latest_created(latest)
    note = ""
    if current is None or _not_after(current, created):
        tags.append(latest)
    else:
        note = f"{latest} stays on the newer bundle of {current}"
    report.packs.append(Published(layout.pack.key, tags, "sha256:" + hashlib.sha256(data).hexdigest(), len(layers), note))
    return data, tags


def _not_after(current: str, created: str) -> bool:
    try:
        return parse_timestamp(current) <= parse_timestamp(created)
    except ValueError:
        return True  # not a time we wrote: ours replaces it
