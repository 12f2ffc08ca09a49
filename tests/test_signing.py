"""Keys, key ids, signatures and the trust store. Pure tests use no files;
key-file tests use tmp_path only."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from manifests.errors import ConfigError, SignatureError, UsageError
from executor.keys import TrustStore, read_private_key_file, write_keypair
from manifests.signing import (
    TRUSTED_KEYS_DIRNAME,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign,
)
from manifests.trust import verify_signature

DATA = b'{"bundle_id": "b1"}\n'


@pytest.fixture(scope="module")
def pair():
    return generate_keypair()


@pytest.fixture(scope="module")
def other():
    return generate_keypair()


# --- keys in memory -----------------------------------------------------------------


def test_key_id_is_sha256_of_raw_public_key(pair):
    _, public = pair
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert key_id(public) == hashlib.sha256(raw).hexdigest()
    assert len(key_id(public)) == 64


def test_pem_round_trip_unencrypted(pair):
    private, public = pair
    pem = private_key_pem(private, None)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key_id(load_private_key(pem, None).public_key()) == key_id(public)
    pub = public_key_pem(public)
    assert pub.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert key_id(load_public_key(pub)) == key_id(public)


def test_pem_round_trip_encrypted(pair):
    private, public = pair
    pem = private_key_pem(private, b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert key_id(load_private_key(pem, b"correct horse").public_key()) == key_id(public)


def test_empty_passphrase_refused(pair):
    with pytest.raises(UsageError, match="empty passphrase"):
        private_key_pem(pair[0], b"")


def test_wrong_passphrase_says_so(pair):
    pem = private_key_pem(pair[0], b"right")
    with pytest.raises(UsageError, match="wrong passphrase") as err:
        load_private_key(pem, b"wrong")
    assert err.value.exit_code == 2


def test_missing_passphrase_says_so(pair):
    pem = private_key_pem(pair[0], b"right")
    with pytest.raises(UsageError, match="encrypted and no passphrase was given"):
        load_private_key(pem, None)


def test_passphrase_for_unencrypted_key_says_so(pair):
    with pytest.raises(UsageError, match="not encrypted, but a passphrase was given"):
        load_private_key(private_key_pem(pair[0], None), b"x")


def test_garbage_private_key_refused():
    with pytest.raises(UsageError, match="not a PEM PKCS8 private key"):
        load_private_key(b"hello", None)


def test_non_ed25519_private_keys_refused():
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UsageError, match="RSA key; signing needs an Ed25519 key"):
        load_private_key(rsa_pem, None)


def test_public_key_refusals():
    with pytest.raises(UsageError, match="not a PEM public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(UsageError, match="EC key; bundles are signed with Ed25519"):
        load_public_key(public_key_pem(ec_pub))  # serializes any key type


# --- sign / verify: pure ------------------------------------------------------------


def test_sign_and_verify_returns_key_id(pair, other):
    private, public = pair
    signature = sign(private, DATA)
    assert len(signature) == 64
    assert verify_signature(DATA, signature, [other[1], public]) == key_id(public)
    assert verify_signature(DATA, signature, iter([public]), claimed_key_id=key_id(public)) == key_id(public)


def test_changed_byte_fails(pair):
    private, public = pair
    signature = sign(private, DATA)
    for i in range(len(DATA)):
        tampered = DATA[:i] + bytes([DATA[i] ^ 0x01]) + DATA[i + 1 :]
        with pytest.raises(SignatureError, match="invalid signature"):
            verify_signature(tampered, signature, [public], claimed_key_id=key_id(public))


def test_signature_of_other_data_fails(pair):
    private, public = pair
    with pytest.raises(SignatureError) as err:
        verify_signature(DATA, sign(private, b"another manifest"), [public])
    assert err.value.exit_code == 3
    assert "does not verify with any of the 1 trusted key(s)" in str(err.value)


def test_untrusted_signer_named_in_message(pair, other):
    private, public = pair
    with pytest.raises(SignatureError, match=f"signed by key {key_id(public)}, which is not trusted here"):
        verify_signature(DATA, sign(private, DATA), [other[1]], claimed_key_id=key_id(public))


def test_no_trusted_keys(pair):
    with pytest.raises(SignatureError, match="no trusted keys are configured"):
        verify_signature(DATA, sign(pair[0], DATA), [])


def test_malformed_signature_length(pair):
    with pytest.raises(SignatureError, match="malformed signature: 63 bytes"):
        verify_signature(DATA, sign(pair[0], DATA)[:63], [pair[1]])


def test_claimed_key_id_does_not_make_a_key_trusted(pair, other):
    # Claiming a trusted key's id while signing with another key gets nowhere.
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_signature(DATA, sign(other[0], DATA), [pair[1]], claimed_key_id=key_id(pair[1]))


# --- key files ----------------------------------------------------------------------


def test_write_keypair_modes_and_round_trip(tmp_path):
    kid = write_keypair(tmp_path / "site", b"pw")
    key_file, pub_file = tmp_path / "site.key", tmp_path / "site.pub"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_id(load_public_key(pub_file.read_bytes())) == kid
    assert key_id(read_private_key_file(key_file, b"pw").public_key()) == kid


def test_write_keypair_keeps_dotted_prefix(tmp_path):
    write_keypair(tmp_path / "site.v2", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.v2.key", "site.v2.pub"]


def test_write_keypair_is_0600_even_with_open_umask(tmp_path):
    old = os.umask(0)
    try:
        write_keypair(tmp_path / "site", None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "site.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("existing", ["site.key", "site.pub"])
def test_write_keypair_never_overwrites(tmp_path, existing):
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(UsageError, match="already exists; refusing to overwrite"):
        write_keypair(tmp_path / "site", None)
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_key_file_created_with_o_excl(tmp_path, monkeypatch):
    flags_seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, **kw):
        flags_seen.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", spy)
    write_keypair(tmp_path / "site", None)
    key_open = [f for f in flags_seen if f[0].endswith("site.key")]
    assert key_open and key_open[0][1] & os.O_EXCL and key_open[0][1] & os.O_CREAT
    assert key_open[0][2] == 0o600


def test_write_keypair_does_not_follow_a_planted_symlink(tmp_path):
    # O_CREAT without O_EXCL would follow a dangling symlink and create its target.
    (tmp_path / "site.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="already exists"):
        write_keypair(tmp_path / "site", None)
    assert not (tmp_path / "elsewhere").exists()


def test_group_readable_key_refused(tmp_path):
    write_keypair(tmp_path / "site", None)
    key_file = tmp_path / "site.key"
    key_file.chmod(0o640)
    with pytest.raises(UsageError, match="accessible by group or others") as err:
        read_private_key_file(key_file, None)
    assert f"chmod 600 {key_file}" in str(err.value)
    key_file.chmod(0o604)
    with pytest.raises(UsageError, match="chmod 600"):
        read_private_key_file(key_file, None)


def test_wrong_passphrase_from_file(tmp_path):
    write_keypair(tmp_path / "site", b"right")
    with pytest.raises(UsageError, match=f"wrong passphrase for private key {tmp_path / 'site.key'}"):
        read_private_key_file(tmp_path / "site.key", b"wrong")


def test_missing_key_file(tmp_path):
    with pytest.raises(UsageError, match="no such key file"):
        read_private_key_file(tmp_path / "nope.key", None)


# --- trust store --------------------------------------------------------------------


def test_trust_store_add_list_keys_remove(tmp_path, pair, other):
    store = TrustStore.in_config_dir(tmp_path)
    assert store.directory == tmp_path / TRUSTED_KEYS_DIRNAME
    assert store.list() == [] and store.keys() == []
    kid = store.add(public_key_pem(pair[1]))
    assert kid == key_id(pair[1])
    assert store.add(public_key_pem(pair[1])) == kid  # idempotent
    kid2 = store.add(public_key_pem(other[1]))
    assert store.list() == sorted([(kid, store.directory / f"{kid}.pub"), (kid2, store.directory / f"{kid2}.pub")])
    assert sorted(key_id(k) for k in store.keys()) == sorted([kid, kid2])
    assert store.remove(kid[:8].upper()) == kid
    assert [k for k, _ in store.list()] == [kid2]
    assert store.remove(kid2) == kid2
    assert store.list() == []


def test_trust_store_add_refuses_non_keys(tmp_path):
    with pytest.raises(UsageError, match="not a PEM public key"):
        TrustStore(tmp_path).add(b"nonsense")


def test_trust_store_ignores_stray_files(tmp_path, pair):
    store = TrustStore(tmp_path)
    (tmp_path / "README").write_text("hi")
    (tmp_path / "notakeyid.pub").write_text("x")
    kid = store.add(public_key_pem(pair[1]))
    assert [k for k, _ in store.list()] == [kid]


def test_trust_store_remove_refusals(tmp_path, pair):
    store = TrustStore(tmp_path)
    store.add(public_key_pem(pair[1]))
    with pytest.raises(UsageError, match="at least its first 8 hex digits"):
        store.remove("abc")
    with pytest.raises(UsageError, match="is not a key id"):
        store.remove("not-hex-at-all")
    with pytest.raises(UsageError, match="no trusted key with id"):
        store.remove("0" * 8 if not key_id(pair[1]).startswith("0" * 8) else "f" * 8)
    # Two ids sharing a prefix: the store decides by file name, so names alone make the case.
    for tail in ("1", "2"):
        (tmp_path / ("abcdef01" + "0" * 55 + tail + ".pub")).write_bytes(public_key_pem(pair[1]))
    with pytest.raises(UsageError, match="matches 2 trusted keys"):
        store.remove("abcdef01")


def test_trust_store_refuses_mislabelled_key_file(tmp_path, pair):
    store = TrustStore(tmp_path)
    (tmp_path / ("ab" * 32 + ".pub")).write_bytes(public_key_pem(pair[1]))
    with pytest.raises(ConfigError, match="not the key its name says"):
        store.keys()


# --- interoperability ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
def test_openssl_made_key_signs_for_openssl(tmp_path):
    """A key from `openssl genpkey` loads here, and openssl accepts what it signs."""
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    private = load_private_key(key.read_bytes(), None)
    assert key_id(load_public_key(pub.read_bytes())) == key_id(private.public_key())
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "data.sig").write_bytes(sign(private, DATA))
    subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
         "-in", str(tmp_path / "data"), "-sigfile", str(tmp_path / "data.sig")],
        check=True, capture_output=True,
    )  # fmt: skip
