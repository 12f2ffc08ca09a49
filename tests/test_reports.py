"""status / check-updates documents for packs the local catalog does not know (sideloaded site packs)."""

from __future__ import annotations

import os

from conftest import payload


def test_check_updates_lists_an_installed_pack_without_a_local_recipe(cli, serve_pack, isolated_env):
    serve_pack("site-pack", payload(2048), top={"update_schedule": "daily"})
    assert cli("install", "site-pack").exit_code == 0
    # The recipe goes away (as on an air-gapped host that only got the bundle).
    for recipe in isolated_env.catalog.glob("*.toml"):
        os.remove(recipe)
    rows = {row["key"]: row for row in cli("check-updates", "--json").json()["packs"]}
    assert rows["site-pack"]["schedule"] == "daily"
    assert rows["site-pack"]["stale"] is False and rows["site-pack"]["next_update_seconds"] > 0


def test_a_corrupt_install_record_is_a_clear_error(cli, serve_pack, isolated_env):
    serve_pack("site-pack", payload(1024))
    assert cli("install", "site-pack").exit_code == 0
    (isolated_env.records_dir / "site-pack.json").write_text("{not json")
    result = cli("status")
    assert result.exit_code == 2
    assert "is not a valid install record" in result.stderr and "site-pack.json" in result.stderr
