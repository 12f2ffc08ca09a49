"""keygen, trust, bundle, inspect, verify and sideload's policy, through the CLI.

Bundles come from `devops-cp data bundle` against a server on 127.0.0.1 where the CLI
itself is under test, and from bundle_helpers (the real writer, any manifest fields)
where a test needs a manifest the clock would not give it (expired, older data).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bundle_helpers import PackSpec, Raw, build_manifest, bundle_members, new_key, tree_snapshot, truncate, write_bundle, write_public_key, write_tar_zst
from conftest import payload
from executor.keys import read_private_key_file
from manifests import signing
from manifests.trust import verify_signature
from manifests.bundle import to_json

NOW = datetime.now(timezone.utc).replace(microsecond=0)
MODEL = payload(400_000, seed=5)


@pytest.fixture
def keypair(cli, tmp_path, monkeypatch):
    """keygen's files, unencrypted; returns (PREFIX.key, PREFIX.pub, key id)."""
    (tmp_path / "keys").mkdir()
    result = cli("keygen", "-o", str(tmp_path / "keys" / "site"), "--no-passphrase")
    assert result.exit_code == 0, result.stderr
    key_id = result.stdout.split("key id:")[1].strip()
    return tmp_path / "keys" / "site.key", tmp_path / "keys" / "site.pub", key_id


@pytest.fixture
def model_pack(serve_pack):
    serve_pack("model", MODEL, dest="models/model.bin")
    return "model"


def snapshot(env) -> dict[str, str]:
    """The data directories, the state directory (install records) and the config (trust store)."""
    return tree_snapshot(env.data, env.state / "devops-cp" / "records", env.config_dir)


# --- keygen -------------------------------------------------------------------------------------


def test_keygen_writes_a_0600_key_and_a_pub_and_prints_the_key_id(cli, tmp_path):
    old = os.umask(0)  # whatever the umask, the key is 0600
    try:
        result = cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    key, pub = tmp_path / "site.key", tmp_path / "site.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"-----BEGIN PRIVATE KEY-----" in key.read_bytes()
    public = signing.load_public_key(pub.read_bytes())
    assert f"key id: {signing.key_id(public)}" in result.stdout
    private = read_private_key_file(key, None)
    assert signing.key_id(private.public_key()) == signing.key_id(public)


def test_keygen_json(cli, tmp_path):
    doc = cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase", "--json").json()
    assert doc["key_id"] == signing.key_id(signing.load_public_key((tmp_path / "site.pub").read_bytes()))


def test_keygen_never_overwrites(cli, tmp_path):
    assert cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase").exit_code == 0
    before = tree_snapshot(tmp_path)
    again = cli("keygen", "-o", str(tmp_path / "site"), "--no-passphrase")
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert tree_snapshot(tmp_path) == before
    (tmp_path / "other.pub").write_text("someone else's public key")
    lone_pub = cli("keygen", "-o", str(tmp_path / "other"), "--no-passphrase")
    assert lone_pub.exit_code == 2 and "other.pub already exists" in lone_pub.stderr
    assert not (tmp_path / "other.key").exists() and (tmp_path / "other.pub").read_text() == "someone else's public key"


def test_keygen_passphrase_from_the_environment_and_bundle_uses_it(cli, tmp_path, monkeypatch, model_pack):
    monkeypatch.setenv("DEVOPS_CP_KEY_PASSPHRASE", "s3cret passphrase")
    assert cli("keygen", "-o", str(tmp_path / "site")).exit_code == 0
    key = tmp_path / "site.key"
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes() and b"s3cret" not in key.read_bytes()
    made = cli("bundle", model_pack, "-o", str(tmp_path / "a.tar.zst"), "--key", str(key), "--progress", "none")
    assert made.exit_code == 0, made.stderr
    monkeypatch.setenv("DEVOPS_CP_KEY_PASSPHRASE", "wrong")
    wrong = cli("bundle", model_pack, "-o", str(tmp_path / "b.tar.zst"), "--key", str(key), "--progress", "none")
    assert wrong.exit_code == 2 and "wrong passphrase" in wrong.stderr
    assert not list(tmp_path.glob("b.tar.zst*"))


