"""`install --from SITE` and `check-updates --from SITE`: packs from the site's mirror, trusted
only through the signed bundle manifest each artifact carries.

Per pack: the tag -> the artifact manifest -> the signed manifest and its signature, verified
against this host's trust store (expiry too) before any data byte is fetched -> policy (older
than installed, GPU, offline steps) -> every layer downloaded resumably into the data
directory's staging area and checked against the signed sha256 of what it holds -> one commit.
A layer whose bytes differ from the signed manifest stops the pack (exit 3), nothing installed.
Hosts share nothing: each has its own staging, records and retries (with jitter).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from executor import extract
from executor.engine import Engine, Outcome, PackIdentity
from executor.events import Meter, Notice
from executor.inplace import InPlaceFinder
from executor.intact import changed_file
from executor.http import Download
from executor.preflight import check_space_for
from executor.steps import partial_path
from executor.store import parse_iso
from executor.transfer import Copy, closing_output, file_chunks
from executor.txn import PackTransaction, tidy_staging
from fleet import artifact
from fleet.artifact import (
    BUNDLE_MANIFEST,
    BUNDLE_SIGNATURE,
    FILES_TAR,
    LATEST,
    ONE_FILE,
    PATH_ANNOTATION,
    Blob,
)
from fleet.site import Endpoint, SiteReader, parse_address, site_credentials
from manifests.bundle import BundleManifest, FileEntry, PackEntry, verify_manifest
from manifests.catalog import Catalog
from manifests.errors import (
    BundleStructureError,
    ChecksumMismatch,
    DataPackError,
    PolicyError,
    TrustError,
    UsageError,
)
from manifests.hardware import Hardware
from manifests.plan import parse_choice_args
from manifests.signing import SIGNATURE_SIZE
from manifests.trust import check_pack_for_host
from sideload.api import (
    SideloadRequest,
    TrustOptions,
    _check_offline_needs,
    check_policy,
    run_offline_steps,
    trusted_keys,
)
from sideload.reader import MAX_MANIFEST

FLEET_JITTER = 0.5  # hosts that met the same 429 retry spread over half the wait again


@dataclass
class FromRequest:
    site: str
    packs: tuple[str, ...] = ()  # PACK[:K=V,...]; empty: the installed packs the site has
    trust: TrustOptions = TrustOptions()
    plain_http: bool = False
    version: str | None = None  # a version tag (20261206T103815Z) instead of the newest
    allow_downgrade: bool = False
    allow_commands: tuple[str, ...] = ()  # packs whose offline steps may run (ids or keys)
    force: bool = False  # GPU requirement not met: install anyway
    hardware: Hardware | None = None
    catalog: Catalog = field(default_factory=Catalog)  # this host's own recipes: what may run here
    warnings: list[str] = field(default_factory=list)


@dataclass
class Signed:
    """A pack's artifact at the site, its signed manifest verified."""

    tag: str
    digest: str
    layers: list[Blob]
    manifest: BundleManifest
    pack: PackEntry
    signer: str | None


def open_site(engine: Engine, text: str, plain_http: bool) -> SiteReader:
    settings = replace(engine.settings, jitter=max(engine.settings.jitter, FLEET_JITTER))
    address = parse_address(text, allow_dir=False)
    credentials = site_credentials(address.host, engine.config) if address.kind == "registry" else None
    return SiteReader(Endpoint(engine.client(), settings, address, plain_http=plain_http, credentials=credentials))


def site_packs(site: SiteReader) -> dict[str, set[str]]:
    """pack key -> the versions the site tags for it ('latest' among them)."""
    packs: dict[str, set[str]] = {}
    for tag in site.tags():
        parsed = artifact.parse_tag(tag)
        if parsed:
            packs.setdefault(parsed[0], set()).add(parsed[1])
    return packs


def _matches(key: str, pack_id: str, choices: dict[str, str]) -> bool:
    key_id, _, pairs = key.partition("@")
    have = dict(pair.partition("=")[::2] for pair in pairs.split(",") if pair)
    return key_id == pack_id and all(have.get(k) == v for k, v in choices.items())


def wanted_keys(engine: Engine, site: SiteReader, packs: dict[str, set[str]], specs: tuple[str, ...]) -> list[str]:
    holds = ", ".join(sorted(packs)) or "no packs"
    if not specs:
        keys = [r.key for r in engine.store.records() if r.key in packs]
        if not keys:
            raise UsageError(f"none of the packs installed here is at {site.name}", hint=f"name the packs to install (it holds: {holds})")
        return keys
    keys = []
    for spec in specs:
        pack_id, choices = parse_choice_args(spec)
        found = [k for k in sorted(packs) if _matches(k, pack_id, choices)]
        if not found:
            raise UsageError(f"{site.name} has no pack {spec!r}", hint=f"it holds: {holds}; publish it there with `devops-cp data mirror`")
        if len(found) > 1:
            raise UsageError(f"{spec!r} matches several packs at {site.name}: {', '.join(found)}", hint="name its choices: PACK:KEY=VALUE")
        keys.append(found[0])
    return keys


