"""Ed25519 keys, key ids, and signing/verifying bytes.

The trust decision (`verify_signature`) is a pure function on bytes and key
objects, as in python-tuf's `trusted_metadata_set.py`: no files, no clock.
Key files and the trust store do I/O and live in their own small functions
below, so the pure part can be tested without a disk.

Formats (DECISIONS "Signatures"): raw 64-byte Ed25519 signatures, public keys
PEM SubjectPublicKeyInfo, private keys PEM PKCS8; a key id is the sha256 hex of
the raw 32-byte public key. `openssl pkeyutl -verify -pubin -inkey site.pub
-rawin -in manifest.json -sigfile manifest.json.sig` checks our signatures.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from manifests.errors import ConfigError, SignatureError, UsageError

__all__ = [
    "SIGNATURE_SIZE",
    "TRUSTED_KEYS_DIRNAME",
    "TrustStore",
    "generate_keypair",
    "is_key_id",
    "key_id",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "read_private_key_file",
    "sign",
    "verify_signature",
    "write_keypair",
]

SIGNATURE_SIZE = 64
TRUSTED_KEYS_DIRNAME = "trusted-keys"
_KEY_ID = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: "$" would let a trailing newline through
_ENCRYPTED_PEM = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


# --- keys in memory -----------------------------------------------------------------


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    private = Ed25519PrivateKey.generate()
    return private, private.public_key()


def private_key_pem(key: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    """PEM PKCS8; encrypted with the best available scheme when a passphrase is given."""
    if passphrase is None:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    elif not passphrase:
        raise UsageError("empty passphrase", hint="give a non-empty passphrase, or none for an unencrypted key")
    else:
        encryption = serialization.BestAvailableEncryption(passphrase)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(data: bytes, passphrase: bytes | None, *, source: str = "private key") -> Ed25519PrivateKey:
    """PEM PKCS8 -> key. Every failure is a UsageError that says what to do."""
    encrypted = _ENCRYPTED_PEM in data
    if encrypted and passphrase is None:
        raise UsageError(f"{source} is encrypted and no passphrase was given", hint="give the key's passphrase")
    if not encrypted and passphrase is not None:
        # cryptography refuses this too; say it plainly instead of "Password was given".
        raise UsageError(f"{source} is not encrypted, but a passphrase was given", hint="leave the passphrase out")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise UsageError(f"wrong passphrase for {source} (or the file is damaged)") from exc
        raise UsageError(
            f"{source} is not a PEM PKCS8 private key",
            hint="expected an Ed25519 key in PEM PKCS8 ('-----BEGIN PRIVATE KEY-----'); "
            "`openssl genpkey -algorithm ed25519` makes one",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{source} is a {_key_kind(key)} key; signing needs an Ed25519 key")
    return key


def load_public_key(data: bytes, *, source: str = "public key") -> Ed25519PublicKey:
    """PEM SubjectPublicKeyInfo -> key."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UsageError(
            f"{source} is not a PEM public key",
            hint="expected '-----BEGIN PUBLIC KEY-----' (SubjectPublicKeyInfo), as in the .pub file next to the key",
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{source} is a {_key_kind(key)} key; bundles are signed with Ed25519 keys")
    return key


def _key_kind(key: object) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "") or "non-Ed25519"


def key_id(public_key: Ed25519PublicKey) -> str:
    """sha256 hex of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def is_key_id(text: object) -> bool:
    return isinstance(text, str) and _KEY_ID.fullmatch(text) is not None


# --- the trust decision: pure -------------------------------------------------------


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Raw 64-byte Ed25519 signature over `data`, exactly as given."""
    return private_key.sign(data)


def verify_signature(
    data: bytes,
    signature: bytes,
    trusted: Iterable[Ed25519PublicKey],
    *,
    claimed_key_id: str | None = None,
) -> str:
    """Return the id of the trusted key whose signature over `data` this is.

    `claimed_key_id` (the signer the manifest names) is only a hint: it orders
    the keys tried and words the error. It never makes a key trusted.
    """
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(
            f"malformed signature: {len(signature)} bytes, an Ed25519 signature is {SIGNATURE_SIZE}",
            hint="the .sig file is damaged or is not a raw Ed25519 signature",
        )
    keys = {key_id(k): k for k in trusted}
    order = sorted(keys, key=lambda kid: kid != claimed_key_id)  # the claimed key first
    for kid in order:
        try:
            keys[kid].verify(signature, data)
        except InvalidSignature:
            continue
        return kid
    raise _why_not_verified(keys, claimed_key_id)