def test_keygen_without_a_passphrase_source_and_no_terminal_refuses(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DEVOPS_CP_KEY_PASSPHRASE", raising=False)
    result = cli("keygen", "-o", str(tmp_path / "site"))
    assert result.exit_code == 2 and "DEVOPS_CP_KEY_PASSPHRASE" in result.stderr
    assert not list(tmp_path.glob("site.*"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_private_key_that_group_or_others_can_read_is_refused(mode, cli, keypair, model_pack, local_server, tmp_path):
    key, _, _ = keypair
    key.chmod(mode)
    result = cli("bundle", model_pack, "-o", str(tmp_path / "out.tar.zst"), "--key", str(key), "--progress", "none")
    assert result.exit_code == 2, result.stderr
    assert f"{mode:04o}" in result.stderr and "chmod 600" in result.stderr
    assert local_server.requests == [] and not list(tmp_path.glob("out.tar.zst*"))


# --- trust --------------------------------------------------------------------------------------


def test_trust_add_list_remove(cli, keypair, tmp_path, isolated_env):
    _, pub, key_id = keypair
    assert "no trusted keys" in cli("trust", "list").stdout
    added = cli("trust", "add", str(pub))
    assert added.exit_code == 0 and key_id in added.stdout
    assert cli("trust", "add", str(pub)).exit_code == 0  # again: nothing changes
    listed = cli("trust", "list", "--json").json()["keys"]
    assert [k["key_id"] for k in listed] == [key_id]
    assert Path(listed[0]["path"]).parent == isolated_env.config_dir / "devops-cp" / "trusted-keys"
    assert key_id in cli("trust", "list").stdout

    removed = cli("trust", "remove", key_id[:12])
    assert removed.exit_code == 0 and key_id in removed.stdout
    assert cli("trust", "list", "--json").json()["keys"] == []
    again = cli("trust", "remove", key_id)
    assert again.exit_code == 2 and "no trusted key" in again.stderr


def test_trust_add_refuses_what_is_not_a_public_key(cli, keypair, tmp_path):
    key, _, _ = keypair
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    for path in (junk, key):
        result = cli("trust", "add", str(path))
        assert result.exit_code == 2 and "not a PEM public key" in result.stderr
    assert cli("trust", "list", "--json").json()["keys"] == []


def test_a_removed_key_is_no_longer_trusted(cli, keypair, model_pack, tmp_path):
    key, pub, key_id = keypair
    out = tmp_path / "b.tar.zst"
    assert cli("bundle", model_pack, "-o", str(out), "--key", str(key), "--progress", "none").exit_code == 0
    cli("trust", "add", str(pub))
    assert cli("verify", str(out), "--progress", "none").exit_code == 0
    cli("trust", "remove", key_id)
    refused = cli("verify", str(out), "--progress", "none")
    assert refused.exit_code == 3 and "no trusted keys" in refused.stderr


# --- bundle -------------------------------------------------------------------------------------


def test_bundle_without_key_or_unsigned_refuses_before_fetching(cli, model_pack, local_server, tmp_path):
    result = cli("bundle", model_pack, "-o", str(tmp_path / "out.tar.zst"))
    assert result.exit_code == 2
    assert "--key" in result.stderr and "--unsigned" in result.stderr
    assert local_server.requests == [] and not list(tmp_path.glob("out.tar.zst*"))


@pytest.mark.parametrize(
    "args, needle",
    [(["-o", "out.zip"], "must end in .tar.zst"), (["-o", "out.tar.zst", "--split-size", "lots"], "invalid size"), (["-o", "out.tar.zst", "--expires", "soon"], "invalid duration")],
    ids=["name", "split-size", "expires"],
)
def test_bundle_usage_errors(args, needle, cli, keypair, model_pack, tmp_path, monkeypatch):
    key, _, _ = keypair
    monkeypatch.chdir(tmp_path)
    result = cli("bundle", model_pack, "--key", str(key), *args)
    assert result.exit_code == 2 and needle in result.stderr


def test_bundle_never_overwrites_an_existing_bundle(cli, keypair, model_pack, tmp_path):
    key, _, _ = keypair
    out = tmp_path / "out.tar.zst"
    assert cli("bundle", model_pack, "-o", str(out), "--key", str(key), "--progress", "none").exit_code == 0
    before = tree_snapshot(tmp_path)
    again = cli("bundle", model_pack, "-o", str(out), "--key", str(key), "--progress", "none")
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert tree_snapshot(tmp_path) == before


def test_bundle_json_and_side_files(cli, keypair, model_pack, tmp_path):
    key, _, key_id = keypair
    out = tmp_path / "out.tar.zst"
    doc = cli("bundle", model_pack, "-o", str(out), "--key", str(key), "--progress", "none", "--json").json()
    assert doc["ok"] is True and doc["signer_key_id"] == key_id and doc["packs"] == ["model"] and doc["payload_bytes"] == len(MODEL)
    assert sorted(Path(p).name for p in doc["outputs"]) == ["out.tar.zst", "out.tar.zst.sha256", "out.tar.zst.sha256.sig"]
    listing = (tmp_path / "out.tar.zst.sha256").read_bytes()
    verify_signature(listing, (tmp_path / "out.tar.zst.sha256.sig").read_bytes(), [signing.load_public_key((tmp_path / "keys" / "site.pub").read_bytes())])
    assert not list(tmp_path.glob(".out.tar.zst*"))  # no temporary parts left


# --- inspect ------------------------------------------------------------------------------------


@pytest.fixture
def key():
    return new_key()


@pytest.fixture
def pub(key, tmp_path) -> Path:
    return write_public_key(tmp_path / "site.pub", key)


def test_inspect_reads_only_the_manifest_a_truncated_payload_still_inspects(cli, key, pub, tmp_path, isolated_env):
    big = payload(3_000_000, seed=8)
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": big}), PackSpec("db", {"a/x.json": b"{}"})], key=key, expires=NOW + timedelta(days=30))
    truncate(built.path, built.path.stat().st_size // 3)
    before = tree_snapshot(isolated_env.home)

    doc = cli("inspect", str(built.path), "--trust", str(pub), "--json").json()
    assert doc["bundle_id"] == built.manifest.bundle_id and doc["signer_key_id"] == signing.key_id(key.public_key())
    assert doc["signed"] is True and doc["trusted"] is True
    assert doc["created"] == built.manifest.created and doc["expires"] == built.manifest.expires
    assert {p["id"]: p["size"] for p in doc["packs"]} == {"model": len(big), "db": 2}
    assert {(f["pack"], f["path"], f["size"]) for f in doc["files"]} == {("model", "m.bin", len(big)), ("db", "a/x.json", 2)}
    text = cli("inspect", str(built.path), "--trust", str(pub))
    assert text.exit_code == 0 and "trusted here" in text.stdout and "NOT" not in text.stdout
    assert tree_snapshot(isolated_env.home) == before

    verify = cli("verify", str(built.path), "--trust", str(pub), "--progress", "none")
    assert verify.exit_code == 3 and "truncated" in verify.stderr  # the full check does read it all


def test_inspect_says_whether_the_signer_is_trusted_here(cli, key, pub, tmp_path):
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": MODEL})], key=key)
    untrusted = cli("inspect", str(built.path), "--json")
    assert untrusted.exit_code == 0
    assert untrusted.json()["trusted"] is False and untrusted.json()["signed"] is True and "no trusted keys" in untrusted.json()["why"]
    assert "NOT trusted here" in cli("inspect", str(built.path)).stdout
    cli("trust", "add", str(pub))
    assert cli("inspect", str(built.path), "--json").json()["trusted"] is True
    stranger = write_bundle(tmp_path / "s.tar.zst", [PackSpec("model", {"m.bin": MODEL})], key=new_key())
    doc = cli("inspect", str(stranger.path), "--json").json()
    assert doc["trusted"] is False and "not trusted here" in doc["why"]


def test_inspect_an_unsigned_bundle(cli, tmp_path):
    built = write_bundle(tmp_path / "u.tar.zst", [PackSpec("model", {"m.bin": MODEL})], key=None)
    doc = cli("inspect", str(built.path), "--json").json()
    assert doc["signed"] is False and doc["trusted"] is False and doc["signer_key_id"] is None
    assert "UNSIGNED" in cli("inspect", str(built.path)).stdout


def test_inspect_something_that_is_not_a_bundle(cli, tmp_path):
    missing = cli("inspect", str(tmp_path / "nothing.tar.zst"))
    assert missing.exit_code == 2 and "no bundle" in missing.stderr
    plain = write_tar_zst(tmp_path / "plain.tar.zst", [Raw("readme.txt", b"hello")])
    result = cli("inspect", str(plain))
    assert result.exit_code == 3 and "not a bundle" in result.stderr


# --- verify -------------------------------------------------------------------------------------


def test_verify_does_the_full_check_and_writes_nothing(cli, key, pub, tmp_path, isolated_env):
    first = write_bundle(tmp_path / "old.tar.zst", [PackSpec("model", {"m.bin": payload(1000, seed=1)}, fetched_at=NOW - timedelta(days=1))], key=key)
    assert cli("sideload", str(first.path), "--trust", str(pub), "--progress", "none").exit_code == 0  # the host has state
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": MODEL}), PackSpec("db", {"a/x.json": b"{}"})], key=key)
    before = snapshot(isolated_env)
    home_before = tree_snapshot(isolated_env.home)

    ok = cli("verify", str(built.path), "--trust", str(pub), "--progress", "none", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert ok.json() == {"ok": True, "bundle_id": built.manifest.bundle_id, "verified_by": signing.key_id(key.public_key()), "files": 2, "bytes": len(MODEL) + 2}
    text = cli("verify", str(built.path), "--trust", str(pub), "--progress", "none")
    assert text.exit_code == 0 and text.stdout.startswith("OK: bundle")
    assert snapshot(isolated_env) == before and tree_snapshot(isolated_env.home) == home_before


def test_verify_checks_every_member_not_just_the_signature(cli, key, pub, tmp_path):
    manifest, members = build_manifest([PackSpec("model", {"m.bin": MODEL, "n.bin": b"second"})], key=key)
    data = to_json(manifest)
    raw = bundle_members(data, signing.sign(key, data), members)
    raw[-1] = Raw(raw[-1].name, b"SECOND")  # same length, other bytes
    bundle = write_tar_zst(tmp_path / "bad.tar.zst", raw)
    assert cli("inspect", str(bundle), "--trust", str(pub), "--json").json()["trusted"] is True
    result = cli("verify", str(bundle), "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 3 and "checksum mismatch" in result.stderr and "packs/model/n.bin" in result.stderr


# --- policy: expired, rollback, unsigned --------------------------------------------------------


def test_expired_bundle_is_refused_unless_allow_expired(cli, key, pub, tmp_path, isolated_env):
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": MODEL})], key=key, created=NOW - timedelta(days=10), expires=NOW - timedelta(days=1))
    before = snapshot(isolated_env)
    refused = cli("sideload", str(built.path), "--trust", str(pub), "--progress", "none")
    assert refused.exit_code == 4, refused.stderr
    assert "expired" in refused.stderr and "--allow-expired" in refused.stderr
    assert snapshot(isolated_env) == before
    verify = cli("verify", str(built.path), "--trust", str(pub), "--progress", "none")
    assert verify.exit_code == 4 and "--allow-expired" in verify.stderr
    assert cli("verify", str(built.path), "--trust", str(pub), "--progress", "none", "--allow-expired").exit_code == 0
    allowed = cli("sideload", str(built.path), "--trust", str(pub), "--progress", "none", "--allow-expired")
    assert allowed.exit_code == 0, allowed.stderr
    assert (isolated_env.sample_dir() / "m.bin").read_bytes() == MODEL


def test_bundle_expires_flag_makes_a_bundle_that_expires(cli, keypair, model_pack, tmp_path):
    key, pub, _ = keypair
    out = tmp_path / "soon.tar.zst"
    made = cli("bundle", model_pack, "-o", str(out), "--key", str(key), "--expires", "1s", "--progress", "none")
    assert made.exit_code == 0, made.stderr
    expires = datetime.fromisoformat(cli("inspect", str(out), "--json").json()["expires"].replace("Z", "+00:00"))
    while datetime.now(timezone.utc) < expires + timedelta(milliseconds=50):
        time.sleep(0.1)
    refused = cli("sideload", str(out), "--trust", str(pub), "--progress", "none")
    assert refused.exit_code == 4 and "expired" in refused.stderr and "--allow-expired" in refused.stderr


def test_rollback_is_refused_unless_allow_downgrade(cli, key, pub, tmp_path, isolated_env):
    older, newer = payload(5000, seed=30), payload(5000, seed=31)
    old = write_bundle(tmp_path / "old.tar.zst", [PackSpec("model", {"m.bin": older}, fetched_at=NOW - timedelta(days=7))], key=key)
    new = write_bundle(tmp_path / "new.tar.zst", [PackSpec("model", {"m.bin": newer}, fetched_at=NOW - timedelta(days=1))], key=key)
    assert cli("sideload", str(new.path), "--trust", str(pub), "--progress", "none").exit_code == 0
    before = snapshot(isolated_env)

    refused = cli("sideload", str(old.path), "--trust", str(pub), "--progress", "none")
    assert refused.exit_code == 4, refused.stderr
    assert "older than what is installed" in refused.stderr and "--allow-downgrade" in refused.stderr
    assert snapshot(isolated_env) == before
    assert (isolated_env.sample_dir() / "m.bin").read_bytes() == newer

    allowed = cli("sideload", str(old.path), "--trust", str(pub), "--progress", "none", "--allow-downgrade")
    assert allowed.exit_code == 0, allowed.stderr
    assert (isolated_env.sample_dir() / "m.bin").read_bytes() == older
    assert isolated_env.record("model")["fetched_at"] == old.manifest.packs[0].fetched_at
    assert cli("sideload", str(new.path), "--trust", str(pub), "--progress", "none").exit_code == 0  # forward again: fine


def test_unsigned_bundle_is_refused_unless_allow_unsigned(cli, model_pack, tmp_path, isolated_env, keypair):
    _, pub, _ = keypair
    out = tmp_path / "unsigned.tar.zst"
    made = cli("bundle", model_pack, "-o", str(out), "--unsigned", "--progress", "none")
    assert made.exit_code == 0, made.stderr
    assert sorted(p.name for p in tmp_path.glob("unsigned*")) == ["unsigned.tar.zst", "unsigned.tar.zst.sha256"]
    before = snapshot(isolated_env)
    refused = cli("sideload", str(out), "--trust", str(pub), "--progress", "none")
    assert refused.exit_code == 4, refused.stderr
    assert "not signed" in refused.stderr and "--allow-unsigned" in refused.stderr
    assert snapshot(isolated_env) == before
    allowed = cli("sideload", str(out), "--progress", "none", "--allow-unsigned")
    assert allowed.exit_code == 0, allowed.stderr
    assert (isolated_env.sample_dir() / "models" / "model.bin").read_bytes() == MODEL


def test_allow_unsigned_never_excuses_a_bad_signature(cli, key, pub, tmp_path, isolated_env):
    stranger = write_bundle(tmp_path / "s.tar.zst", [PackSpec("model", {"m.bin": MODEL})], key=new_key())
    result = cli("sideload", str(stranger.path), "--trust", str(pub), "--progress", "none", "--allow-unsigned")
    assert result.exit_code == 3 and "not trusted here" in result.stderr
    assert not (isolated_env.sample_dir() / "m.bin").exists()


def test_unsigned_split_bundle_is_refused_unless_allow_unsigned(cli, tmp_path, isolated_env):
    built = write_bundle(tmp_path / "u.tar.zst", [PackSpec("model", {"m.bin": payload(300_000, seed=9)})], key=None, split_size=100_000)
    assert len(built.parts) == 4
    refused = cli("sideload", str(built.path), "--progress", "none")
    assert refused.exit_code == 4 and "--allow-unsigned" in refused.stderr
    assert cli("sideload", str(built.path), "--progress", "none", "--allow-unsigned").exit_code == 0


# --- sideload's other options -------------------------------------------------------------------


def test_dry_run_checks_everything_and_installs_nothing(cli, key, pub, tmp_path, isolated_env):
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": MODEL})], key=key)
    before = snapshot(isolated_env)
    result = cli("sideload", str(built.path), "--trust", str(pub), "--dry-run", "--progress", "none")
    assert result.exit_code == 0 and "would install 1 file(s)" in result.stdout
    assert snapshot(isolated_env) == before


def test_pack_option_installs_only_the_chosen_pack_but_verifies_all(cli, key, pub, tmp_path, isolated_env):
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": MODEL}), PackSpec("db", {"db/x.json": b"[]"})], key=key)
    result = cli("sideload", str(built.path), "--trust", str(pub), "--pack", "db", "--progress", "none", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["pack"] for r in result.json()["results"]] == ["db"]
    assert (isolated_env.sample_dir() / "db" / "x.json").read_bytes() == b"[]" and not (isolated_env.sample_dir() / "m.bin").exists()
    unknown = cli("sideload", str(built.path), "--trust", str(pub), "--pack", "nope", "--progress", "none")
    assert unknown.exit_code == 2 and "no pack 'nope'" in unknown.stderr


def test_sideloaded_file_hashes_match_the_install_record(cli, key, pub, tmp_path, isolated_env):
    files = {"m.bin": MODEL, "sub/dir/n.bin": b"n" * 1000}
    write = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", files)], key=key)
    assert cli("sideload", str(write.path), "--trust", str(pub), "--progress", "none").exit_code == 0
    record = isolated_env.record("model")
    assert {f["path"]: f["sha256"] for f in record["files"]} == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    assert record["source"] == f"bundle:{write.manifest.bundle_id}" and record["bundle_created"] == write.manifest.created
    assert json.loads(json.dumps(record))["checksum_verified"] is True


@pytest.mark.parametrize("dry_run", [False, True], ids=["sideload", "dry-run"])
def test_a_read_only_data_directory_is_refused_with_exit_5(dry_run, cli, key, pub, tmp_path, tmpfs, isolated_env):
    mnt = tmpfs("1m", ro=True)
    isolated_env.write_config(f'[data_dirs]\nsample = "{mnt}/samples"\n')
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": MODEL})], key=key)
    result = cli("sideload", str(built.path), "--trust", str(pub), "--progress", "none", *(["--dry-run"] if dry_run else []))
    assert result.exit_code == 5, result.stderr
    assert "cannot write" in result.stderr and str(mnt) in result.stderr
    assert not isolated_env.records_dir.exists() or not list(isolated_env.records_dir.iterdir())


def test_not_enough_space_is_refused_with_exit_5_before_writing(cli, key, pub, tmp_path, tmpfs, isolated_env):
    mnt = tmpfs("1m")
    isolated_env.write_config(f'[data_dirs]\nsample = "{mnt}/samples"\n')
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("model", {"m.bin": payload(2_000_000, seed=12)})], key=key)
    result = cli("sideload", str(built.path), "--trust", str(pub), "--progress", "none")
    assert result.exit_code == 5 and "not enough space" in result.stderr
    assert not [p for p in mnt.rglob("*") if p.is_file()]
