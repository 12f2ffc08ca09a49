"""`devops-cp data ...`: parsing and rendering only; the work is in executor/, bundler/, sideload/.

Every command starts by importing this file (and bundle_cli, web_cli, fleet_cli, demo): modules only some
commands need (the engine and httpx, sideload, signing, rich, the web app) are imported inside
those commands, so `--help`, `list` or `status` do not pay their start-up time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import assert_never

import click

from devops_cp import bundle_cli, demo, fleet_cli, reports, web_cli
from devops_cp.app import App
from devops_cp.cli_common import confirm_on_terminal, emit_json, json_option, print_outcomes, reports_errors
from devops_cp.params import progress_options
from manifests.errors import Interrupted, NetworkError, UsageError
from manifests.units import fmt_size


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """click.version_option's output; the version is read only when asked for (start-up time)."""
    if not value or ctx.resilient_parsing:
        return
    from manifests.version import VERSION

    click.echo(f"devops-cp, version {VERSION}", color=ctx.color)
    ctx.exit()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def _reuse_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks up to 4 MiB for reuse instead of mapping each read
    fresh: every page taken again is a fault (the one process-wide tweak kept: bench/RESULTS.md,
    "House round"). Nothing where mallopt is missing (not glibc)."""
    import ctypes

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        mallopt(_M_TRIM_THRESHOLD, 64 << 20)


class _Cli(click.Group):
    """The `devops-cp` command: what a run of it (console script, `python -m devops_cp`) sets first."""

    def __call__(self, *args, **kwargs):
        _reuse_freed_memory()  # this process is the command's: a library user's allocator is left alone
        from executor.interrupt import stop_on_ctrl_c

        try:
            with stop_on_ctrl_c():  # Ctrl-C: exit 130 within a second, what had begun its swap finished
                return super().__call__(*args, **kwargs)
        except Interrupted as exc:  # a command without reports_errors (demo)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version, help="Show the version and exit.")
def main() -> None:
    """devops-cp: tools for a DevOps control panel."""


@main.group()
def data() -> None:
    """Data packs: vulnerability DBs, ML models, GeoIP, fonts... online, bundled, or sideloaded."""


# --- list / info -----------------------------------------------------------------------


def _catalog_errors(app: App) -> None:
    for error in app.catalog.errors:
        click.echo(f"warning: skipped a bad recipe: {error}", err=True)


@data.command("list")
@json_option
@reports_errors
def list_packs(as_json: bool) -> None:
    """List the packs in the catalog."""
    app = App()
    _catalog_errors(app)
    installed = {r.pack_id for r in app.store.records()}
    rows = [
        {
            "id": r.id,
            "label": r.label,
            "category": r.category,
            "data_type": r.data_type,
            "size_estimate_mb": r.size_estimate_mb,
            "update_schedule": r.update_schedule,
            "choices": {c.id: [o.value for o in c.options] for c in r.choices},
            "installed": r.id in installed,
        }
        for r in sorted(app.catalog.recipes.values(), key=lambda r: r.id)
    ]
    if as_json:
        emit_json({"packs": rows, "errors": [str(e) for e in app.catalog.errors]})
        return
    for row in rows:
        size = f"~{row['size_estimate_mb']:g} MB" if row["size_estimate_mb"] else ""
        mark = "*" if row["installed"] else " "
        choices = "; ".join(f"{k}: {'/'.join(v)}" for k, v in row["choices"].items())
        click.echo(f"{mark} {row['id']:<22} {row['label']:<34} {row['data_type']:<17} {size:>10}  {choices}")


def _describe_step(step) -> str:
    from manifests.steps import Download, LocalCopy, OciArtifact, ToolCommand

    match step:
        case Download():
            check = step.checksum or (f"checksum from {step.checksum_url}" if step.checksum_url else "no published checksum")
            extract = f", extract {step.extract} into {step.dest}/" if step.extract else f" -> {step.dest}"
            return f"download {step.url}{extract} ({check})"
        case LocalCopy():
            return f"copy {step.source or '--source FILE'} -> {step.dest}" + (f" (extract {step.extract})" if step.extract else "")
        case OciArtifact():
            refs = ", ".join((step.ref, *step.fallback_refs))
            return f"pull OCI artifact {refs} (layer {step.layer_media_type}) -> {step.dest}/"
        case ToolCommand():
            return "run " + " ".join(step.command) + (f" (captures {', '.join(step.produces)})" if step.produces else "")
        case _:
            assert_never(step)


@data.command()
@click.argument("pack")
@json_option
@reports_errors
def info(pack: str, as_json: bool) -> None:
    """Show a pack: choices, where it installs, how it is fetched and how it installs offline."""
    app = App()
    pack_id = pack.partition(":")[0]
    if pack_id not in app.catalog.recipes and app.store.records_for_pack(pack_id):
        return _info_from_bundle(app, pack_id, as_json)  # sideloaded: its bundle's manifest describes it
    recipe = app.catalog.get(pack_id)
    hardware = app.hardware
    from manifests.plan import resolve

    variants = []
    options = recipe.choices[0].options if recipe.choices else [None]
    for option in options:
        choice = {recipe.choices[0].id: option.value} if option else {}
        online = resolve(recipe, choice, hardware, mode="bundle")  # bundle mode never refuses for hardware
        direct = resolve(recipe, choice, hardware, mode="install", force=True)  # what `install --force` runs
        availability = reports.option_availability(option, hardware) if option else {"available": True, "why_not": None, "note": None}
        variants.append(
            {
                "option": option.value if option else None,
                "label": option.label if option else recipe.label,
                "description": option.description if option else "",
                "available_here": availability["available"],
                "why_not": availability["why_not"],
                "vram_note": availability["note"],
                "min_vram_mb": option.min_vram_mb if option else None,
                "direct_install": [_describe_step(s) for s in direct.steps],
                "bundle_fetch": [_describe_step(s) for s in online.steps],
                "offline_install": ["place the bundled files, verified by sha256"] + [_describe_step(s) for s in online.offline_steps],
            }
        )
    document = {
        **reports.recipe_summary(app, recipe),
        "requires": {"tools": list(recipe.requires.tools), "packages_pip": list(recipe.requires.packages_pip), "network": recipe.requires.network},
        "choice": recipe.choices[0].id if recipe.choices else None,
        "variants": variants,
        "gpu": [g.name for g in hardware.gpus],
        "recipe_file": recipe.source,
    }
    if as_json:
        emit_json(document)
        return
    click.echo(f"{recipe.label} ({recipe.id})")
    if recipe.description:
        click.echo(f"  {recipe.description}")
    click.echo(f"  data type: {recipe.data_type} -> {document['data_dir']}")
    click.echo(f"  updates: {recipe.update_schedule}; size: ~{recipe.size_estimate_mb or '?'} MB")
    for v in variants:
        head = f"  [{document['choice']}={v['option']}] {v['label']}" if v["option"] else "  install"
        if not v["available_here"]:
            head += f"  (not here: {v['why_not']})"
        click.echo(head)
        for title, key in (("online", "direct_install"), ("bundle fetches", "bundle_fetch"), ("offline", "offline_install")):
            for line in v[key]:
                click.echo(f"      {title}: {line}")


def _info_from_bundle(app: App, pack_id: str, as_json: bool) -> None:
    """A pack this host's catalog does not define, described by the signed manifests it came in."""
    document = reports.sideloaded_info(app, pack_id)
    if as_json:
        emit_json(document)
        return
    click.echo(f"{document['label']} ({pack_id}): installed from a bundle; this host's catalog has no recipe for it")
    click.echo(f"  data type: {document['data_type']} -> {document['data_dir']}")
    for v in document["installed"]:
        click.echo(f"  {v['key']}: {v['files']} file(s), {v['size_human']}, fetched {v['fetched_at']}, updates {v['update_schedule']}")
        click.echo(f"      bundle {v['bundle_id'] or '?'} (created {v['bundle_created'] or '?'}), signed by {v['signer_key_id'] or '(unsigned)'}; from {v['upstream'] or '?'}")
        for line in v["offline_install"]:
            click.echo(f"      offline: {line}")


