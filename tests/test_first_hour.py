"""What a new user runs into in the first hour: sizes, paths, help, quiet, bad input, tool output."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import click
import pytest
from conftest import files_under, gets, payload
from conftest import sha256 as sha256_hex

from devops_cp.cli import main
from manifests.errors import UsageError
from manifests.units import FAT32_MAX, parse_size

MODEL = payload(300_000, seed=5)


@pytest.fixture
def keypair(cli, tmp_path):
    (tmp_path / "keys").mkdir()
    assert cli("keygen", "-o", str(tmp_path / "keys" / "site"), "--no-passphrase").exit_code == 0
    return tmp_path / "keys" / "site.key", tmp_path / "keys" / "site.pub"


# --- 3. sizes have units ------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("4G", 4 * 10**9), ("700M", 700 * 10**6), ("4GiB", 4 * 2**30), ("1.5MiB", 3 * 2**19), ("2T", 2 * 10**12), ("fat32", FAT32_MAX), ("10 K", 10_000)])
def test_a_size_with_a_unit_is_read(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["10", "0", "4 gigs", "banana", "", "-1G"])
def test_a_size_without_a_known_unit_is_refused_naming_the_forms(text):
    with pytest.raises(UsageError) as exc:
        parse_size(text)
    assert exc.value.exit_code == 2 and "KiB" in exc.value.hint and "fat32" in exc.value.hint


def test_split_size_without_a_unit_is_exit_2_and_writes_nothing(cli, serve_pack, keypair, tmp_path, local_server):
    serve_pack("model", MODEL)
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir()
    result = cli("bundle", "model", "-o", str(out), "--key", str(keypair[0]), "--split-size", "10")
    assert result.exit_code == 2
    assert "no unit" in result.stderr and "700MiB" in result.stderr and "fat32" in result.stderr
    assert list(out.parent.iterdir()) == [] and local_server.requests == []


def test_a_part_smaller_than_1_mib_is_refused(cli, serve_pack, keypair, tmp_path, local_server):
    serve_pack("model", MODEL)
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "model", "-o", str(out), "--key", str(keypair[0]), "--split-size", "1000K")
    assert result.exit_code == 2 and "at least 1.0 MiB" in result.stderr
    assert local_server.requests == [] and not list(tmp_path.glob("b.tar.zst*"))


# --- 8. the user's mistakes are exit 2 ----------------------------------------------------------


@pytest.mark.parametrize("size", ["0", "banana", "0K", "12"])
def test_demo_with_a_bad_size_is_exit_2(cli, size):
    result = cli("demo", "--size", size)
    assert result.exit_code == 2, result.stderr
    assert "Invalid value for '--size'" in result.stderr and "Traceback" not in result.stderr


def test_a_checksum_without_source_is_exit_2_before_any_download(cli, serve_pack, local_server):
    serve_pack("model", MODEL)
    result = cli("install", "model", "--checksum", "sha256:" + "0" * 64)
    assert result.exit_code == 2 and "go with --source" in result.stderr
    assert local_server.requests == []


# --- 4. paths behave ----------------------------------------------------------------------------


def test_bundle_into_a_folder_that_does_not_exist_is_exit_2(cli, serve_pack, keypair, tmp_path, local_server):
    serve_pack("model", MODEL)
    stick = tmp_path / "media" / "stick"  # not mounted
    result = cli("bundle", "model", "-o", str(stick / "b.tar.zst"), "--key", str(keypair[0]))
    assert result.exit_code == 2 and f"{stick} is not a folder" in result.stderr
    assert not stick.exists() and local_server.requests == []


def test_a_relative_data_dir_is_the_config_files_folder_s_from_any_folder(cli, serve_pack, isolated_env, tmp_path, monkeypatch):
    serve_pack("model", MODEL, dest="models/model.bin")
    config = isolated_env.write_config('[data_dirs]\nsample = "data/samples"\n')
    expected = config.parent / "data" / "samples" / "models" / "model.bin"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    monkeypatch.chdir(tmp_path / "a")
    assert cli("install", "model", "--progress", "none").exit_code == 0
    assert expected.read_bytes() == MODEL
    assert files_under(tmp_path / "a") == []
    assert isolated_env.record("model")["data_dir"] == str(config.parent / "data" / "samples")

    monkeypatch.chdir(tmp_path / "b")
    removed = cli("remove", "model")
    assert removed.exit_code == 0, removed.stderr
    assert not expected.exists()


def test_relative_catalog_and_bundle_dirs_are_the_config_files_folder_s(isolated_env, tmp_path, monkeypatch):
    from devops_cp.web import web_settings
    from executor.config import load_config

    config_file = isolated_env.write_config('catalog_dirs = ["recipes"]\n[web]\nbundle_dirs = ["sticks", "/mnt/usb"]\n')
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.catalog_dirs == (config_file.parent / "recipes",)
    assert web_settings(config)[0].bundle_dirs == (config_file.parent / "sticks", Path("/mnt/usb"))


# --- 5. warnings are not progress ---------------------------------------------------------------


def test_progress_none_hides_progress_but_not_warnings_and_quiet_hides_both(cli, serve_pack, isolated_env):
    serve_pack("loose", MODEL, checksum=False)
    shown = cli("install", "loose", "--progress", "none")
    assert shown.exit_code == 0, shown.stderr
    assert "has no published checksum" in shown.stderr
    assert "%" not in shown.stderr and "..." not in shown.stderr  # no progress lines

    cli("remove", "loose")
    quiet = cli("install", "loose", "-q")
    assert quiet.exit_code == 0
    assert quiet.stderr == "" and "installed loose" in quiet.stdout


# --- 6. help that helps -------------------------------------------------------------------------


def _commands(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_every_command_and_option_has_a_help_line_and_h_works():
    from click.testing import CliRunner

    missing = []
    for path, command in _commands(main):
        if not command.help:
            missing.append(" ".join(path) or "devops-cp")
        missing += [f"{' '.join(path)} {option.opts[-1]}" for option in command.params if isinstance(option, click.Option) and not option.help]
        result = CliRunner().invoke(main, [*path, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, path
    assert missing == []


def test_keygen_and_bundle_help_name_the_passphrase_variable(cli):
    for command in ("keygen", "bundle"):
        assert "DEVOPS_CP_KEY_PASSPHRASE" in cli(command, "--help").stdout


def test_an_untrusted_bundle_hint_names_the_command_and_install_source_accepts_trust(cli, serve_pack, keypair, tmp_path):
    serve_pack("model", MODEL)
    out = tmp_path / "b.tar.zst"
    assert cli("bundle", "model", "-o", str(out), "--key", str(keypair[0]), "--progress", "none").exit_code == 0

    refused = cli("install", "model", "--source", str(out), "--progress", "none")
    assert refused.exit_code == 3
    assert "devops-cp data trust add SIGNER.pub" in refused.stderr and "--trust SIGNER.pub" in refused.stderr

    trusted = cli("install", "model", "--source", str(out), "--trust", str(keypair[1]), "--progress", "none")
    assert trusted.exit_code == 0, trusted.stderr


@pytest.mark.parametrize("variable, value, needle", [("DEVOPS_CP_CONFIG", "nowhere/config.toml", "not a file"), ("DEVOPS_CP_CATALOG", "nowhere", "not a folder")])
def test_a_variable_that_points_at_nothing_is_exit_2(cli, monkeypatch, tmp_path, variable, value, needle):
    monkeypatch.setenv(variable, str(tmp_path / value))
    result = cli("list")
    assert result.exit_code == 2 and variable in result.stderr and needle in result.stderr


# --- 9. tool output is shown as it was printed ---------------------------------------------------


@pytest.mark.parametrize("line", ["[/] [bold]x [notice] pip", "[/bold] unmatched", "progress [red]50%[/red]"])
def test_a_tools_line_reaches_the_terminal_as_written(line):
    from rich.console import Console

    from devops_cp.render import RichBars
    from executor.events import Notice

    out = io.StringIO()
    with RichBars(Console(file=out, width=200, color_system=None)) as bars:
        bars(Notice("spacy-en", "info", f"python: {line}"))
    assert f"spacy-en: python: {line}" in out.getvalue()


# --- 2. an intact pack is not downloaded again ---------------------------------------------------


def test_an_intact_pack_is_already_installed_and_moves_no_byte(cli, serve_pack, local_server, isolated_env):
    serve_pack("model", MODEL, dest="models/model.bin")
    assert cli("install", "model", "--progress", "none").exit_code == 0
    again = cli("install", "model", "--progress", "none")
    assert again.exit_code == 0 and "already installed model" in again.stdout and "--reinstall" in again.stdout
    assert len(gets(local_server)) == 1

    as_json = cli("install", "model", "--json", "--progress", "none")
    assert as_json.json()["results"][0]["already_installed"] is True
    assert len(gets(local_server)) == 1

    forced = cli("install", "model", "--reinstall", "--progress", "none")
    assert forced.exit_code == 0 and "installed model" in forced.stdout and "already" not in forced.stdout
    assert len(gets(local_server)) == 2


@pytest.mark.parametrize("damage", ["missing", "other size", "modified"])
def test_a_changed_or_missing_file_is_repaired(cli, serve_pack, local_server, isolated_env, damage):
    serve_pack("model", MODEL, dest="models/model.bin")
    assert cli("install", "model", "--progress", "none").exit_code == 0
    installed = isolated_env.sample_dir() / "models" / "model.bin"
    if damage == "missing":
        installed.unlink()
    elif damage == "other size":
        installed.write_bytes(b"truncated")
    else:
        with open(installed, "r+b") as f:  # same size, written now: newer than the install
            f.write(b"X")
        os.utime(installed, (time.time() + 10, time.time() + 10))
    repaired = cli("install", "model", "--progress", "plain")
    assert repaired.exit_code == 0, repaired.stderr
    assert "model: repairing: models/model.bin" in repaired.stderr
    assert installed.read_bytes() == MODEL and len(gets(local_server)) == 2


def test_verify_rehashes_a_file_whose_size_and_time_were_kept(cli, serve_pack, local_server, isolated_env):
    serve_pack("model", MODEL, dest="models/model.bin")
    assert cli("install", "model", "--progress", "none").exit_code == 0
    installed = isolated_env.sample_dir() / "models" / "model.bin"
    before = installed.stat()
    with open(installed, "r+b") as f:
        f.write(b"X" if MODEL[:1] != b"X" else b"Y")
    os.utime(installed, ns=(before.st_atime_ns, before.st_mtime_ns))  # a change that size and time cannot see

    assert "already installed" in cli("install", "model", "--progress", "none").stdout
    assert len(gets(local_server)) == 1
    verified = cli("install", "model", "--verify", "--progress", "plain")
    assert verified.exit_code == 0 and "does not match its recorded sha256" in verified.stderr
    assert installed.read_bytes() == MODEL and len(gets(local_server)) == 2


def test_a_moving_target_without_validators_older_than_its_schedule_is_updated(cli, serve_pack, local_server, isolated_env):
    """Upstream's answer is tests/test_upstream_changed.py's; a record without validators falls back to the schedule."""
    serve_pack("db", MODEL, checksum=False, top={"update_schedule": "daily"})
    assert cli("install", "db", "--progress", "none").exit_code == 0
    record_file = isolated_env.records_dir / "db.json"
    record = json.loads(record_file.read_text())
    del record["extra"]["upstream"]
    record_file.write_text(json.dumps(record))
    assert "already installed" in cli("install", "db", "--progress", "none").stdout  # fetched today: fresh

    record["fetched_at"] = "2020-01-01T00:00:00Z"
    record_file.write_text(json.dumps(record))
    updated = cli("install", "db", "--progress", "plain")
    assert updated.exit_code == 0 and "an update" in updated.stderr and "already" not in updated.stdout
    assert len(gets(local_server)) == 2


# --- 7. the air-gapped host can describe what it received ------------------------------------------


@pytest.fixture
def sideloaded_site_pack(cli, serve_pack, keypair, tmp_path, isolated_env):
    """A site pack bundled on the online side, sideloaded on a host whose catalog lacks its recipe."""
    serve_pack("site-db", MODEL, dest="site/site.db", top={"update_schedule": "weekly", "label": "Site DB"})
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir()
    assert cli("bundle", "site-db", "-o", str(out), "--key", str(keypair[0]), "--progress", "none").exit_code == 0
    (isolated_env.catalog / "site-db.toml").unlink()  # the air-gapped host has no recipe for it
    result = cli("sideload", str(out), "--trust", str(keypair[1]), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    return out


def test_info_describes_a_sideloaded_pack_from_its_kept_signed_manifest(cli, sideloaded_site_pack, keypair, isolated_env):
    from manifests import signing

    shown = cli("info", "site-db")
    assert shown.exit_code == 0, shown.stderr
    assert "Site DB (site-db): installed from a bundle" in shown.stdout and "signed by" in shown.stdout
    document = cli("info", "site-db", "--json").json()
    [variant] = document["installed"]
    assert variant["files"] == 1 and variant["upstream"].endswith("/packs/site-db.bin") and variant["update_schedule"] == "weekly"

    # The manifest is kept byte for byte with its signature: anyone can check it again.
    record = isolated_env.record("site-db")
    kept = isolated_env.state / "devops-cp" / "bundles" / f"{record['extra']['bundle_manifest']}.manifest.json"
    signature = kept.with_name(kept.name + ".sig").read_bytes()
    public = signing.load_public_key(keypair[1].read_bytes())
    public.verify(signature, kept.read_bytes())  # raises if not the bytes that were signed
    assert variant["signer_key_id"] == signing.key_id(public)

    assert cli("remove", "site-db").exit_code == 0  # nothing of it left behind
    assert not kept.exists() and not kept.with_name(kept.name + ".sig").exists()


def test_check_updates_on_the_air_gapped_host_lists_what_it_has(cli, sideloaded_site_pack):
    shown = cli("check-updates")
    assert shown.exit_code == 0, shown.stderr
    assert "never downloaded" not in shown.stdout
    assert "site-db" in shown.stdout and "from a bundle of" in shown.stdout and "fresh" in shown.stdout
    assert "--all lists them" in shown.stdout
    document = cli("check-updates", "--json").json()
    assert [row["key"] for row in document["packs"]] == ["site-db"] and document["packs"][0]["bundle_created"]
    everything = cli("check-updates", "--all", "--json").json()
    assert any(row["reason"] == "never downloaded" for row in everything["packs"])


# --- 14. credentials go only to the hosts they were configured for ----------------------------------


def _authorization(server, path: str) -> list[str | None]:
    return [r.headers.get("authorization") for r in gets(server, path)]


@pytest.fixture
def licensed_pack(cli, local_server, write_recipe, isolated_env):
    """A recipe on `localhost` that needs a license key, and a [mirrors] rewrite to 127.0.0.1: another host."""
    data = payload(5000, seed=9)
    local_server.add("/mirror/geo/db.mmdb", data)
    port = local_server.url("/").split(":")[2].split("/")[0]
    upstream = f"http://localhost:{port}/geo/db.mmdb"
    write_recipe("geo-licensed", [{"type": "download", "url": upstream, "dest": "db.mmdb", "size_bytes": len(data), "checksum": "sha256:" + sha256_hex(data), "credentials": "maxmind"}],
                 credentials={"maxmind": {"username_env": "MM_ACCOUNT", "password_env": "MM_KEY"}})
    mirrors = f'[mirrors]\n"http://localhost:{port}/" = "{local_server.url("/mirror/")}"\n'
    return data, mirrors


def test_a_mirror_on_another_host_never_receives_the_license_key(cli, local_server, licensed_pack, isolated_env, monkeypatch):
    data, mirrors = licensed_pack
    monkeypatch.setenv("MM_ACCOUNT", "42")
    monkeypatch.setenv("MM_KEY", "license-key")
    isolated_env.write_config(mirrors)
    result = cli("install", "geo-licensed", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert _authorization(local_server, "/mirror/geo/db.mmdb") == [None]
    assert (isolated_env.sample_dir() / "db.mmdb").read_bytes() == data


def test_a_mirror_that_needs_credentials_gets_its_own_entry(cli, local_server, licensed_pack, isolated_env, monkeypatch):
    import base64

    _, mirrors = licensed_pack
    monkeypatch.setenv("MM_ACCOUNT", "42")
    monkeypatch.setenv("MM_KEY", "license-key")
    isolated_env.write_config(mirrors + '[credentials.mirror]\nusername = "site"\npassword = "mirror-pass"\nhosts = ["127.0.0.1"]\n')
    assert cli("install", "geo-licensed", "--progress", "none").exit_code == 0
    [sent] = _authorization(local_server, "/mirror/geo/db.mmdb")
    assert base64.b64decode(sent.split()[1]) == b"site:mirror-pass"


def test_credentials_hosts_must_be_host_names(cli, isolated_env):
    isolated_env.write_config('[credentials.maxmind]\nusername = "1"\npassword = "k"\nhosts = "download.maxmind.com"\n')
    result = cli("list")
    assert result.exit_code == 2 and "credentials.maxmind.hosts" in result.stderr


def test_a_checksum_file_over_its_size_limit_is_bad_data_exit_3(cli, local_server, write_recipe):
    data = payload(5000, seed=3)
    url = local_server.add("/d/db.bin", data)
    local_server.add("/d/SHA256SUMS", b"0" * (2 << 20))  # two MiB of "checksums": not a checksum file
    write_recipe("listed", [{"type": "download", "url": url, "dest": "db.bin", "size_bytes": len(data), "checksum_url": local_server.url("/d/SHA256SUMS")}])
    result = cli("install", "listed", "--progress", "none")
    assert result.exit_code == 3, result.stderr
    assert "larger than" in result.stderr


# --- 12. NLTK: the zip beside the unzipped folder, as nltk.download() leaves it -----------------------

NLTK_COMMIT_URL = "https://raw.githubusercontent.com/nltk/nltk_data/550b6625bcef1f2abff2ff770a5a0d272c9c6b2a/packages/"


def _punkt_tab_zip() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("punkt_tab/english/abbrev_types.txt", "e.g\ni.e\n")
        zf.writestr("punkt_tab/english/collocations.tab", "##number##\tfoo\n")
    return buffer.getvalue()


@pytest.fixture
def nltk_pack(local_server, isolated_env):
    """The built-in nltk-data recipe, its punkt_tab checksum and size those of a test zip, served through [mirrors]."""
    from manifests.catalog import builtin_dir

    data = _punkt_tab_zip()
    text = (builtin_dir() / "nltk-data.toml").read_text()
    assert text.count(f'url = "{NLTK_COMMIT_URL}') == 4 and "gh-pages/packages" not in text  # every package pinned to a commit
    text = text.replace('id = "nltk-data"', 'id = "nltk-test"')
    text = text.replace("e57f64187974277726a3417ca6f181ec5403676c717672eef6a748a7b20e0106", sha256_hex(data)).replace("size_bytes = 4319076", f"size_bytes = {len(data)}")
    (isolated_env.catalog / "nltk-test.toml").write_text(text)
    local_server.add("/nltk/tokenizers/punkt_tab.zip", data)
    isolated_env.write_config(f'[mirrors]\n"{NLTK_COMMIT_URL}" = "{local_server.url("/nltk/")}"\n')
    return data


def _nltk_layout(home: Path) -> list[str]:
    return files_under(home / "nltk_data")


def test_install_keeps_the_nltk_zip_beside_the_unzipped_folder(cli, nltk_pack, isolated_env):
    result = cli("install", "nltk-test", "--json", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert _nltk_layout(isolated_env.home) == ["tokenizers/punkt_tab.zip", "tokenizers/punkt_tab/english/abbrev_types.txt", "tokenizers/punkt_tab/english/collocations.tab"]
    assert (isolated_env.home / "nltk_data" / "tokenizers" / "punkt_tab.zip").read_bytes() == nltk_pack  # byte for byte: nltk checks its size and MD5
    recorded = {f["path"]: f["sha256"] for f in result.json()["results"][0]["record"]["files"]}
    assert recorded["tokenizers/punkt_tab.zip"] == sha256_hex(nltk_pack)

    assert cli("remove", "nltk-test").exit_code == 0
    assert _nltk_layout(isolated_env.home) == []


def test_sideload_keeps_the_nltk_zip_beside_the_unzipped_folder(cli, nltk_pack, keypair, tmp_path, monkeypatch):
    from conftest import fresh_host

    out = tmp_path / "nltk.tar.zst"
    assert cli("bundle", "nltk-test", "-o", str(out), "--key", str(keypair[0]), "--progress", "none").exit_code == 0
    fresh_host(monkeypatch, tmp_path / "offline")
    assert cli("sideload", str(out), "--trust", str(keypair[1]), "--progress", "none").exit_code == 0
    home = tmp_path / "offline" / "home"
    assert _nltk_layout(home) == ["tokenizers/punkt_tab.zip", "tokenizers/punkt_tab/english/abbrev_types.txt", "tokenizers/punkt_tab/english/collocations.tab"]
    assert (home / "nltk_data" / "tokenizers" / "punkt_tab.zip").read_bytes() == nltk_pack


# --- 11. trivy's DownloadedAt ---------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [("0001-01-01T00:00:00Z", "2026-12-01T10:00:00Z"), ("", "2026-12-01T10:00:00Z"), ("2026-11-30T08:00:00.5Z", "2026-11-30T08:00:00.5Z")])
def test_downloaded_at_is_set_only_where_trivy_has_not(tmp_path, isolated_env, given, expected):
    from executor.config import load_config
    from executor.consumers import adopt
    from executor.store import Store
    from executor.txn import PackTransaction

    meta = {"Version": 2, "NextUpdate": "2026-12-01T16:00:00Z", "UpdatedAt": "2026-12-01T10:00:00Z", "DownloadedAt": given}
    with PackTransaction(Store(load_config()), tmp_path / "trivy", "trivy-db") as txn:
        data = json.dumps(meta).encode()
        with open(txn.path_for("db/metadata.json"), "wb") as f:
            f.write(data)
        txn.add("db/metadata.json", len(data), sha256_hex(data))
        adopt("vulnerability_db", txn, "2026-12-01T10:00:00Z")
        written = open(txn.path_for("db/metadata.json"), "rb").read()
        assert json.loads(written) == {**meta, "DownloadedAt": expected}
        assert txn.files["db/metadata.json"].sha256 == sha256_hex(written) and txn.files["db/metadata.json"].size == len(written)
