"""What every command module shares: JSON output, typed errors as exit codes, the progress
option, the large-download question and the installed/failed lines."""

from __future__ import annotations

import functools
import json
import sys
from typing import TYPE_CHECKING

import click

from manifests.errors import DataPackError, Interrupted
from manifests.units import fmt_size

if TYPE_CHECKING:
    from manifests.plan import Plan

PROGRESS_MODES = click.Choice(["auto", "bar", "plain", "json", "none"])


def emit_json(document) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def reports_errors(func):
    """Typed errors become a clear message and their exit code; --json also gets a JSON error."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DataPackError as exc:
            if kwargs.get("as_json"):
                emit_json({"ok": False, "error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}})
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def confirm_on_terminal(yes: bool):
    from executor.engine import never_confirm

    if yes:
        return lambda plan, size, times: True
    if not sys.stdin.isatty():
        return never_confirm

    def ask(plan: Plan, size: int, times: dict) -> bool:
        estimate = ", ".join(f"{k}: {v}" for k, v in times.items())
        click.echo(f"{plan.pack_id} is {fmt_size(size)} ({estimate}).", err=True)
        return click.confirm("Download it?", default=False, err=True)

    return ask


def record_json(record) -> dict:
    data = record.to_json()
    data["size_bytes"] = record.size
    return data


def print_outcomes(outcomes, as_json: bool) -> int:
    exit_code = 0
    results = []
    stopped = [o.key for o in outcomes if isinstance(o.error, Interrupted)]
    for outcome in outcomes:
        if isinstance(outcome.error, Interrupted):
            exit_code = outcome.error.exit_code  # 130 wins: the run was stopped
            results.append({"pack": outcome.key, "ok": False, "error": outcome.error.message, "hint": outcome.error.hint, "exit_code": outcome.error.exit_code})
        elif outcome.error is not None:
            exit_code = exit_code or outcome.error.exit_code
            results.append({"pack": outcome.key, "ok": False, "error": outcome.error.message, "hint": outcome.error.hint, "exit_code": outcome.error.exit_code})
            click.echo(f"error: {outcome.key}: {outcome.error}", err=True)
        else:
            record = outcome.record
            already = getattr(outcome, "already_installed", False)
            asked = getattr(outcome, "upstream", None)
            results.append({"pack": record.key, "ok": True, "already_installed": already, "upstream": asked, "record": record_json(record), "warnings": outcome.notes})
            if as_json:
                continue
            if already:
                upstream_said = " (upstream unchanged)" if asked == "unchanged" else ""
                click.echo(f"already installed {record.key}{upstream_said}: {len(record.files)} file(s), {fmt_size(record.size)} in {record.data_dir} (--reinstall downloads it again)")
            else:
                click.echo(f"installed {record.key}: {len(record.files)} file(s), {fmt_size(record.size)} in {record.data_dir}")
    if stopped:
        click.echo(f"interrupted: {', '.join(stopped)} not installed; a partial download is kept, run the same command again to resume", err=True)
    if as_json:
        emit_json({"ok": exit_code == 0, "results": results})
    return exit_code