# --- install -----------------------------------------------------------------------------


def _read_checksum(checksum: str | None, checksum_file: Path | None, source: Path | None) -> str | None:
    if checksum:
        algo, _, digest = checksum.partition(":")
        if algo != "sha256" or len(digest) != 64:
            raise UsageError(f"invalid checksum {checksum!r}", hint="write sha256:<64 hex digits>")
        return digest.lower()
    if checksum_file:
        from executor.http import parse_sha256sum

        try:
            return parse_sha256sum(checksum_file.read_text(), source.name if source else None)
        except NetworkError as exc:  # the parser's "no entry" error, in a local file
            raise UsageError(f"{checksum_file}: {exc.message}") from exc
    return None


def _is_bundle(source: Path) -> bool:
    from sideload.reader import looks_like_bundle  # only with --source: sideload code costs start-up time

    return looks_like_bundle(source)


def _site_options(func):
    """install --from and check-updates --from: a site's mirror (devops_cp/fleet_cli.py)."""
    func = click.option("--plain-http", is_flag=True, help="Speak plain HTTP to a registry that is not on loopback ([site] plain_http).")(func)
    func = click.option("--trust", "trust_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="With --from or --source BUNDLE: also trust this public key (SIGNER.pub); repeatable.")(func)
    return click.option("--from", "from_site", metavar="SOURCE", help="The site's mirror: oci://HOST[:PORT]/REPO or the http(s) URL of a served tree ([site] source).")(func)


@data.command()
@click.argument("packs", nargs=-1)
@click.option("-c", "--choice", "choices", multiple=True, metavar="KEY=VALUE", help="A choice, e.g. -c model_size=base (repeatable).")
@click.option("--yes", "-y", is_flag=True, help="Answer yes to the large-download question.")
@click.option("--force", is_flag=True, help="Install an option whose hardware requirement is not met.")
@click.option("--reinstall", is_flag=True, help="Download the pack again even if it is installed and intact.")
@click.option("--verify", is_flag=True, help="Tell an intact install by re-hashing its files (default: size and modification time).")
@click.option("--overwrite", is_flag=True, help="Replace files already there that the pack does not own (the record says so).")
@click.option("--source", type=click.Path(path_type=Path), help="Install from this local file (or bundle) instead of the network.")
@click.option("--checksum", help="sha256:HEX that --source must match.")
@click.option("--checksum-file", type=click.Path(exists=True, path_type=Path), help="A sha256sum-format file for --source.")
@_site_options
@click.option("--at", "version", metavar="VERSION", help="With --from: this version (its tag's time, e.g. 20261206T103815Z) instead of the newest.")
@click.option("--allow-downgrade", is_flag=True, help="With --from: install data older than what is installed.")
@click.option("--allow-expired", is_flag=True, help="With --from: accept a signed manifest past its expiry.")
@click.option("--allow-commands", "allow_commands", multiple=True, metavar="PACK", help="With a bundle or --from: run PACK's offline steps although this host's catalog does not define them (each is printed first); repeatable.")
@click.option("--python", "python", metavar="PATH", help="The Python interpreter that wheels (spaCy models) are pip-installed into [default: this one].")
@progress_options
@json_option
@reports_errors
def install(packs, choices, yes, force, reinstall, verify, overwrite, source, checksum, checksum_file, from_site, trust_files, plain_http, version, allow_downgrade, allow_expired, allow_commands, python, progress, quiet, as_json) -> None:
    """Download PACK(s) into their data directories (PACK or PACK:KEY=VALUE,...).

    With --from SITE (or [site] source in the config) the packs come from the site's mirror,
    verified against this host's trusted keys; no PACK: update the installed packs from it."""
    from devops_cp.render import progress_renderer
    from executor.engine import LocalSource

    app = App()
    if source is None:
        site = fleet_cli.site_of(app, from_site)
        if site is not None:
            if choices:
                raise UsageError("-c does not combine with --from", hint="write the choices into the pack: PACK:KEY=VALUE")
            sys.exit(fleet_cli.run_install_from(app, site, packs, trust_files=trust_files, plain_http=plain_http, version=version, allow_downgrade=allow_downgrade, allow_expired=allow_expired, allow_commands=allow_commands, force=force, python=python, progress=progress, quiet=quiet, as_json=as_json))
    if not packs:
        raise UsageError("name at least one pack", hint="`devops-cp data list` shows them; `install --from SITE` alone updates the installed packs from a site")
    if source is not None and _is_bundle(source):
        from devops_cp.bundle_cli import run_sideload  # a bundle: verify it, then sideload these packs

        expected = _read_checksum(checksum, checksum_file, source)  # checked against the bundle file as it is read
        sys.exit(run_sideload(app, source, trust_files=trust_files, packs=[p.partition(":")[0] for p in packs], force=force, overwrite=overwrite, progress=progress, quiet=quiet, as_json=as_json, python=python, allow_commands=allow_commands, bundle_sha256=expected))
    if allow_commands:
        raise UsageError("--allow-commands is for a bundle's offline steps", hint="pass the bundle with --source, or leave --allow-commands out")
    if (checksum or checksum_file) and source is None:
        raise UsageError("--checksum and --checksum-file go with --source FILE", hint="a download from the network is checked against its recipe's checksum")
    if trust_files:
        raise UsageError("--trust goes with --source BUNDLE or --from SITE", hint="a download from the network is checked by its checksum, not a signature")
    plans = [app.plan(p, choices, force=force) for p in packs]
    if source is not None and len(plans) != 1:
        raise UsageError("--source installs one pack", hint="name exactly one pack with --source")
    local = LocalSource(source, _read_checksum(checksum, checksum_file, source)) if source else None
    with progress_renderer(progress, quiet=quiet) as listener:
        engine = app.engine(listener, python=python, overwrite=overwrite)
        try:
            outcomes = engine.install(plans, confirm=confirm_on_terminal(yes), source=local, reinstall=reinstall, verify=verify)
        finally:
            engine.close()
    sys.exit(print_outcomes(outcomes, as_json))


# --- status / check-updates / remove --------------------------------------------------------


@data.command()
@click.option("--export", "export_to", type=click.Path(dir_okay=False, path_type=Path), help="Write what this host has (with a chunk index of each large file) for `bundle --for FILE`.")
@click.option("--want", "wants", multiple=True, metavar="PACK[:K=V,...]", help="With --export: a pack this host wants added; repeatable.")
@progress_options
@json_option
@reports_errors
def status(export_to: Path | None, wants: tuple[str, ...], progress: str, quiet: bool, as_json: bool) -> None:
    """Installed packs and disk usage per data directory and per pack."""
    if export_to is not None or wants:
        sys.exit(_export_status(export_to, wants, progress, quiet, as_json))
    document = reports.status_document(App())
    if as_json:
        emit_json(document)
        return
    if not document["packs"]:
        click.echo("no packs installed")
    for p in document["packs"]:
        click.echo(f"{p['key']:<40} {p['size_human']:>10}  {p['files']} file(s)  fetched {p['fetched_at']}  {p['data_dir']}")
    for u in document["data_dirs"]:
        click.echo(f"  {u['path']}: {u['size_human']}")


def _export_status(export_to: Path | None, wants: tuple[str, ...], progress: str, quiet: bool, as_json: bool) -> int:
    from devops_cp.render import progress_renderer
    from executor import durable
    from executor.hostexport import export_state
    from manifests.hoststate import Want, to_json
    from manifests.names import IDENTIFIER_RULE, is_identifier
    from manifests.plan import parse_choice_args

    if export_to is None:
        raise UsageError("--want goes with --export FILE")
    app = App()
    parsed = [Want(*parse_choice_args(w)) for w in wants]
    for want in parsed:
        if not is_identifier(want.pack):
            raise UsageError(f"--want {want.pack!r}: a pack id is {IDENTIFIER_RULE}", hint="for example --want whisper-model:model_size=base")
    with progress_renderer(progress, quiet=quiet) as listener:
        state = export_state(app.store, app.hardware, parsed, listener)
    data = to_json(state)
    durable.write_atomic(export_to, data)
    summary = {"ok": True, "export": str(export_to), "bytes": len(data), "packs": [p.key for p in state.packs], "describes_bytes": state.data_size, "wants": list(wants)}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"wrote {export_to}: {len(state.packs)} pack(s) ({fmt_size(state.data_size)} of data) in {fmt_size(len(data))}; carry it to the online machine for `devops-cp data bundle --for {export_to.name}`")
    return 0


