"""keygen, trust, bundle, inspect, verify, sideload: the air-gapped commands.

Signing (cryptography), bundler and sideload code are imported inside the commands that use
them: every `devops-cp` command loads this file, and they cost start-up time.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from devops_cp.app import App
from devops_cp.cli_common import PROGRESS_MODES, confirm_on_terminal, emit_json, json_option, print_outcomes, reports_errors
from devops_cp.render import progress_renderer
from executor.config import config_dir
from manifests.errors import UsageError
from manifests.units import fmt_size, parse_duration, parse_size

if TYPE_CHECKING:
    from executor.keys import TrustStore

PASSPHRASE_ENV = "DEVOPS_CP_KEY_PASSPHRASE"


def _passphrase(confirm: bool) -> bytes:
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not sys.stdin.isatty():
            raise UsageError("the key needs a passphrase and there is no terminal to ask", hint=f"set {PASSPHRASE_ENV}, or use --no-passphrase for keygen")
        value = click.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    return value.encode()


def _trust_store() -> TrustStore:
    from executor.keys import TrustStore

    return TrustStore.in_config_dir(config_dir())


@click.command()
@click.option("-o", "--output", "prefix", required=True, type=click.Path(path_type=Path), help="Writes PREFIX.key and PREFIX.pub.")
@click.option("--no-passphrase", is_flag=True, help="Leave the private key unencrypted.")
@json_option
@reports_errors
def keygen(prefix: Path, no_passphrase: bool, as_json: bool) -> None:
    """Create an Ed25519 signing key pair (PREFIX.key, mode 0600; PREFIX.pub)."""
    from executor.keys import write_keypair

    passphrase = None if no_passphrase else _passphrase(confirm=True)
    key_id = write_keypair(prefix, passphrase)
    if as_json:
        emit_json({"key_id": key_id, "private_key": f"{prefix}.key", "public_key": f"{prefix}.pub"})
    else:
        click.echo(f"wrote {prefix}.key and {prefix}.pub\nkey id: {key_id}")


@click.group()
def trust() -> None:
    """The public keys this host trusts for sideloading."""


@trust.command("add")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@reports_errors
def trust_add(public_key: Path, as_json: bool) -> None:
    key_id = _trust_store().add(public_key.read_bytes())
    emit_json({"added": key_id}) if as_json else click.echo(f"trusted {key_id}")


@trust.command("list")
@json_option
@reports_errors
def trust_list(as_json: bool) -> None:
    keys = _trust_store().list()
    if as_json:
        emit_json({"keys": [{"key_id": k, "path": str(p)} for k, p in keys]})
    elif not keys:
        click.echo("no trusted keys (add one with `devops-cp data trust add FILE.pub`)")
    else:
        for key_id, path in keys:
            click.echo(f"{key_id}  {path}")


@trust.command("remove")
@click.argument("key_id")
@json_option
@reports_errors
def trust_remove(key_id: str, as_json: bool) -> None:
    removed = _trust_store().remove(key_id)
    emit_json({"removed": removed}) if as_json else click.echo(f"removed {removed}")


@click.command()
@click.argument("packs", nargs=-1)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="The bundle: OUT.tar.zst.")
@click.option("--for", "for_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="An update for the host that wrote this file (`status --export`): carries only what it lacks. Without PACK: every pack it has and wants.")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The signing key (PREFIX.key).")
@click.option("--unsigned", is_flag=True, help="Write an unsigned bundle (sideload then needs --allow-unsigned).")
@click.option("--split-size", help="Split into parts of at most SIZE (4G, 700MiB, fat32).")
@click.option("--expires", help="Refuse the bundle after this long (30d, 12h).")
@click.option("--yes", "-y", is_flag=True, help="Answer yes to the large-download question.")
@click.option("--include-tool", is_flag=True, help="Also carry wheels of this tool and its dependencies, and OUT.bootstrap.sh.")
@click.option("--target-python", metavar="X.Y", help="With --include-tool: wheels for this Python [default: this one].")
@click.option("--target-platform", metavar="TAG", help="With --include-tool: wheels for this platform, e.g. manylinux_2_17_x86_64 [default: this host's].")
@click.option("--progress", type=PROGRESS_MODES, default="auto", show_default=True)
@json_option
@reports_errors
def bundle(packs, out, for_file, key_path, unsigned, split_size, expires, yes, include_tool, target_python, target_platform, progress, as_json) -> None:
    """Fetch PACK[:KEY=VALUE,...]... into one signed .tar.zst for an air-gapped host."""
    from bundler.build import build_bundle
    from bundler.tool_wheels import Target
    from executor.keys import read_private_key_file

    if (target_python or target_platform) and not include_tool:
        raise UsageError("--target-python and --target-platform go with --include-tool")
    tool_target = Target(target_python, target_platform) if include_tool else None
    if key_path is None and not unsigned:
        raise UsageError("bundle needs a signing key", hint="pass --key PREFIX.key (make one with `devops-cp data keygen`), or --unsigned")
    if not out.name.endswith(".tar.zst"):
        raise UsageError(f"{out} must end in .tar.zst")
    existing = [p for p in out.parent.glob(out.name + "*") if p.is_file()]
    if existing:
        raise UsageError(f"{existing[0]} already exists", hint="choose another -o name or remove the old bundle")
    private_key = None
    if key_path is not None:
        private_key = read_private_key_file(key_path, _key_passphrase(key_path))
    app = App()
    for_host, skipped = None, []
    if for_file is not None:
        for_host = _read_export(for_file)
        packs, skipped = _packs_for(app, for_host, packs)
    elif not packs:
        raise UsageError("name the packs to bundle", hint="for example `devops-cp data bundle trivy-db -o stick.tar.zst --key site.key`, or pass --for FILE")
    plans = [app.plan(p, mode="bundle") for p in packs]
    for plan in plans:
        for warning in plan.warnings:
            click.echo(f"warning: {warning}", err=True)
    for key in skipped:
        click.echo(f"warning: {key}: the host has it, but this machine's catalog has no such pack; not updated", err=True)
    with progress_renderer(progress) as listener:
        engine = app.engine(listener)
        try:
            result = build_bundle(
                engine,
                plans,
                out,
                private_key=private_key,
                expires_in=timedelta(seconds=parse_duration(expires)) if expires else None,
                split_size=parse_size(split_size) if split_size else None,
                confirm=confirm_on_terminal(yes),
                include_tool=tool_target,
                for_host=for_host,
            )
        finally:
            engine.close()
    m = result.manifest
    deliveries = {kind: sum(1 for f in m.files if f.delivery == kind) for kind in ("kept", "rebuilt", "whole")}
    if as_json:
        emit_json({"ok": True, "bundle_id": m.bundle_id, "signer_key_id": m.signer_key_id, "packs": [p.key for p in m.packs], "files": len(m.files), "payload_bytes": m.total_size, "carried_bytes": m.carried_size, "for_host": m.for_host.name if m.for_host else None, **deliveries, "outputs": [str(p) for p in result.paths], "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in result.parts], "notes": result.notes})
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"bundle {m.bundle_id}: {len(m.packs)} pack(s), {len(m.files)} file(s), {fmt_size(m.total_size)} of data")
    if m.for_host is not None:
        click.echo(f"  for host {m.for_host.name} only (export of {m.for_host.exported_at}): {_delivery_line(deliveries)}; carries {fmt_size(m.carried_size)} of {fmt_size(m.total_size)}")
    for path in result.paths:
        click.echo(f"  {path}")


def _read_export(path: Path):
    """The host's export, read with a size cap before it is parsed (untrusted input)."""
    from manifests.hoststate import MAX_EXPORT_BYTES, parse_export
    from manifests.model import FOR_HOST_VERSION

    with open(path, "rb") as f:
        data = f.read(MAX_EXPORT_BYTES + 1)
    state = parse_export(data, name=str(path))
    if FOR_HOST_VERSION not in state.reads_manifest_formats:
        raise UsageError(
            f"the host that wrote {path} runs devops-cp {state.tool_version}, which cannot read an update bundle (manifest version {FOR_HOST_VERSION})",
            hint="make a full bundle (without --for), with --include-tool to bring it a newer devops-cp",
        )
    return state