def read_signed(site: SiteReader, key: str, version: str, keys, trust: TrustOptions) -> Signed:
    """The artifact tagged for (key, version), its signed manifest verified; no data byte read yet."""
    tag = artifact.tag_for(key, version)
    found = site.manifest(tag)
    if found is None:
        raise UsageError(f"{site.name} has no tag {tag} (pack {key}, version {version})", hint="`devops-cp data check-updates --from SITE` lists what it holds")
    doc, digest = found
    layers = artifact.read_layers(doc, f"{site.name} {tag}")
    header = [next((b for b in layers if b.media_type == kind), None) for kind in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE)]
    if None in header:
        raise BundleStructureError(f"{site.name} {tag} carries no signed manifest", hint="publish it with `devops-cp data mirror`; nothing was installed")
    manifest_bytes = site.small_blob(header[0].digest, header[0].size, MAX_MANIFEST)
    signature = site.small_blob(header[1].digest, header[1].size, SIGNATURE_SIZE)
    now = datetime.now(UTC)
    manifest, signer = verify_manifest(manifest_bytes, signature, keys, allow_unsigned=False, now=now, allow_expired=trust.allow_expired)
    pack = next((p for p in manifest.packs if p.key == key), None)
    if pack is None:
        raise TrustError(f"{site.name} {tag} carries a signed manifest without pack {key}", hint="the site's tags were altered; nothing was installed")
    if version != LATEST and artifact.version_of(manifest.created) != version:
        raise TrustError(f"{site.name} {tag} carries the signed manifest of {manifest.created}, not of version {version}", hint="the site's tags were altered; nothing was installed")
    return Signed(tag, digest, layers, manifest, pack, signer)


def install_from(engine: Engine, request: FromRequest) -> list[Outcome]:
    site = open_site(engine, request.site, request.plain_http)
    keys = trusted_keys(request.trust.trust_files)
    wanted = wanted_keys(engine, site, site_packs(site), request.packs)
    outcomes = []
    for key in wanted:
        try:
            signed = read_signed(site, key, request.version or LATEST, keys, request.trust)
            outcomes.append(_install(engine, site, signed, request))
        except DataPackError as exc:
            outcomes.append(Outcome(key, error=exc))
    return outcomes


def _skip_reason(engine: Engine, signed: Signed, request: FromRequest, *, say: bool = False) -> str | None:
    """Rollback protection: the site's newest older than what is here is skipped; asked for by version, refused.
    The site's version installed is skipped too, unless a file of it is missing or changed: then it is
    repaired (`say`: tell so), fetching only what is not there as it was."""
    installed = engine.store.read_record(signed.pack.key)
    if installed is None:
        return None
    if installed.fetched_at == signed.pack.fetched_at and installed.bundle_created == signed.manifest.created:
        changed = changed_file(installed)
        if changed is None:
            return f"up to date (the site's newest, of {signed.manifest.created}, is installed)"
        if say:
            engine.listener(Notice(signed.pack.key, "info", f"repairing: {changed}"))
        return None
    if parse_iso(installed.fetched_at) > parse_iso(signed.pack.fetched_at) and not request.allow_downgrade:
        if request.version:
            raise PolicyError(
                f"{signed.pack.key}: version {request.version} holds data fetched {signed.pack.fetched_at}, older than what is installed (fetched {installed.fetched_at})",
                hint="pass --allow-downgrade to install the older data anyway",
            )
        return f"kept: what is installed (fetched {installed.fetched_at}) is newer than the site's newest (fetched {signed.pack.fetched_at})"
    return None


