"""Bundling a pack whose recipe downloads an archive and unpacks it: the bundle carries the
archive's files (what a direct install would create, with their hashes) without unpacking
them into the staging cache, and refuses what extraction would refuse.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pytest

from bundler import build
from conftest import download_step, files_under, fresh_host, make_tar_gz, read_manifest, sha256
from executor import extract

PASSPHRASE = "unpacked members"
MEMBERS = [("db-2026/", "dir"), ("db-2026/a.json", b'{"a": 1}' * 300), ("db-2026/sub/b.bin", bytes(range(256)) * 40), ("db-2026/sub/deeper/c", b"c"), ("db-2026/empty", b"")]
UNPACKED = {"db/a.json": MEMBERS[1][1], "db/sub/b.bin": MEMBERS[2][1], "db/sub/deeper/c": b"c", "db/empty": b""}


def make_zip(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members:
            if content == "dir":
                zf.writestr(name, b"")
            else:
                zf.writestr(name, content)
    return buffer.getvalue()


ARCHIVES = {"tar.gz": lambda members: make_tar_gz(members), "zip": make_zip}


@pytest.fixture
def key(cli, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DEVOPS_CP_KEY_PASSPHRASE", PASSPHRASE)
    (tmp_path / "keys").mkdir()
    assert cli("keygen", "-o", str(tmp_path / "keys" / "site")).exit_code == 0
    return tmp_path / "keys" / "site.key"


@pytest.fixture
def nothing_extracted(monkeypatch):
    """Fails the test if the bundle unpacks an archive onto disk."""

    def refuse(*args, **kwargs):
        raise AssertionError("the archive was extracted into the staging cache")

    monkeypatch.setattr(extract, "extract", refuse)


def serve_archive(local_server, write_recipe, fmt: str, data: bytes, pack: str = "vulndb", **extra) -> None:
    url = local_server.add(f"/{pack}.{fmt}", data)
    write_recipe(pack, [download_step(url, "db", data, extract=fmt, strip_components=1, size_exact=True, **extra)])


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_the_bundle_carries_the_files_the_archive_unpacks_to(fmt, cli, key, local_server, write_recipe, tmp_path, monkeypatch, nothing_extracted):
    serve_archive(local_server, write_recipe, fmt, ARCHIVES[fmt](MEMBERS))
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "vulndb", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    manifest = read_manifest(out)
    assert [(f["path"], f["size"], f["sha256"]) for f in manifest["files"]] == [(rel, len(data), sha256(data)) for rel, data in UNPACKED.items()]
    assert files_under(build.staging_dir()) == []
    monkeypatch.undo()  # the air-gapped host unpacks nothing either, but may
    fresh_host(monkeypatch, tmp_path / "airgapped")
    result = cli("sideload", str(out), "--trust", str(key.with_suffix(".pub")), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    data_dir = tmp_path / "airgapped" / "home" / ".local" / "share" / "devops-cp" / "samples"
    assert {rel: (data_dir / rel).read_bytes() for rel in files_under(data_dir)} == UNPACKED


def test_the_same_files_as_a_direct_install(cli, key, local_server, write_recipe, isolated_env, tmp_path):
    serve_archive(local_server, write_recipe, "tar.gz", make_tar_gz(MEMBERS))
    assert cli("install", "vulndb", "--yes", "--progress", "none").exit_code == 0
    installed = {f["path"]: f["sha256"] for f in isolated_env.record("vulndb")["files"]}
    out = tmp_path / "b.tar.zst"
    assert cli("bundle", "vulndb", "-o", str(out), "--key", str(key), "--progress", "none").exit_code == 0
    assert {f["path"]: f["sha256"] for f in read_manifest(out)["files"]} == installed


@pytest.mark.parametrize(
    "members, why",
    [
        ([("top/../../escape", b"x")], "outside"),
        ([("top/link", "symlink", "/etc/passwd")], "link"),
        ([("top/a", b"file"), ("top/a/b", b"under a file")], "a"),
    ],
)
def test_what_extraction_refuses_is_not_bundled(members, why, cli, key, local_server, write_recipe, tmp_path):
    serve_archive(local_server, write_recipe, "tar.gz", make_tar_gz(members))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli("bundle", "vulndb", "-o", str(out_dir / "b.tar.zst"), "--key", str(key), "--progress", "none")
    assert result.exit_code == 3, result.stderr
    assert why in result.stderr
    assert list(out_dir.iterdir()) == []
    assert files_under(build.staging_dir()) == []


def test_two_archives_unpacking_to_the_same_path_are_refused(cli, key, local_server, write_recipe, tmp_path):
    one, two = make_tar_gz([("top/same", b"1")]), make_tar_gz([("top/same", b"2")])
    steps = [
        download_step(local_server.add("/one.tar.gz", one), "db", one, extract="tar.gz", strip_components=1),
        download_step(local_server.add("/two.tar.gz", two), "db", two, extract="tar.gz", strip_components=1),
    ]
    write_recipe("vulndb", steps)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli("bundle", "vulndb", "-o", str(out_dir / "b.tar.zst"), "--key", str(key), "--progress", "none")
    assert result.exit_code == 3, result.stderr
    assert "same path" in result.stderr
    assert list(out_dir.iterdir()) == []


def test_a_tool_step_after_the_archive_still_sees_it_unpacked(cli, key, local_server, write_recipe, tmp_path):
    """The tool may read the unpacked files: such a pack is staged the old way."""
    archive = make_tar_gz(MEMBERS)
    count = "import os, sys; d = os.path.join(sys.argv[1], 'db'); open(os.path.join(d, 'count'), 'w').write(str(len(os.listdir(d))))"
    steps = [
        download_step(local_server.add("/db.tar.gz", archive), "db", archive, extract="tar.gz", strip_components=1),
        {"type": "tool_command", "command": [sys.executable, "-c", count, "{data_dir}"], "produces": ["db/count"]},
    ]
    write_recipe("vulndb", steps)
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "vulndb", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    files = {f["path"]: f for f in read_manifest(out)["files"]}
    assert set(files) == set(UNPACKED) | {"db/count"}
    assert files["db/count"]["sha256"] == sha256(b"4")  # a.json, sub, empty, and count itself being written
