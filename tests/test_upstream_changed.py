"""Moving targets: whether upstream has changed is asked of the server, not guessed from the schedule.

A real server on 127.0.0.1 whose file (and so its ETag and Last-Modified) changes between runs.
"""

from __future__ import annotations

import json

import pytest
from conftest import download_step, gets, payload

from support.localserver import Fault

OLD, NEW = payload(200_000, seed=1), payload(200_000, seed=2)
DAILY = {"update_schedule": "daily"}


def heads(server, path: str = "/packs/db.bin") -> list:
    return [r for r in server.requests if r.method == "HEAD" and r.path == path]


def _age(isolated_env, key: str = "db", **changes) -> dict:
    """Rewrite the install record (an old fetch, validators dropped...); returns it as it was."""
    record_file = isolated_env.records_dir / f"{key}.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, **changes}))
    return record


@pytest.fixture
def moving_db(cli, serve_pack, local_server, isolated_env):
    """A daily pack (no pinned checksum: its bytes move), installed once."""
    serve_pack("db", OLD, checksum=False, top=DAILY)
    assert cli("install", "db", "--progress", "none").exit_code == 0
    return isolated_env.sample_dir() / "db" / "db.bin"


def test_the_install_record_keeps_the_downloads_validators(moving_db, isolated_env, local_server):
    upstream = isolated_env.record("db")["extra"]["upstream"]
    assert len(upstream) == 1
    (entry,) = upstream
    assert entry["url"] == entry["final_url"] == local_server.url("/packs/db.bin")
    assert entry["etag"].startswith('"') and entry["last_modified"].endswith("GMT")


def test_unchanged_upstream_is_already_installed_even_past_its_schedule(cli, moving_db, isolated_env, local_server):
    _age(isolated_env, fetched_at="2020-01-01T00:00:00Z")  # the schedule alone would fetch it again
    again = cli("install", "db", "--progress", "plain")
    assert again.exit_code == 0, again.stderr
    assert "already installed db (upstream unchanged)" in again.stdout
    assert len(gets(local_server)) == 1  # no byte moved: one conditional HEAD, answered 304
    (asked,) = heads(local_server)
    assert asked.headers["If-None-Match"] == isolated_env.record("db")["extra"]["upstream"][0]["etag"]
    assert asked.status == 304
    as_json = cli("install", "db", "--json", "--progress", "none").json()["results"][0]
    assert as_json["already_installed"] is True and as_json["upstream"] == "unchanged"


def test_changed_upstream_is_an_update(cli, moving_db, isolated_env, local_server):
    local_server.replace("/packs/db.bin", NEW)
    updated = cli("install", "db", "--progress", "plain")
    assert updated.exit_code == 0, updated.stderr
    assert "an update: upstream has changed" in updated.stderr and "already" not in updated.stdout
    assert moving_db.read_bytes() == NEW and len(gets(local_server)) == 2
    assert "already installed db (upstream unchanged)" in cli("install", "db", "--progress", "none").stdout
    assert len(gets(local_server)) == 2  # the new validators were recorded: unchanged since


def test_last_modified_alone_is_asked_with_if_modified_since(cli, serve_pack, local_server, isolated_env):
    serve_pack("db", OLD, checksum=False, etag=None, top=DAILY)
    assert cli("install", "db", "--progress", "none").exit_code == 0
    assert "already installed db (upstream unchanged)" in cli("install", "db", "--progress", "none").stdout
    assert "If-Modified-Since" in heads(local_server)[0].headers and "If-None-Match" not in heads(local_server)[0].headers
    local_server.replace("/packs/db.bin", NEW)
    updated = cli("install", "db", "--progress", "plain")
    assert updated.exit_code == 0 and "upstream has changed" in updated.stderr
    assert (isolated_env.sample_dir() / "db" / "db.bin").read_bytes() == NEW