def _packs_for(app: App, state, packs: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """With PACK arguments, those; without, every pack the host has (its choices) and every pack it wants."""
    if packs:
        return list(packs), []
    chosen, skipped = [], []
    for pack in state.packs:
        if pack.id not in app.catalog.recipes:
            skipped.append(pack.key)
            continue
        chosen.append(_pack_arg(pack.id, pack.choices))
    chosen += [_pack_arg(w.pack, w.choices) for w in state.wants]
    if not chosen:
        raise UsageError("the host has no packs this catalog knows and wants none", hint="name the packs: `devops-cp data bundle --for FILE PACK...`")
    return list(dict.fromkeys(chosen)), skipped


def _pack_arg(pack_id: str, choices: dict[str, str]) -> str:
    return pack_id + (":" + ",".join(f"{k}={v}" for k, v in sorted(choices.items())) if choices else "")


def _delivery_line(counts: dict[str, int]) -> str:
    return f"{counts['kept']} file(s) kept, {counts['rebuilt']} rebuilt from chunks, {counts['whole']} whole"


def _key_passphrase(key_path: Path) -> bytes | None:
    return _passphrase(confirm=False) if b"ENCRYPTED" in key_path.read_bytes()[:64] else None


@click.command()
@click.argument("bundle_path", type=click.Path(path_type=Path))
@click.option("--trust", "trust_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Also trust this public key.")
@json_option
@reports_errors
def inspect(bundle_path: Path, trust_files, as_json: bool) -> None:
    """Show a bundle's manifest and signer (reads nothing else)."""
    from sideload.api import inspect_bundle

    doc = inspect_bundle(bundle_path, trust_files)
    if as_json:
        emit_json(doc)
        return
    state = f"signed by {doc['signer_key_id']} ({'trusted here' if doc['trusted'] else 'NOT trusted here'})" if doc["signed"] else "UNSIGNED"
    click.echo(f"bundle {doc['bundle_id']}: {state}")
    click.echo(f"  created {doc['created']}, expires {doc['expires'] or 'never'}, tool {doc['tool_version']}, {len(doc['parts'])} part(s)")
    if doc["for_host"] is not None:
        host = doc["for_host"]
        click.echo(f"  made for host {host['name']} only (export {host['export_id'][:12]} of {host['exported_at']}): carries {fmt_size(doc['carried_bytes'])}, a full bundle {fmt_size(doc['total_size'])}")
    for pack in doc["packs"]:
        unpacks = f", {pack['archives_to_unpack']} of them archive(s) to unpack" if pack["archives_to_unpack"] else ""
        how = f"; {_delivery_line(pack)}" if doc["for_host"] is not None else ""
        click.echo(f"  {pack['key']:<40} {pack['files']:>5} file(s) {fmt_size(pack['size']):>10}  fetched {pack['fetched_at']}{unpacks}{how}")


def _trust_options(trust_files, allow_unsigned=False, allow_expired=False):
    from sideload.api import TrustOptions

    return TrustOptions(tuple(trust_files), allow_unsigned, allow_expired)


@click.command()
@click.argument("bundle_path", type=click.Path(path_type=Path))
@click.option("--trust", "trust_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--allow-unsigned", is_flag=True)
@click.option("--allow-expired", is_flag=True)
@click.option("--progress", type=PROGRESS_MODES, default="auto", show_default=True)
@json_option
@reports_errors
def verify(bundle_path: Path, trust_files, allow_unsigned, allow_expired, progress, as_json: bool) -> None:
    """The full check, without installing anything."""
    from sideload.api import verify_bundle

    with progress_renderer(progress) as listener:
        manifest, signer = verify_bundle(bundle_path, _trust_options(trust_files, allow_unsigned, allow_expired), listener)
    deliveries = {kind: sum(1 for f in manifest.files if f.delivery == kind) for kind in ("kept", "rebuilt", "whole")}
    if as_json:
        for_host = {"carried_bytes": manifest.carried_size, "for_host": manifest.for_host.name, **deliveries} if manifest.for_host is not None else {}
        emit_json({"ok": True, "bundle_id": manifest.bundle_id, "verified_by": signer, "files": len(manifest.files), "bytes": manifest.total_size, **for_host})
    else:
        click.echo(f"OK: bundle {manifest.bundle_id}, {len(manifest.files)} file(s), {fmt_size(manifest.total_size)}, signed by {signer or '(unsigned)'}")
        if manifest.for_host is not None:
            click.echo(f"  made for host {manifest.for_host.name} only: {_delivery_line(deliveries)}; carries {fmt_size(manifest.carried_size)} of {fmt_size(manifest.total_size)} (the host's own files are checked when it sideloads)")


def run_sideload(app: App, bundle_path: Path, *, trust_files=(), packs=(), dry_run=False, allow_downgrade=False, allow_expired=False, allow_unsigned=False, force=False, overwrite=False, progress="auto", as_json=False, python: str | None = None, allow_commands=(), bundle_sha256: str | None = None) -> int:
    from sideload.api import SideloadRequest, TrustOptions, sideload_bundle

    trust = TrustOptions(tuple(trust_files), allow_unsigned, allow_expired, bundle_sha256)
    request = SideloadRequest(bundle_path, trust, tuple(packs), allow_downgrade, force, dry_run, app.hardware, allow_commands=tuple(allow_commands), catalog=app.catalog)
    with progress_renderer(progress) as listener:
        engine = app.engine(listener, python=python, overwrite=overwrite)
        outcomes = sideload_bundle(engine, request)
    if dry_run and not as_json:
        for o in outcomes:
            click.echo(f"{o.key}: {'; '.join(o.notes)}")
        return 0
    return print_outcomes(outcomes, as_json)


@click.command()
@click.argument("bundle_path", type=click.Path(path_type=Path))
@click.option("--trust", "trust_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pack", "packs", multiple=True, help="Install only this pack (id or key); repeatable.")
@click.option("--dry-run", is_flag=True, help="Check signature, policy, space and permissions; install nothing.")
@click.option("--allow-downgrade", is_flag=True)
@click.option("--allow-expired", is_flag=True)
@click.option("--allow-unsigned", is_flag=True)
@click.option("--allow-commands", "allow_commands", multiple=True, metavar="PACK", help="Run PACK's offline steps although this host's catalog does not define them (each is printed first); repeatable; not with --allow-unsigned.")
@click.option("--force", is_flag=True, help="Install options whose GPU requirement is not met here.")
@click.option("--overwrite", is_flag=True, help="Replace files already there that a pack does not own (the record says so).")
@click.option("--yes", "-y", is_flag=True, help="Accepted for symmetry with install; sideload asks nothing.")
@click.option("--python", "python", metavar="PATH", help="The Python interpreter that wheels (spaCy models) are pip-installed into [default: this one].")
@click.option("--progress", type=PROGRESS_MODES, default="auto", show_default=True)
@json_option
@reports_errors
def sideload(bundle_path, trust_files, packs, dry_run, allow_downgrade, allow_expired, allow_unsigned, allow_commands, force, overwrite, yes, python, progress, as_json) -> None:
    """Verify BUNDLE against the trusted keys, then install its packs."""
    sys.exit(run_sideload(App(), bundle_path, trust_files=trust_files, packs=packs, dry_run=dry_run, allow_downgrade=allow_downgrade, allow_expired=allow_expired, allow_unsigned=allow_unsigned, force=force, overwrite=overwrite, progress=progress, as_json=as_json, python=python, allow_commands=allow_commands))


@click.command("bootstrap-script")
@click.argument("bundle_path", type=click.Path(path_type=Path))
@click.option("--trust", "trust_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Also trust this public key.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write it here (mode 0755) instead of printing it.")
@reports_errors
def bootstrap_script(bundle_path: Path, trust_files, output: Path | None) -> None:
    """The sh script that installs this tool from BUNDLE's own wheels on a host without it, then sideloads BUNDLE.

    Bundles made with --include-tool have it beside them already (OUT.tar.zst.bootstrap.sh);
    run it there: `sh OUT.tar.zst.bootstrap.sh DIR SITE.pub`.
    """
    from bundler.bootstrap import render
    from bundler.build import bootstrap_info
    from sideload.api import read_verified_manifest

    manifest, parts = read_verified_manifest(bundle_path, _trust_options(trust_files, allow_expired=True))
    name = Path(parts[0]).name.rsplit(".", 1)[0] if parts else bundle_path.name
    text = render(bootstrap_info(manifest, name, list(parts)))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        output.chmod(0o755)


def register(main: click.Group, data: click.Group) -> None:
    for command in (keygen, trust, bundle, inspect, verify, sideload, bootstrap_script):
        data.add_command(command)
