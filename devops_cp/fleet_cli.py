"""mirror, install --from, check-updates --from: a site's registry or web server between the stick
and its hosts. Parsing and rendering only: the work is in fleet/."""

from __future__ import annotations

from pathlib import Path

import click

from devops_cp.app import App
from devops_cp.cli_common import (
    emit_json,
    json_option,
    print_outcomes,
    reports_errors,
)
from devops_cp.params import progress_options
from devops_cp.render import progress_renderer
from manifests.errors import UsageError
from manifests.units import fmt_size


@click.command()
@click.argument("bundle_path", type=click.Path(path_type=Path))
@click.option("--to", "target", required=True, metavar="oci://HOST[:PORT]/REPO|DIR", help="The site's registry repository, or a directory to hold an OCI image layout for a web server.")
@click.option("--trust", "trust_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Also trust this public key.")
@click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a registry that is not on loopback.")
@click.option("--allow-expired", is_flag=True, help="Accept a bundle past its --expires date.")
@progress_options
@json_option
@reports_errors
def mirror(bundle_path: Path, target: str, trust_files, plain_http: bool, allow_expired: bool, progress: str, quiet: bool, as_json: bool) -> None:
    """Verify BUNDLE, then publish each pack as an OCI artifact at the site (nothing, if it fails)."""
    from fleet.mirror import mirror_bundle, open_target
    from fleet.site import Endpoint, parse_address, site_credentials
    from sideload.api import TrustOptions

    app = App()
    address = parse_address(target, allow_dir=True)
    with progress_renderer(progress, quiet=quiet) as listener:
        endpoint = None
        engine = app.engine(listener)
        try:
            if address.kind == "web":
                raise UsageError(f"mirror cannot publish to {target}: a web server's tree is written as a directory", hint="mirror --to DIR, then serve DIR (nginx, python -m http.server)")
            if address.kind == "registry":
                endpoint = Endpoint(engine.client(), engine.settings, address, plain_http=plain_http, credentials=site_credentials(address.host, app.config), actions="pull,push")
            report = mirror_bundle(bundle_path, open_target(address, endpoint), TrustOptions(tuple(trust_files), False, allow_expired), listener)
        finally:
            engine.close()
    if as_json:
        emit_json({"ok": True, "bundle_id": report.bundle_id, "created": report.created, "verified_by": report.signer, "uploaded_bytes": report.uploaded_bytes, "reused_blobs": report.reused_blobs, "packs": [vars(p) for p in report.packs]})
        return
    click.echo(f"bundle {report.bundle_id} (created {report.created}, signed by {report.signer}) published at {target}: {fmt_size(report.uploaded_bytes)} sent, {report.reused_blobs} blob(s) already there")
    for p in report.packs:
        click.echo(f"  {p.key:<40} {', '.join(p.tags)}  {p.layers} layer(s){'  (' + p.note + ')' if p.note else ''}")


def site_of(app: App, source: str | None) -> tuple[str, bool] | None:
    """--from, else the config's [site] source; None: neither."""
    if source:
        return source, app.config.site_plain_http
    if app.config.site_source:
        return app.config.site_source, app.config.site_plain_http
    return None


def run_install_from(app: App, site: tuple[str, bool], packs, *, trust_files=(), plain_http=False, version=None, allow_downgrade=False, allow_expired=False, allow_commands=(), force=False, python=None, progress="auto", quiet=False, as_json=False) -> int:
    from fleet.install import FromRequest, install_from
    from sideload.api import TrustOptions

    request = FromRequest(
        site[0], tuple(packs), TrustOptions(tuple(trust_files), False, allow_expired), plain_http or site[1], version, allow_downgrade, tuple(allow_commands), force, app.hardware, app.catalog
    )
    with progress_renderer(progress, quiet=quiet) as listener:
        engine = app.engine(listener, python=python)
        try:
            outcomes = install_from(engine, request)
        finally:
            engine.close()
    skipped = [o for o in outcomes if o.record is None and o.error is None]
    for o in skipped:
        if not as_json:
            click.echo(f"{o.key}: {'; '.join(o.notes)}")
    done = [o for o in outcomes if o not in skipped]
    if as_json:
        code = 0
        for o in done:
            code = code or (o.error.exit_code if o.error else 0)
        emit_json({
            "ok": code == 0,
            "results": [{"pack": o.key, "ok": o.error is None, "error": o.error.message if o.error else None, "exit_code": o.error.exit_code if o.error else 0, "files": len(o.record.files) if o.record else 0, "warnings": o.notes} for o in done],
            "skipped": [{"pack": o.key, "why": "; ".join(o.notes)} for o in skipped],
        })  # fmt: skip
        return code
    return print_outcomes(done, False)


def check_updates_from(app: App, site: tuple[str, bool], trust_files, plain_http: bool, as_json: bool) -> None:
    from fleet.install import check_updates_from as check
    from sideload.api import TrustOptions

    engine = app.engine()
    try:
        doc = check(engine, site[0], plain_http or site[1], TrustOptions(tuple(trust_files)))
    finally:
        engine.close()
    if as_json:
        emit_json(doc)
        return
    click.echo(f"{doc['site']}: newest signed manifest {doc['newest_signed_manifest'] or '(none)'}")
    for row in doc["packs"]:
        state = f"UPDATE: fetched {row['site_fetched_at']} at the site" if row["update"] else "up to date"
        click.echo(f"{row['key']:<40} installed fetched {row['installed_fetched_at']}  {state}")
    for problem in doc["problems"]:
        click.echo(f"warning: {problem['pack']}: {problem['error']}", err=True)


def register(main: click.Group, data: click.Group) -> None:
    data.add_command(mirror)