def test_a_redirect_that_now_leads_elsewhere_is_an_update(cli, write_recipe, local_server, isolated_env):
    old_url = local_server.add("/releases/v1/db.bin", OLD)
    new_url = local_server.add("/releases/v2/db.bin", NEW)
    latest = local_server.add("/latest/db.bin", b"")
    local_server.set_fault("/latest/db.bin", Fault(redirect_to=old_url))
    write_recipe("db", [download_step(latest, "db/db.bin", OLD, checksum=False)], **DAILY)
    assert cli("install", "db", "--progress", "none").exit_code == 0
    assert isolated_env.record("db")["extra"]["upstream"][0]["final_url"] == old_url
    assert "upstream unchanged" in cli("install", "db", "--progress", "none").stdout

    local_server.set_fault("/latest/db.bin", Fault(redirect_to=new_url))
    updated = cli("install", "db", "--progress", "plain")
    assert updated.exit_code == 0 and f"now leads to {new_url}" in updated.stderr
    assert (isolated_env.sample_dir() / "db" / "db.bin").read_bytes() == NEW


def test_no_recorded_validator_falls_back_to_the_schedule_and_says_so(cli, moving_db, isolated_env, local_server):
    record = _age(isolated_env)
    extra = {k: v for k, v in record["extra"].items() if k != "upstream"}  # a record from before validators were kept
    _age(isolated_env, extra=extra)
    fresh = cli("install", "db", "--progress", "plain")
    assert "already installed db:" in fresh.stdout and "judged by its daily schedule" in fresh.stderr
    assert heads(local_server) == [] and len(gets(local_server)) == 1

    _age(isolated_env, fetched_at="2020-01-01T00:00:00Z")
    due = cli("install", "db", "--progress", "plain")
    assert due.exit_code == 0 and "older than its daily schedule" in due.stderr and "already" not in due.stdout
    assert len(gets(local_server)) == 2


def test_unreachable_upstream_keeps_the_installed_pack_with_a_warning(cli, moving_db, isolated_env, local_server):
    local_server.stop()
    kept = cli("install", "db", "--progress", "none")
    assert kept.exit_code == 0, kept.stderr
    assert "already installed db" in kept.stdout and "upstream unchanged" not in kept.stdout
    warnings = [line for line in kept.stderr.splitlines() if "upstream could not be checked" in line]
    assert len(warnings) == 1 and "kept the installed version" in warnings[0]
    assert moving_db.read_bytes() == OLD


def test_an_upstream_error_status_is_not_a_change(cli, moving_db, local_server):
    local_server.set_fault("/packs/db.bin", Fault(statuses=[404, 404]))
    kept = cli("install", "db", "--progress", "none")
    assert kept.exit_code == 0 and "already installed db" in kept.stdout
    assert "upstream could not be checked" in kept.stderr and "HTTP 404" in kept.stderr
    assert len(gets(local_server)) == 1


def test_check_updates_gives_upstream_s_answer(cli, moving_db, isolated_env, local_server):
    _age(isolated_env, fetched_at="2020-01-01T00:00:00Z")
    unchanged = cli("check-updates")
    assert unchanged.exit_code == 0
    assert "up to date: upstream unchanged" in next(line for line in unchanged.stdout.splitlines() if line.startswith("db "))
    row = next(r for r in cli("check-updates", "--json").json()["packs"] if r["key"] == "db")
    assert row["stale"] is False and row["upstream"] == "unchanged"

    local_server.replace("/packs/db.bin", NEW)
    row = next(r for r in cli("check-updates", "--json").json()["packs"] if r["key"] == "db")
    assert row["stale"] is True and row["upstream"] == "changed" and "upstream has changed" in row["reason"]
    assert "UPDATE AVAILABLE" in cli("check-updates").stdout
    assert len(gets(local_server)) == 1  # asking moved no byte

    local_server.stop()
    unreachable = cli("check-updates")
    assert "STALE" in unreachable.stdout  # the schedule's verdict, and a warning saying why
    assert "db: upstream could not be checked" in unreachable.stderr


def test_a_server_that_refuses_head_is_asked_with_a_conditional_get(cli, moving_db, local_server):
    local_server.set_fault("/packs/db.bin", Fault(statuses=[405]))  # the HEAD: method not allowed
    again = cli("install", "db", "--progress", "none")
    assert again.exit_code == 0 and "already installed db (upstream unchanged)" in again.stdout
    asked = gets(local_server)[-1]
    assert len(gets(local_server)) == 2 and asked.status == 304 and asked.body_bytes_sent == 0
    assert "If-None-Match" in asked.headers
