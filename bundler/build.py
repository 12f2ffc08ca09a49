"""bundle: plans -> the executor stages every pack (two at a time) -> one signed archive.

Staging lives in the user cache (`~/.cache/devops-cp/bundle-staging`), so an
interrupted bundle resumes its downloads on the next run. Files are hashed once,
as they are fetched; the archive writer reads each staged file once.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import platformdirs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bundler import bootstrap, tool_wheels
from bundler.writer import Member, write_archive
from executor import durable
from executor.engine import Engine
from executor.events import Meter
from executor.preflight import check_space
from executor.steps import uses_python
from executor.txn import PackTransaction, recover
from manifests import signing
from manifests.bundle import (
    BundleManifest,
    FileEntry,
    PackEntry,
    PartEntry,
    PartsIndex,
    TOOL_DATA_TYPE,
    format_timestamp,
    parts_index_name,
    sha256sum_lines,
    to_json,
)
from manifests.errors import UsageError
from manifests.plan import Plan
from manifests.version import VERSION
from manifests.recipe import StepSpec

TOOL_VERSION = VERSION
SHA256_SUFFIX = ".sha256"
SIG_SUFFIX = ".sig"


def staging_dir() -> Path:
    return platformdirs.user_cache_path("devops-cp", appauthor=False) / "bundle-staging"


def step_to_json(step: StepSpec) -> dict:
    """Only the fields that differ from a blank step: short, readable manifests."""
    blank = StepSpec(type=step.type)
    return {
        f.name: list(v) if isinstance(v, tuple) else v
        for f in dataclasses.fields(step)
        if (v := getattr(step, f.name)) != getattr(blank, f.name) or f.name == "type"
    }


def step_from_json(data: dict) -> StepSpec:
    return StepSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass
class BundleResult:
    manifest: BundleManifest
    paths: list[Path]  # the archive or its parts, then the checksum list and signatures
    parts: list[PartEntry]
    notes: list[str]


def _hardware_needs(plan: Plan) -> tuple[str, int]:
    vendor, vram = "", 0
    for choice in plan.recipe.choices:
        option = choice.option(dict(plan.choices)[choice.id])
        vendor = option.gpu_vendor or vendor
        vram = max(vram, option.min_vram_mb or 0)
    return vendor, vram


def _stage_pack(engine: Engine, plan: Plan, txn: PackTransaction) -> tuple[PackEntry, list[str]]:
    outcomes = engine.stage(plan, txn)
    vendor, vram = _hardware_needs(plan)
    entry = PackEntry(
        key=plan.key,
        id=plan.pack_id,
        label=plan.recipe.label,
        data_type=plan.recipe.data_type,
        choices=dict(plan.choices),
        update_schedule=plan.recipe.update_schedule,
        fetched_at=format_timestamp(datetime.now(timezone.utc)),
        offline_steps=[step_to_json(s) for s in plan.offline_steps],
        source=", ".join(o.source for o in outcomes if o.source),
        checksum_verified=all(o.checksum_verified for o in outcomes),
        tool_hint=plan.recipe.tool_hint,
        gpu_vendor=vendor,
        min_vram_mb=vram,
        python_packages=plan.recipe.requires.packages_pip if uses_python(plan.offline_steps) else (),
    )
    return entry, [n for o in outcomes for n in o.notes]


def build_bundle(
    engine: Engine,
    plans: list[Plan],
    out: Path,
    *,
    private_key: Ed25519PrivateKey | None,
    expires_in: timedelta | None = None,
    split_size: int | None = None,
    confirm=None,
    include_tool: tool_wheels.Target | None = None,
) -> BundleResult:
    """Fetch, stage and archive. Nothing named OUT* exists until the archive is complete.

    `include_tool`: also carry wheels of this tool and its dependencies for that target
    (bundler/tool_wheels.py), and write OUT.bootstrap.sh beside the bundle.
    """
    out = out.resolve()
    work = staging_dir()
    engine.store.ensure_writable(out.parent)
    if include_tool is not None and private_key is None:
        raise UsageError("--include-tool needs a signed bundle: the air-gapped host checks it with openssl before running anything", hint="pass --key PREFIX.key")
    engine.preflight(plans, confirm or (lambda *_: True), target_dir=work)
    check_space(out.parent, sum(p.size_estimate_bytes for p in plans))
    held = ExitStack()  # bundles share this staging cache and its partial downloads: one at a time
    txns: list[PackTransaction] = []
    wheel_dir = None
    try:
        held.enter_context(engine.store.locked([work]))
        recover(engine.store, work)  # staged copies that a killed bundle left behind
        txns = [PackTransaction(engine.store, work, plan.key) for plan in plans]
        tool = None
        if include_tool is not None:  # first: a missing index fails in seconds, before gigabytes are fetched
            wheel_dir = Path(tempfile.mkdtemp(prefix="devops-cp-tool-wheels-"))  # tens of MB; not in the staging cache
            tool = tool_wheels.collect(wheel_dir, include_tool)
        workers = max(1, min(engine.config.max_parallel_downloads, len(plans)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            staged = list(pool.map(lambda pt: _stage_pack(engine, *pt), zip(plans, txns)))
        return _write(engine, out, plans, txns, staged, private_key, expires_in, split_size, tool)
    finally:
        for txn in txns:
            txn.abort()
        if wheel_dir is not None:
            shutil.rmtree(wheel_dir, ignore_errors=True)
        held.close()


def _write(engine, out, plans, txns, staged, private_key, expires_in, split_size, tool=None) -> BundleResult:
    files, members, packs = [], [], [entry for entry, _ in staged]
    if tool is not None:  # the wheels go first: the bootstrap's tar stops reading right after them
        tool_pack, files, tool_members = tool_wheels.manifest_entries(tool, format_timestamp(datetime.now(timezone.utc)), TOOL_VERSION)
        packs.append(tool_pack)
        members = [Member(name, path, size) for name, path, size in tool_members]
    for plan, txn in zip(plans, txns):
        for rel in sorted(txn.files):
            record = txn.files[rel]
            name = f"packs/{plan.key}/{rel}"
            files.append(FileEntry(plan.key, rel, record.size, record.sha256, name))
            members.append(Member(name, txn.files_root / rel, record.size))
    now = datetime.now(timezone.utc)
    signer = signing.key_id(private_key.public_key()) if private_key else None
    manifest = BundleManifest(
        bundle_id=uuid.uuid4().hex,
        created=format_timestamp(now),
        expires=format_timestamp(now + expires_in) if expires_in else None,
        tool_version=TOOL_VERSION,
        signer_key_id=signer,
        packs=tuple(packs),
        files=tuple(files),
    )
    manifest_bytes = to_json(manifest)
    signature = signing.sign(private_key, manifest_bytes) if private_key else None
    total = sum(m.size for m in members)
    check_space(out.parent, total)
    meter = Meter(engine.listener, "bundle", 0, out.name, total)
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        meter.update(done)

    parts = write_archive(out, manifest_bytes, signature, members, split_size=split_size, on_bytes=on_bytes)
    meter.done(done)
    paths = [out.with_name(p.name) for p in parts]
    listed = []  # besides the parts, in the signed checksum list
    if tool is not None:
        script, digest = bootstrap.write(out.parent, bootstrap_info(manifest, out.name, [p.name for p in parts] if split_size is not None else []))
        listed.append((script.name, digest))
        paths.append(script)
    paths += _write_side_files(out, parts, private_key, signer, split_size is not None, listed)
    return BundleResult(manifest, paths, parts, [n for _, notes in staged for n in notes])


def bootstrap_info(manifest: BundleManifest, bundle_name: str, parts: list[str]) -> bootstrap.BootstrapInfo:
    """What the bootstrap script needs, from the manifest alone (so `bootstrap-script` prints the same bytes)."""
    tool = next((p for p in manifest.packs if p.data_type == TOOL_DATA_TYPE), None)
    if tool is None:
        raise UsageError(f"{bundle_name} carries no wheels of this tool", hint="make the bundle with `devops-cp data bundle ... --include-tool`")
    python = tool.choices.get("python", "")
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise UsageError(f"{bundle_name}: its tool wheels name no target Python (got {python!r})", hint="make the bundle again with --include-tool")
    members = tuple(f.member for f in manifest.files_for(tool.key))
    return bootstrap.BootstrapInfo(bundle_name, tuple(parts), members, python, tool_wheels.DIST_NAME)


def _write_side_files(out: Path, parts: list[PartEntry], private_key, signer: str | None, split: bool, listed=()) -> list[Path]:
    """OUT.sha256 (for `sha256sum -c`: the parts, then `listed` (name, sha256) such as the
    bootstrap script) and, for split bundles, the parts index; each signed."""
    written = []
    checksums = [*((p.name, p.sha256) for p in parts), *listed]
    documents = [(out.with_name(out.name + SHA256_SUFFIX), sha256sum_lines(checksums).encode())]
    if split:
        index = PartsIndex(bundle_name=out.name, parts=tuple(parts), total_size=sum(p.size for p in parts), signer_key_id=signer)
        documents.append((out.with_name(parts_index_name(out.name)), to_json(index)))
    for path, data in documents:
        durable.write_atomic(path, data)
        written.append(path)
        if private_key is not None:
            sig_path = path.with_name(path.name + SIG_SUFFIX)
            durable.write_atomic(sig_path, signing.sign(private_key, data))
            written.append(sig_path)
    return written
