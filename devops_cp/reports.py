"""The JSON documents that `status`, `check-updates` and the web routes share."""

from __future__ import annotations

from devops_cp.app import App
from manifests.hardware import Hardware
from manifests.recipe import SCHEDULES, Option, Recipe
from manifests.units import fmt_size


def status_document(app: App) -> dict:
    records = app.store.records()  # once: the packs and the usage per data dir both come from them
    return {
        "packs": [
            {
                "key": r.key,
                "pack": r.pack_id,
                "label": r.label,
                "choices": r.choices,
                "data_type": r.data_type,
                "data_dir": r.data_dir,
                "files": len(r.files),
                "size_bytes": r.size,
                "size_human": fmt_size(r.size),
                "installed_at": r.installed_at,
                "fetched_at": r.fetched_at,
                "source": r.source,
                "checksum_verified": r.checksum_verified,
            }
            for r in records
        ],
        "data_dirs": [{**u, "size_human": fmt_size(u["size_bytes"])} for u in app.store.usage(records)],
    }


def check_updates_document(app: App, *, all_packs: bool = False) -> dict:
    """Every catalog pack, plus installed packs this host has no recipe for (a sideloaded site
    pack): their record carries the update schedule.

    A host whose every pack came from a bundle (air-gapped) lists only what it has, each against
    when its data was fetched and its bundle's date: the catalog's other packs cannot be
    downloaded there, and "never downloaded" for each would only bury what matters. `all_packs`
    lists them anyway.
    """
    rows, warnings = [], []
    records = app.store.records()
    from_bundles = bool(records) and all(r.source.startswith("bundle:") for r in records)
    skipped = 0
    for recipe in sorted(app.catalog.recipes.values(), key=lambda r: r.id):
        installed = [r for r in records if r.pack_id == recipe.id]
        if not installed and from_bundles and not all_packs:
            skipped += 1
            continue
        for record in installed or [None]:
            fresh = app.store.freshness(record, recipe.schedule_seconds)
            if record is not None and recipe.schedule_seconds is not None:
                fresh = _asked_upstream(app, recipe, record, fresh, warnings)
            rows.append({"pack": recipe.id, "key": record.key if record else recipe.id, "schedule": recipe.update_schedule, **_bundle_date(record), **fresh})
        if not installed and recipe.tool_hint:
            warnings.append(recipe.tool_hint)
    for record in records:
        if record.pack_id not in app.catalog.recipes:
            fresh = app.store.freshness(record, SCHEDULES.get(record.update_schedule))
            rows.append({"pack": record.pack_id, "key": record.key, "schedule": record.update_schedule, **_bundle_date(record), **fresh})
    return {"packs": rows, "warnings": warnings, "not_installed_not_listed": skipped}


def _asked_upstream(app: App, recipe: Recipe, record, fresh: dict, warnings: list[str]) -> dict:
    """The schedule's verdict replaced by upstream's answer where upstream can be asked."""
    from executor import upstream
    from manifests.errors import DataPackError
    from manifests.plan import resolve

    try:
        plan = resolve(recipe, record.choices, app.hardware, mode="install", force=True)
    except DataPackError:  # the recipe no longer offers these choices: the schedule judges it
        return fresh
    engine = app.engine()
    try:
        answer = engine.ask_upstream(plan, record)
    finally:
        engine.close()
    if answer.state == upstream.UNCHANGED:
        return {**fresh, "stale": False, "reason": "upstream unchanged", "upstream": answer.state}
    if answer.state == upstream.CHANGED:
        return {**fresh, "stale": True, "reason": f"upstream has changed ({answer.detail})", "upstream": answer.state}
    if answer.state == upstream.UNREACHABLE:
        warnings.append(f"{record.key}: upstream could not be checked ({answer.detail}): judged by its {recipe.update_schedule} schedule")
    return {**fresh, "upstream": answer.state}


def _bundle_date(record) -> dict:
    return {"bundle_created": record.bundle_created} if record is not None and record.bundle_created else {}


def recipe_summary(app: App, recipe: Recipe) -> dict:
    return {
        "id": recipe.id,
        "label": recipe.label,
        "description": recipe.description,
        "category": recipe.category,
        "data_type": recipe.data_type,
        "data_dir": str(app.store.data_dir(recipe.data_type)),
        "update_schedule": recipe.update_schedule,
        "size_estimate_mb": recipe.size_estimate_mb,
        "size_warning_mb": recipe.size_warning_mb,
    }


def option_availability(option: Option, hardware: Hardware) -> dict:
    """Whether an option can be installed on this host, and why not (as `install` would refuse)."""
    from manifests.hardware import gpu_fit

    fit = gpu_fit(hardware, option.gpu_vendor, option.min_vram_mb)
    return {
        "available": fit.missing_gpu is None,
        "why_not": fit.missing_gpu,
        "note": fit.low_vram,
    }


def sideloaded_info(app: App, pack_id: str) -> dict:
    """`info` for a pack installed from bundles: its records and the kept, signed manifests."""
    from manifests.bundle import parse_manifest

    records = app.store.records_for_pack(pack_id)
    installed = []
    for record in records:
        raw = app.store.read_bundle_manifest(record)
        manifest = parse_manifest(raw) if raw is not None else None
        entry = next((p for p in manifest.packs if p.key == record.key), None) if manifest else None
        steps = list(entry.offline_steps) if entry else []
        installed.append(
            {
                "key": record.key,
                "choices": record.choices,
                "files": len(record.files),
                "size_bytes": record.size,
                "size_human": fmt_size(record.size),
                "fetched_at": record.fetched_at,
                "installed_at": record.installed_at,
                "update_schedule": record.update_schedule,
                "bundle_id": manifest.bundle_id if manifest else None,
                "bundle_created": record.bundle_created,
                "signer_key_id": manifest.signer_key_id if manifest else None,
                "upstream": entry.source if entry else None,
                "tool_hint": entry.tool_hint if entry else "",
                "offline_install": ["place the bundled files, verified by sha256"] + ["run " + " ".join(s.command) for s in steps],
            }
        )
    first = records[0]
    return {"id": pack_id, "label": first.label, "data_type": first.data_type, "data_dir": first.data_dir, "recipe_file": None, "from_bundle": True, "installed": installed}