def _install(engine: Engine, site: SiteReader, signed: Signed, request: FromRequest) -> Outcome:
    pack = signed.pack
    skip = _skip_reason(engine, signed, request, say=True)
    if skip:
        return Outcome(pack.key, notes=[skip])
    notes: list[str] = []
    check_policy(engine, pack, SideloadRequest(Path(), allow_downgrade=True, force=request.force, hardware=request.hardware, warnings=notes))
    # code from the host: offline steps run only as this host's catalog defines them, or with --allow-commands
    check_pack_for_host(pack, signed.manifest.files_for(pack.key), request.catalog, allow_commands=bool({pack.id, pack.key} & set(request.allow_commands)))
    _check_offline_needs(engine, pack)
    files = signed.manifest.files_for(pack.key)
    data_dir = engine.store.data_dir(pack.data_type)
    engine.store.ensure_writable(data_dir)
    check_space_for({data_dir: sum(f.size + (f.unpack.unpacked_size_bytes or f.size if f.unpack else 0) for f in files) + sum(b.size for b in signed.layers if b.media_type == FILES_TAR)})
    say = engine.say_waiting(pack.key)
    try:  # as sideload: the pack's lock while its layers download, the data dir's commit lock only to commit
        with engine.store.pack_locked({pack.key: data_dir}, on_wait=say), engine.store.staging(data_dir), PackTransaction(engine.store, data_dir, pack.key) as txn:
            _fetch_layers(engine, site, signed, txn)
            with engine.store.locked([data_dir], on_wait=say):
                engine.recover(data_dir)
                meanwhile = _skip_reason(engine, signed, request)  # another run installed it while this one downloaded
                if meanwhile:
                    return Outcome(pack.key, notes=[meanwhile])
                record = engine.commit(
                    PackIdentity(pack.key, pack.id, pack.label, pack.data_type, dict(pack.choices), pack.update_schedule),
                    txn,
                    source=f"{site.name}@{signed.digest}",
                    checksum_verified=pack.checksum_verified,
                    fetched_at=pack.fetched_at,
                    bundle_created=signed.manifest.created,
                )
    finally:
        tidy_staging(engine.store, data_dir)
    try:
        run_offline_steps(engine, pack, Path(record.data_dir))
    except DataPackError as exc:
        return Outcome(pack.key, record=record, error=exc, notes=notes)
    return Outcome(pack.key, record=record, notes=notes)


def _fetch_layers(engine: Engine, site: SiteReader, signed: Signed, txn: PackTransaction) -> None:
    """Every file of the pack from the artifact's layers, each checked against the signed manifest."""
    expected = {f.path: f for f in signed.manifest.files_for(signed.pack.key)}
    total = sum(b.size for b in signed.layers if b.media_type in (ONE_FILE, FILES_TAR))
    # A file the data dir has already, as the signed manifest lists it, is not fetched (executor/inplace.py).
    finder = InPlaceFinder(txn.data_dir, signed.pack.key, engine.store.read_record(signed.pack.key), engine.store.records())
    meter = Meter(engine.listener, signed.pack.key, 0, f"{signed.pack.key} from {site.name}", total)
    done = 0
    for blob in signed.layers:
        if blob.media_type in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE):
            continue
        if blob.media_type == ONE_FILE:
            path = dict(blob.annotations).get(PATH_ANNOTATION, "")
            entry = expected.pop(path, None)
            if entry is None:
                raise BundleStructureError(f"{site.name} {signed.tag}: a layer for {path!r}, which the signed manifest does not list for {signed.pack.key} (or lists once)", hint="the site's copy was altered; nothing was installed")
            if blob.digest != artifact.sha256_digest(entry.sha256) or blob.size != entry.size:
                raise ChecksumMismatch(f"{path} at {site.name} ({signed.tag})", entry.sha256, blob.digest.split(":", 1)[1])
            kept = finder.find(entry.path, entry.sha256, entry.size) if entry.unpack is None else None
            if kept is not None:
                txn.keep_in_place(kept)
                if note := finder.adoption_note(kept):
                    engine.listener(Notice(signed.pack.key, "info", note))
            else:
                _fetch_file(engine, site, blob, entry, txn, meter, done)
        elif blob.media_type == FILES_TAR:
            _fetch_tar(engine, site, signed, blob, expected, txn, meter, done)
        else:
            raise BundleStructureError(f"{site.name} {signed.tag}: a layer of unknown type {blob.media_type}", hint="the site's copy was altered or is newer than this tool")
        done += blob.size
        meter.update(done)
    if expected:
        missing = ", ".join(sorted(expected)[:5])
        raise BundleStructureError(f"{site.name} {signed.tag} lacks files the signed manifest lists: {missing}", hint="publish the bundle again with `devops-cp data mirror`; nothing was installed")
    txn.keep_unchanged(finder)  # files of a tar layer or an archive that are installed as they are
    meter.done(done)


def _download(site: SiteReader, blob: Blob, txn: PackTransaction, what: str, meter: Meter, before: int) -> Download:
    url = site.endpoint.blob_url(blob.digest)
    return Download(
        client=site.endpoint.client,
        url=url,
        partial=partial_path(txn.data_dir, url),
        what=what,
        settings=site.endpoint.settings,
        meter=_Offset(meter, before),
        size_cap=blob.size,
        auth=site.endpoint.auth,
    )


