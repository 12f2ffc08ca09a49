"""Ed25519 keys in memory, key ids, and signing bytes: pure, no files.

Checking a signature is the trust decision's first step (manifests/trust.py); key files
and the trust store are I/O and live in executor/keys.py.

Formats (DECISIONS "Signatures"): raw 64-byte Ed25519 signatures, public keys
PEM SubjectPublicKeyInfo, private keys PEM PKCS8; a key id is the sha256 hex of
the raw 32-byte public key. `openssl pkeyutl -verify -pubin -inkey site.pub
-rawin -in manifest.json -sigfile manifest.json.sig` checks our signatures.
"""

from __future__ import annotations

import hashlib
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from manifests.errors import UsageError

__all__ = [
    "SIGNATURE_SIZE",
    "TRUSTED_KEYS_DIRNAME",
    "generate_keypair",
    "is_key_id",
    "key_id",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "sign",
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


# --- signing ------------------------------------------------------------------------


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """Raw 64-byte Ed25519 signature over `data`, exactly as given."""
    return private_key.sign(data)
