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


def check_updates_document(app: App) -> dict:
    """Every catalog pack, plus installed packs this host has no recipe for (a sideloaded site
    pack): their record carries the update schedule."""
    rows, warnings = [], []
    records = app.store.records()
    for recipe in sorted(app.catalog.recipes.values(), key=lambda r: r.id):
        installed = [r for r in records if r.pack_id == recipe.id]
        for record in installed or [None]:
            fresh = app.store.freshness(record, recipe.schedule_seconds)
            rows.append({"pack": recipe.id, "key": record.key if record else recipe.id, "schedule": recipe.update_schedule, **fresh})
        if not installed and recipe.tool_hint:
            warnings.append(recipe.tool_hint)
    for record in records:
        if record.pack_id not in app.catalog.recipes:
            fresh = app.store.freshness(record, SCHEDULES.get(record.update_schedule))
            rows.append({"pack": record.pack_id, "key": record.key, "schedule": record.update_schedule, **fresh})
    return {"packs": rows, "warnings": warnings}


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