def _fetch_file(engine: Engine, site: SiteReader, blob: Blob, entry: FileEntry, txn: PackTransaction, meter: Meter, before: int) -> None:
    download = _download(site, blob, txn, f"{entry.path} of {entry.pack_key} from {site.name}", meter, before)
    try:
        copy = download.run(entry.sha256)  # the signed sha256: a swapped layer fails here, its partial file deleted
    except TrustError:
        download.discard()
        raise
    if entry.unpack is not None:
        unpack = entry.unpack
        extract.extract(download.partial, unpack.format, txn, entry.path, strip=unpack.strip_components, max_total=extract.unpack_bound(unpack.unpacked_size_bytes))
    else:
        os.replace(download.partial, txn.path_for(entry.path))
        txn.add(entry.path, copy.done, copy.sha256)
    download.discard()


def _fetch_tar(engine: Engine, site: SiteReader, signed: Signed, blob: Blob, expected: dict[str, FileEntry], txn: PackTransaction, meter: Meter, before: int) -> None:
    """A tar of small files: fetched whole (resumable), then each member checked and placed by the manifest's path."""
    plain = tuple(e for e in expected.values() if e.unpack is None)
    if blob.size > artifact.tar_size_bound(plain):
        raise BundleStructureError(f"{site.name} {signed.tag}: a tar layer of {blob.size} bytes, more than the files it may hold", hint="the site's copy was altered; nothing was installed")
    download = _download(site, blob, txn, f"files of {signed.pack.key} from {site.name}", meter, before)
    try:
        download.run(blob.digest.split(":", 1)[1])  # transport damage only: the files are checked one by one below
        with tarfile.open(download.partial, "r:") as tar:
            for member in tar:
                entry = expected.get(member.name)
                if entry is None or entry.unpack is not None or not member.isreg() or member.size != entry.size:
                    raise BundleStructureError(
                        f"{site.name} {signed.tag}: its tar holds {member.name!r} ({member.size} bytes), not a file the signed manifest lists for {signed.pack.key}",
                        hint="the site's copy was altered; nothing was installed",
                    )
                del expected[member.name]
                with closing_output(open(txn.path_for(entry.path), "wb"), reserve=entry.size) as out:
                    copy = Copy(out, what=f"{entry.path} from {site.name}", limit=entry.size).feed(file_chunks(tar.extractfile(member), entry.size))
                copy.check(entry.sha256, entry.size)
                txn.add(entry.path, copy.done, copy.sha256)
    except tarfile.TarError as exc:
        raise BundleStructureError(f"{site.name} {signed.tag}: its tar layer cannot be read: {exc}", hint="the site's copy was altered; nothing was installed") from exc
    finally:
        download.discard()


class _Offset:
    """One layer's progress as bytes of the whole pack."""

    def __init__(self, meter: Meter, before: int):
        self.meter, self.before = meter, before

    def update(self, done: int, force: bool = False) -> None:
        self.meter.update(self.before + done, force)

    def restart(self, done: int, total: int | None) -> None:
        self.meter.update(self.before + done, True)

    def done(self, done: int) -> None:
        self.meter.update(self.before + done, True)


# --- check-updates --from --------------------------------------------------------------------


def check_updates_from(engine: Engine, text: str, plain_http: bool, trust: TrustOptions) -> dict:
    """Installed packs with a newer signed version at the site, and the newest signed manifest there."""
    site = open_site(engine, text, plain_http)
    keys = trusted_keys(trust.trust_files)
    packs = site_packs(site)
    rows, newest, problems = [], None, []
    for key in sorted(k for k, versions in packs.items() if LATEST in versions):
        try:
            signed = read_signed(site, key, LATEST, keys, trust)
        except DataPackError as exc:
            problems.append({"pack": key, "error": exc.message, "exit_code": exc.exit_code})
            continue
        created = signed.manifest.created
        newest = created if newest is None or parse_iso(created) > parse_iso(newest) else newest
        installed = engine.store.read_record(key)
        if installed is None:
            continue
        newer = parse_iso(signed.pack.fetched_at) > parse_iso(installed.fetched_at)
        rows.append({"key": key, "installed_fetched_at": installed.fetched_at, "site_fetched_at": signed.pack.fetched_at, "site_created": created, "site_expires": signed.manifest.expires, "update": newer})
    return {"site": site.name, "newest_signed_manifest": newest, "packs": rows, "problems": problems}