@data.command("check-updates")
@_site_options
@click.option("--all", "all_packs", is_flag=True, help="Also list catalog packs that are not installed on a host that installs from bundles.")
@json_option
@reports_errors
def check_updates(from_site, trust_files, plain_http, all_packs: bool, as_json: bool) -> None:
    """Which packs are stale, never downloaded, or due when; with --from, which have a newer signed version at the site."""
    app = App()
    if from_site:
        fleet_cli.check_updates_from(app, fleet_cli.site_of(app, from_site), trust_files, plain_http, as_json)
        return
    document = reports.check_updates_document(app, all_packs=all_packs)
    if as_json:
        emit_json(document)
        return
    for row in document["packs"]:
        if row["reason"] == "never downloaded":
            state = "never downloaded"
        elif row.get("upstream") in ("unchanged", "changed"):
            state = f"{'UPDATE AVAILABLE: ' if row['stale'] else 'up to date: '}{row['reason']} (fetched {row['fetched_at']})"
        elif row["stale"]:
            state = f"STALE (fetched {row['fetched_at']})"
        elif "next_update_seconds" in row:
            state = f"fresh, next update in {row['next_update_seconds'] // 3600}h"
        else:
            state = f"manual (fetched {row['fetched_at']})"
        if row.get("bundle_created"):
            state += f", from a bundle of {row['bundle_created']}"
        click.echo(f"{row['key']:<40} {row['schedule']:<8} {state}")
    if document["not_installed_not_listed"]:
        click.echo(f"({document['not_installed_not_listed']} catalog pack(s) not installed here are not listed: this host installs from bundles; --all lists them)")
    for warning in document["warnings"]:
        click.echo(f"warning: {warning}", err=True)


@data.command()
@click.argument("pack")
@json_option
@reports_errors
def remove(pack: str, as_json: bool) -> None:
    """Delete only this pack's files (all its installed variants, or PACK:KEY=VALUE for one)."""
    app = App()
    records = app.records_matching(pack)
    if not records:
        raise UsageError(f"{pack} is not installed", hint="`devops-cp data status` lists what is")
    engine = app.engine()
    removed = {record.key: engine.remove(record) for record in records}  # (what it said, files it kept and why)
    if as_json:
        emit_json({"ok": True, "removed": [r.key for r in records], "notes": {k: v[0] for k, v in removed.items()}, "kept": [k for r in records for k in removed[r.key][1]]})
    else:
        for r in records:
            click.echo(f"removed {r.key} ({fmt_size(r.size)})")
            for note in removed[r.key][0]:
                click.echo(f"  {note}")
            for why in removed[r.key][1]:
                click.echo(f"  kept {why}")


# --- the commands in the modules beside this one -------------------------------------------

data.add_command(demo.demo)
bundle_cli.register(main, data)
web_cli.register(main, data)
fleet_cli.register(main, data)