def _why_not_verified(keys: dict[str, Ed25519PublicKey], claimed: str | None) -> SignatureError:
    add_hint = "if you trust the signer, run `devops-cp data trust add SIGNER.pub` (or pass --trust SIGNER.pub) and retry"
    if not keys:
        return SignatureError("signature cannot be checked: no trusted keys are configured", hint=add_hint)
    if claimed is not None and claimed not in keys:
        return SignatureError(
            f"signed by key {claimed}, which is not trusted here ({len(keys)} trusted key(s))",
            hint=add_hint,
        )
    if claimed is not None:
        return SignatureError(
            f"invalid signature: it does not match the signed data for trusted key {claimed}",
            hint="the data was changed after signing, or the signature belongs to something else; do not use it",
        )
    return SignatureError(
        f"signature does not verify with any of the {len(keys)} trusted key(s): "
        "the signer is unknown, or the data was changed after signing",
        hint=add_hint,
    )


# --- key files: I/O -----------------------------------------------------------------


def _with_suffix(prefix: Path, suffix: str) -> Path:
    # Not Path.with_suffix: "site.v2" must give "site.v2.key", not "site.key".
    return prefix.with_name(prefix.name + suffix)


def write_keypair(prefix: Path, passphrase: bytes | None) -> str:
    """Write PREFIX.key (mode 0600) and PREFIX.pub; return the key id. Never overwrites."""
    prefix = Path(prefix)
    key_path, pub_path = _with_suffix(prefix, ".key"), _with_suffix(prefix, ".pub")
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise UsageError(
                f"{path} already exists; refusing to overwrite a key", hint="choose another name or move it away"
            )
    private, public = generate_keypair()
    _create_exclusive(key_path, private_key_pem(private, passphrase), 0o600)
    try:
        _create_exclusive(pub_path, public_key_pem(public), 0o644)
    except BaseException:
        key_path.unlink()  # a .key without its .pub would only confuse
        raise
    return key_id(public)


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite, and never follow a symlink planted at the name.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise UsageError(f"{path} already exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink()
        raise
    os.close(fd)


def read_private_key_file(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    """Load a private key file, refusing one that group or others can read."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode  # the file we read, not whatever the name points to later
            if mode & 0o077:
                raise UsageError(
                    f"private key {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o})",
                    hint=f"run `chmod 600 {path}`",
                )
            data = f.read()
    except FileNotFoundError as exc:
        raise UsageError(f"no such key file: {path}") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{path} is a directory, not a key file") from exc
    except PermissionError as exc:
        raise UsageError(f"cannot read key file {path}: permission denied") from exc
    return load_private_key(data, passphrase, source=f"private key {path}")


# --- the trust store ----------------------------------------------------------------


class TrustStore:
    """Trusted public keys, one `<keyid>.pub` file each, in `<config dir>/trusted-keys/`."""

    MIN_PREFIX = 8

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @classmethod
    def in_config_dir(cls, config_dir: Path) -> TrustStore:
        return cls(Path(config_dir) / TRUSTED_KEYS_DIRNAME)

    def add(self, pub_pem: bytes) -> str:
        """Trust this public key; adding one already trusted changes nothing."""
        public = load_public_key(pub_pem)
        kid = key_id(public)
        path = self._path(kid)
        if path.exists():
            return kid
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{kid}.pub.tmp{os.getpid()}")
        try:
            _create_exclusive(tmp, public_key_pem(public), 0o644)  # canonical PEM, not the caller's bytes
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return kid

    def list(self) -> list[tuple[str, Path]]:
        if not self.directory.is_dir():
            return []
        found = [(p.name[: -len(".pub")], p) for p in self.directory.iterdir() if p.name.endswith(".pub")]
        return sorted((kid, p) for kid, p in found if is_key_id(kid))

    def remove(self, key_id_or_prefix: str) -> str:
        """Stop trusting a key, named by its id or a unique prefix of 8+ hex digits; return the full id."""
        prefix = key_id_or_prefix.strip().lower()
        if len(prefix) < self.MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", prefix):
            raise UsageError(
                f"{key_id_or_prefix!r} is not a key id",
                hint=f"give the key id or at least its first {self.MIN_PREFIX} hex digits (see the trusted keys list)",
            )
        matches = [(kid, p) for kid, p in self.list() if kid.startswith(prefix)]
        if not matches:
            raise UsageError(f"no trusted key with id {prefix}")
        if len(matches) > 1:
            raise UsageError(
                f"{prefix} matches {len(matches)} trusted keys: {', '.join(k for k, _ in matches)}",
                hint="give more digits of the key id",
            )
        kid, path = matches[0]
        path.unlink()
        return kid

    def keys(self) -> list[Ed25519PublicKey]:
        """Every trusted key, each checked against the id its file is named by."""
        keys = []
        for kid, path in self.list():
            try:
                public = load_public_key(path.read_bytes(), source=str(path))
            except (UsageError, OSError) as exc:
                raise ConfigError(f"trusted key file {path} cannot be read: {exc}") from exc
            if key_id(public) != kid:
                raise ConfigError(
                    f"trusted key file {path} holds key {key_id(public)}, not the key its name says",
                    hint="remove the file and add the key again",
                )
            keys.append(public)
        return keys

    def _path(self, kid: str) -> Path:
        return self.directory / f"{kid}.pub"
