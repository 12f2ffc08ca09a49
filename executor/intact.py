"""Is an installed pack still what its record says? `install` then moves no byte (pip's "already satisfied").

A file matches when its size is the record's and it was not modified after the install (its
modification time is not later than the record's installed_at); `verify=True` re-hashes every
file instead. A recipe that now fetches from other URLs is a new version: not intact. Whether a
moving target (a schedule other than manual) has an update is asked of its upstream
(executor/upstream.py); `schedule_due` is the answer when there is nothing to ask with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from executor.config import rewrite_url
from executor.store import InstallRecord, Store, parse_iso
from manifests.plan import Plan
from manifests.steps import Download

MTIME_SLACK = 2.0  # installed_at has whole seconds; the files were written just before it


def why_outdated(store: Store, plan: Plan, record: InstallRecord) -> str | None:
    """Why the recipe would install another version now; None when it would not. (Whether a
    moving target's upstream has moved on is asked of the server: executor/upstream.py.)"""
    recorded = record.extra.get(PLAN_KEY)
    if recorded is not None and recorded != plan_fingerprint(plan):
        return "its recipe has changed since"
    urls = [rewrite_url(s.url, store.config.mirrors) for s in plan.steps if isinstance(s, Download)]
    if recorded is None and urls and len(urls) == len(plan.steps) and record.source != ", ".join(urls):
        return "its recipe fetches a different version now"
    return None


def schedule_due(store: Store, plan: Plan, record: InstallRecord) -> str | None:
    """A moving target whose upstream cannot be asked: due when older than its schedule."""
    if plan.recipe.schedule_seconds is not None and store.freshness(record, plan.recipe.schedule_seconds)["stale"]:
        return f"an update: fetched {record.fetched_at}, older than its {plan.recipe.update_schedule} schedule"
    return None


PLAN_KEY = "plan_sha256"  # in the install record's `extra`: which steps installed it


def plan_fingerprint(plan: Plan) -> str:
    """The resolved steps (URLs, checksums, destinations): a recipe that pins a new version differs."""
    steps = [{"type": s.type, **dataclasses.asdict(s)} for s in plan.steps]
    return hashlib.sha256(json.dumps(steps, sort_keys=True, default=str).encode()).hexdigest()


def changed_file(record: InstallRecord, *, verify: bool = False) -> str | None:
    """The first file that no longer matches its record, and how; None when all match."""
    return next(changed_files(record, verify=verify), None)


def changed_files(record: InstallRecord, *, verify: bool = False):
    """Each file that no longer matches its record, and how (a generator: the first answer is cheap)."""
    data_dir = Path(record.data_dir)
    installed = parse_iso(record.installed_at).timestamp() + MTIME_SLACK
    for f in record.files:
        path = data_dir / f.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            yield f"{f.path} is missing"
            continue
        if st.st_size != f.size:
            yield f"{f.path} has changed size ({st.st_size} bytes, {f.size} recorded)"
        elif verify:
            from executor.transfer import hash_file  # only --verify reads the files

            if hash_file(path).sha256 != f.sha256:
                yield f"{f.path} does not match its recorded sha256"
        elif st.st_mtime > installed:
            yield f"{f.path} was modified after the install"
