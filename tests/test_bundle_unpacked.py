"""Bundling a pack whose recipe downloads an archive and unpacks it: the bundle carries the
archive as upstream published it (checked at bundle time with extraction's own rules, never
unpacked into the staging cache), and the air-gapped host unpacks it with a direct install's
own extraction, hashing it as it reads, so an altered archive installs nothing.
"""

from __future__ import annotations

import io
import random
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from bundle_helpers import PackSpec, bundle_members, new_key, write_bundle, write_public_key, write_tar_zst
from bundler import build
from conftest import download_step, files_under, fresh_host, gets, make_tar_gz, read_manifest, sha256
from executor import extract
from manifests.bundle import Unpack

MEMBERS = [("db-2026/", "dir"), ("db-2026/a.json", b'{"a": 1}' * 300), ("db-2026/sub/b.bin", bytes(range(256)) * 40), ("db-2026/sub/deeper/c", b"c"), ("db-2026/empty", b"")]
UNPACKED = {"db/a.json": MEMBERS[1][1], "db/sub/b.bin": MEMBERS[2][1], "db/sub/deeper/c": b"c", "db/empty": b""}


def make_zip(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members:
            zf.writestr(name, b"" if content == "dir" else content)
    return buffer.getvalue()


ARCHIVES = {"tar.gz": make_tar_gz, "tar": lambda members: make_tar_gz(members, fmt="w"), "zip": make_zip}


@pytest.fixture
def key(keygen_key) -> Path:
    return keygen_key


@pytest.fixture
def nothing_extracted(monkeypatch):
    """Fails the test if the bundle unpacks an archive onto disk."""

    def refuse(*args, **kwargs):
        raise AssertionError("the archive was extracted into the staging cache")

    monkeypatch.setattr(extract, "extract", refuse)
    monkeypatch.setattr(extract, "extract_tar_stream", refuse)


def serve_archive(local_server, write_recipe, fmt: str, data: bytes, pack: str = "vulndb", *, pinned: bool = True, **extra) -> None:
    """pinned: sha256 and exact size in the recipe, so a tar streams from the server into the bundle; else it is staged first."""
    url = local_server.add(f"/{pack}.{fmt}", data)
    write_recipe(pack, [download_step(url, "db", data, extract=fmt, strip_components=1, size_exact=pinned, **extra)])


@pytest.fixture
def streamed(monkeypatch) -> list[str]:
    """The URLs of the archives that went from the server straight into a bundle."""
    urls: list[str] = []
    real = build._stream_archive

    def spy(download, *args):
        urls.append(download.url)
        return real(download, *args)

    monkeypatch.setattr(build, "_stream_archive", spy)
    return urls


def bundle_refused(cli, key: Path, tmp_path: Path, exit_code: int = 3):
    """`bundle vulndb` into an empty folder: it must fail with `exit_code` and leave the folder empty."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = cli("bundle", "vulndb", "-o", str(out_dir / "b.tar.zst"), "--key", str(key), "--progress", "none")
    assert result.exit_code == exit_code, result.stderr
    assert list(out_dir.iterdir()) == []
    return result


def bundle_member(bundle: Path, name: str) -> bytes:
    with open(bundle, "rb") as raw, tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(raw), mode="r|") as tar:
        for member in tar:
            if member.name == name:
                return tar.extractfile(member).read()
    raise AssertionError(f"{name} is not in {bundle}")


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def samples_dir(root: Path) -> Path:
    return root / "home" / ".local" / "share" / "devops-cp" / "samples"


def installed(data_dir: Path) -> dict[str, bytes]:
    return {rel: (data_dir / rel).read_bytes() for rel in files_under(data_dir)}


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "staged"])
@pytest.mark.parametrize("fmt", ["tar.gz", "tar", "zip"])
def test_the_bundle_carries_the_archive_as_published_and_the_host_unpacks_it(fmt, pinned, cli, key, local_server, write_recipe, tmp_path, monkeypatch, nothing_extracted, streamed):
    archive = ARCHIVES[fmt](MEMBERS)
    serve_archive(local_server, write_recipe, fmt, archive, pinned=pinned, unpacked_size_bytes=20_000)
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "vulndb", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert len(streamed) == (1 if pinned and fmt != "zip" else 0)  # a zip is read from its end: always staged
    member = f"archives/vulndb/db.{fmt}"
    assert read_manifest(out)["files"] == [
        {"pack_key": "vulndb", "path": "db", "size": len(archive), "sha256": sha256(archive), "member": member, "unpack": {"format": fmt, "strip_components": 1, "unpacked_size_bytes": 20_000}}
    ]
    assert bundle_member(out, member) == archive  # byte for byte: anyone can check it against upstream's checksum
    assert files_under(build.staging_dir()) == []
    shown = cli("inspect", str(out))
    assert shown.exit_code == 0 and "1 file(s)" in shown.stdout and "1 of them archive(s) to unpack" in shown.stdout, shown.stdout

    monkeypatch.undo()  # the air-gapped host does unpack it
    fresh_host(monkeypatch, tmp_path / "airgapped")
    trust = ("--trust", str(key.with_suffix(".pub")))
    dry = cli("sideload", str(out), *trust, "--dry-run", "--progress", "none")
    assert dry.exit_code == 0, dry.stderr
    assert "would install 0 file(s) and unpack 1 archive(s)" in dry.stdout
    result = cli("sideload", str(out), *trust, "--progress", "none")
    assert result.exit_code == 0, result.stderr
    data_dir = samples_dir(tmp_path / "airgapped")
    assert installed(data_dir) == UNPACKED
    assert not (data_dir / ".devops-cp-staging").exists()


def test_the_host_records_what_a_direct_install_records(cli, key, local_server, write_recipe, isolated_env, tmp_path, monkeypatch):
    serve_archive(local_server, write_recipe, "tar.gz", make_tar_gz(MEMBERS))
    assert cli("install", "vulndb", "--yes", "--progress", "none").exit_code == 0
    direct = isolated_env.record("vulndb")["files"]
    out = tmp_path / "b.tar.zst"
    assert cli("bundle", "vulndb", "-o", str(out), "--key", str(key), "--progress", "none").exit_code == 0
    fresh_host(monkeypatch, tmp_path / "airgapped")
    assert cli("sideload", str(out), "--trust", str(key.with_suffix(".pub")), "--progress", "none").exit_code == 0
    records = tmp_path / "airgapped" / "home" / ".local" / "state" / "devops-cp" / "records"
    import json

    sideloaded = json.loads((records / "vulndb.json").read_text())["files"]
    assert sideloaded == direct
    assert {f["path"]: f["sha256"] for f in sideloaded} == {rel: sha256(data) for rel, data in UNPACKED.items()}


@pytest.mark.parametrize(
    "members, why",
    [
        ([("top/../../escape", b"x")], "outside"),
        ([("top/link", "symlink", "/etc/passwd")], "link"),
        ([("top/a", b"file"), ("top/a/b", b"under a file")], "a"),
        ([("top/a", b"once"), ("top/a", b"twice")], "twice"),
    ],
)
@pytest.mark.parametrize("pinned", [True, False], ids=["streamed", "staged"])
def test_what_extraction_refuses_is_not_bundled(members, why, pinned, cli, key, local_server, write_recipe, tmp_path):
    serve_archive(local_server, write_recipe, "tar.gz", make_tar_gz(members), pinned=pinned)
    result = bundle_refused(cli, key, tmp_path)
    assert why in result.stderr
    assert files_under(build.staging_dir()) == []


def test_two_archives_unpacking_the_same_path_are_refused(cli, key, local_server, write_recipe, tmp_path):
    one, two = make_tar_gz([("same", b"1")]), make_tar_gz([("one/same", b"2")])  # both unpack to db/one/same
    steps = [
        download_step(local_server.add("/one.tar.gz", one), "db/one", one, extract="tar.gz"),
        download_step(local_server.add("/two.tar.gz", two), "db", two, extract="tar.gz"),
    ]
    write_recipe("vulndb", steps)
    result = bundle_refused(cli, key, tmp_path)
    assert "same path" in result.stderr


def test_two_archives_into_one_folder_are_refused_with_what_to_do(cli, key, local_server, write_recipe, tmp_path):
    one, two = make_tar_gz([("top/one", b"1")]), make_tar_gz([("top/two", b"2")])
    steps = [
        download_step(local_server.add("/one.tar.gz", one), "db", one, extract="tar.gz", strip_components=1),
        download_step(local_server.add("/two.tar.gz", two), "db", two, extract="tar.gz", strip_components=1),
    ]
    write_recipe("vulndb", steps)
    result = bundle_refused(cli, key, tmp_path, exit_code=2)
    assert "unpack into the same folder" in result.stderr and "fix the recipe" in result.stderr


def test_a_tool_step_after_the_archive_still_sees_it_unpacked(cli, key, local_server, write_recipe, tmp_path):
    """The tool may read the unpacked files: such a pack is staged the old way, its files carried one by one."""
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
    assert not any("unpack" in f for f in files.values())
    assert files["db/count"]["sha256"] == sha256(b"4")  # a.json, sub, empty, and count itself being written


# --- the air-gapped side: bundles made here, signed, some of them altered ---------------------


@pytest.fixture
def signer(tmp_path):
    key = new_key()
    return key, write_public_key(tmp_path / "site.pub", key)


def archive_bundle(out: Path, key, archive: bytes, unpack: Unpack, plain: dict[str, bytes] | None = None):
    return write_bundle(out, [PackSpec("vulndb", plain or {}, archives={"db": (archive, unpack)})], key=key)


def sideload(cli, bundle: Path, pub: Path, *extra):
    return cli("sideload", str(bundle), "--trust", str(pub), "--progress", "none", *extra)


def assert_nothing_installed(isolated_env) -> None:
    assert files_under(isolated_env.sample_dir()) == []
    assert not isolated_env.records_dir.exists() or list(isolated_env.records_dir.iterdir()) == []


def test_a_bundle_made_elsewhere_unpacks_beside_its_plain_files(cli, signer, isolated_env, tmp_path):
    key, pub = signer
    built = archive_bundle(tmp_path / "b.tar.zst", key, ARCHIVES["tar"](MEMBERS), Unpack("tar", 1), plain={"README": b"read me"})
    checked = cli("verify", str(built.path), "--trust", str(pub))
    assert checked.exit_code == 0 and "2 file(s)" in checked.stdout, checked.stderr
    result = sideload(cli, built.path, pub)
    assert result.exit_code == 0, result.stderr
    assert installed(isolated_env.sample_dir()) == {**UNPACKED, "README": b"read me"}
    assert {f["path"] for f in isolated_env.record("vulndb")["files"]} == {*UNPACKED, "README"}


@pytest.mark.parametrize("fmt", ["tar", "zip"])  # both hold a.json's bytes as they are (zipfile stores them)
def test_an_archive_altered_after_it_was_signed_installs_nothing(fmt, cli, signer, isolated_env, tmp_path):
    key, pub = signer
    archive = ARCHIVES[fmt](MEMBERS)
    built = archive_bundle(tmp_path / "good.tar.zst", key, archive, Unpack(fmt, 1))
    at = archive.index(b'{"a": 1}') + 6  # inside a.json's bytes: the archive still unpacks, to other data
    altered = archive[:at] + b"2" + archive[at + 1 :]
    assert len(altered) == len(archive) and altered != archive
    members = bundle_members(built.manifest_bytes, built.signature, [(name, altered) for name, _ in built.payload])
    evil = write_tar_zst(tmp_path / "evil.tar.zst", members)
    for command in (("verify", str(evil), "--trust", str(pub)), ("sideload", str(evil), "--trust", str(pub), "--progress", "none")):
        result = cli(*command)
        assert result.exit_code == 3, result.stderr
        assert "sha256" in result.stderr or "checksum" in result.stderr, result.stderr
    assert_nothing_installed(isolated_env)
    assert not (isolated_env.sample_dir() / ".devops-cp-staging").exists()


def test_a_damaged_archive_is_reported_as_altered_not_as_damage(cli, signer, isolated_env, tmp_path):
    """A .tar.gz changed in transit stops the gzip reader first; the message names the real cause."""
    key, pub = signer
    archive = make_tar_gz(MEMBERS)
    built = archive_bundle(tmp_path / "good.tar.zst", key, archive, Unpack("tar.gz", 1))
    altered = archive[:40] + bytes([archive[40] ^ 0xFF]) + archive[41:]
    evil = write_tar_zst(tmp_path / "evil.tar.zst", bundle_members(built.manifest_bytes, built.signature, [(built.payload[0][0], altered)]))
    result = sideload(cli, evil, pub)
    assert result.exit_code == 3, result.stderr
    assert "sha256" in result.stderr or "checksum" in result.stderr, result.stderr
    assert_nothing_installed(isolated_env)


@pytest.mark.parametrize(
    "members, why",
    [
        ([("top/../../escape", b"x")], "outside"),
        ([("top/link", "symlink", "/etc/passwd")], "link"),
        ([("top/a", b"once"), ("top/a", b"twice")], "twice"),
    ],
)
def test_a_signed_hostile_archive_is_refused_at_sideload_too(members, why, cli, signer, isolated_env, tmp_path):
    """A bundle made by another tool (or an older one) is signed, but its archive is still checked as extraction checks it."""
    key, pub = signer
    built = archive_bundle(tmp_path / "b.tar.zst", key, make_tar_gz(members), Unpack("tar.gz", 1))
    checked = cli("verify", str(built.path), "--trust", str(pub))  # what the operator runs first finds it too
    assert checked.exit_code == 3 and why in checked.stderr, checked.stderr
    result = sideload(cli, built.path, pub)
    assert result.exit_code == 3, result.stderr
    assert why in result.stderr
    assert_nothing_installed(isolated_env)
    assert not (tmp_path / "escape").exists() and not (isolated_env.data / "escape").exists()


def test_an_archive_that_unpacks_past_its_bound_is_refused(cli, signer, isolated_env, tmp_path):
    key, pub = signer
    bomb = make_tar_gz([("top/zeros", b"\0" * 100_000)])
    built = archive_bundle(tmp_path / "b.tar.zst", key, bomb, Unpack("tar.gz", 1, unpacked_size_bytes=1_000))
    result = sideload(cli, built.path, pub)
    assert result.exit_code == 3, result.stderr
    assert "unpacks to more than the 2000 bytes" in result.stderr
    assert_nothing_installed(isolated_env)


def test_the_space_check_counts_what_the_archive_unpacks_to(cli, signer, isolated_env, tmp_path, tmpfs):
    """A 2 MB tmpfs holds the small archive, not the 50 MB the recipe says it unpacks to: refused before a byte is written."""
    key, pub = signer
    built = archive_bundle(tmp_path / "b.tar.zst", key, make_tar_gz(MEMBERS), Unpack("tar.gz", 1, unpacked_size_bytes=50_000_000))
    small = tmpfs()
    isolated_env.write_config(f'[data_dirs]\nsample = "{small}"\n')
    result = sideload(cli, built.path, pub)
    assert result.exit_code == 5, result.stderr
    assert files_under(small) == []


def test_an_archive_carried_whole_needs_room_for_itself_only_in_the_staging_cache(cli, key, local_server, write_recipe, tmp_path, tmpfs, monkeypatch, nothing_extracted):
    """Staged (not pinned), the archive needs its own size in the cache, not the 50 MB it unpacks to."""
    archive = make_tar_gz(MEMBERS)
    serve_archive(local_server, write_recipe, "tar.gz", archive, pinned=False, unpacked_size_bytes=50_000_000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmpfs("2m")))
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "vulndb", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert bundle_member(out, "archives/vulndb/db.tar.gz") == archive


# --- a pinned archive streamed into the bundle -------------------------------------------------


def test_a_streamed_archive_resumed_after_a_drop_is_walked_whole(cli, key, local_server, write_recipe, tmp_path, monkeypatch, streamed):
    from support.localserver import Fault

    archive = make_tar_gz([("top/a", random_bytes(300_000, 1)), ("top/b", random_bytes(300_000, 2))], fmt="w")
    serve_archive(local_server, write_recipe, "tar", archive)
    local_server.set_fault("/vulndb.tar", Fault(drop_after=250_000))  # in the middle of top/a
    out = tmp_path / "b.tar.zst"
    result = cli("bundle", "vulndb", "-o", str(out), "--key", str(key), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert len(streamed) == 1 and bundle_member(out, "archives/vulndb/db.tar") == archive
    assert [r.headers.get("range") for r in gets(local_server, "/vulndb.tar")] == [None, "bytes=250000-"]  # resumed where it broke
    fresh_host(monkeypatch, tmp_path / "airgapped")
    assert cli("sideload", str(out), "--trust", str(key.with_suffix(".pub")), "--progress", "none").exit_code == 0
    assert installed(samples_dir(tmp_path / "airgapped")) == {"db/a": random_bytes(300_000, 1), "db/b": random_bytes(300_000, 2)}


def test_a_streamed_archive_may_not_unpack_onto_a_file_of_the_pack(cli, key, local_server, write_recipe, tmp_path, streamed):
    archive = make_tar_gz([("top/readme", b"from the archive")], fmt="w")
    readme = b"a file of its own"
    steps = [
        download_step(local_server.add("/db.tar", archive), "db", archive, extract="tar", strip_components=1, size_exact=True),
        download_step(local_server.add("/readme", readme), "db/readme", readme, size_exact=True),
    ]
    write_recipe("vulndb", steps)
    result = bundle_refused(cli, key, tmp_path)
    assert "same path" in result.stderr and len(streamed) == 1


def test_a_streamed_archive_past_its_bound_is_not_bundled(cli, key, local_server, write_recipe, tmp_path, streamed):
    serve_archive(local_server, write_recipe, "tar.gz", make_tar_gz([("top/zeros", b"\0" * 100_000)]), unpacked_size_bytes=1_000)
    result = bundle_refused(cli, key, tmp_path)
    assert "more than the 2000 bytes" in result.stderr and len(streamed) == 1
    assert files_under(build.staging_dir()) == []
