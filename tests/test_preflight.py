"""Pre-flight space checks add up needs per filesystem, not per directory."""

from __future__ import annotations

from conftest import download_step, gets, payload


def test_two_data_dirs_on_one_filesystem_are_checked_together(cli, local_server, write_recipe, isolated_env, tmpfs):
    mount = tmpfs("3m")
    isolated_env.write_config(f'[data_dirs]\nmodels = "{mount}/models"\ngeo = "{mount}/geo"\n')
    for pack, data_type in (("pack-a", "models"), ("pack-b", "geo")):
        data = payload(1_400_000, seed=len(pack) + ord(pack[-1]))
        url = local_server.add(f"/{pack}.bin", data)
        write_recipe(pack, [download_step(url, f"{pack}.bin", data, size_bytes=len(data))], data_type=data_type)
    # Each pack alone fits (1.4 MB x 1.2 < 3 MiB); both together do not.
    result = cli("install", "pack-a", "pack-b", "--yes")
    assert result.exit_code == 5, result.stderr
    assert "not enough space" in result.stderr
    assert gets(local_server) == []  # refused before the first byte
