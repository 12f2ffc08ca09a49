"""Key files and the trust store: the I/O around manifests/signing.py's pure key handling.

The trust store is only as trusted as its permissions (ssh's StrictModes): a public key is
read only from a regular file owned by this user or root that neither group nor others may
write, in folders that are not writable by them either (a sticky folder such as /tmp aside);
otherwise exit 4, naming the file and the `chmod` that fixes it. A FIFO or a device is never
opened. `--trust FILE` gets the same checks, so do the recipes that let a bundle's offline
steps run (check_strict_modes), and what `trust add` and `keygen` write passes them whatever
the umask.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from manifests.errors import ConfigError, PolicyError, UsageError
from manifests.signing import TRUSTED_KEYS_DIRNAME, generate_keypair, is_key_id, key_id, load_private_key, load_public_key, private_key_pem, public_key_pem

__all__ = ["TrustStore", "check_strict_modes", "read_private_key_file", "read_public_key_file", "write_keypair", "write_private_file"]

_MAX_KEY_FILE = 64 * 1024  # a PEM public key is a few hundred bytes


# --- reading a file the way ssh's StrictModes would --------------------------------------------


def _unsafe_folder(path: Path) -> tuple[Path, os.stat_result] | None:
    """The first folder from `path` up to '/' that another user could change, or None."""
    uid = os.getuid()
    for folder in (path, *path.parents):
        info = os.stat(folder)
        if info.st_uid not in (uid, 0):
            return folder, info
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            return folder, info
    return None


def _refuse(path: Path, what: str, problem: str, fix: str) -> PolicyError:
    return PolicyError(
        f"{what} {path} {problem}: another user could change what this host trusts",
        hint=f"{fix}; a file on a stick that cannot be chmod'ed (FAT) must be copied to a folder of your own first",
    )


def check_strict_modes(path: Path, what: str = "trusted key", info: os.stat_result | None = None) -> os.stat_result:
    """`path` is a regular file that only this user (or root) can have written, in folders only
    they can change; PolicyError (exit 4) naming the file and the chmod that fixes it otherwise.

    For the trust store, --trust FILE, and the recipes that decide which offline steps may run.
    """
    path = Path(path).absolute()
    if info is None:
        try:
            info = os.stat(path)
        except FileNotFoundError as exc:
            raise UsageError(f"no such file: {path}") from exc
        except OSError as exc:
            raise PolicyError(f"{what} {path} cannot be checked: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):  # never opened: a FIFO would block, a device would feed anything
        raise PolicyError(f"{what} {path} is not a regular file", hint="remove whatever is at that name and put the file itself there")
    if info.st_uid not in (os.getuid(), 0):
        raise _refuse(path, what, f"belongs to another user (uid {info.st_uid})", f"copy it to a file of your own, or `chown {os.getuid()} {path}`")
    if info.st_mode & 0o022:
        raise _refuse(path, what, f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})", f"run `chmod go-w {path}`")
    unsafe = _unsafe_folder(path.parent)
    if unsafe is not None:
        folder, folder_info = unsafe
        if folder_info.st_uid not in (os.getuid(), 0):
            raise _refuse(path, what, f"is in folder {folder}, which belongs to another user (uid {folder_info.st_uid})", "keep it in folders of your own")
        raise _refuse(path, what, f"is in folder {folder}, which group or others may write (mode {stat.S_IMODE(folder_info.st_mode):04o})", f"run `chmod go-w {folder}`")
    return info


def read_public_key_file(path: Path) -> Ed25519PublicKey:
    """A trusted public key, read only if only this user (or root) can have put it there."""
    path = Path(path).absolute()
    info = check_strict_modes(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PolicyError(f"trusted key {path} cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        opened = os.fstat(f.fileno())
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):  # swapped since it was checked
            raise PolicyError(f"trusted key {path} changed while it was read", hint="check who else writes there and retry")
        check_strict_modes(path, info=opened)
        data = f.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise UsageError(f"{path} is too large to be a public key")
    return load_public_key(data, source=str(path))


# --- key files: keygen and bundle --key ------------------------------------------------------


def _with_suffix(prefix: Path, suffix: str) -> Path:
    # Not Path.with_suffix: "site.v2" must give "site.v2.key", not "site.key".
    return prefix.with_name(prefix.name + suffix)


def write_keypair(prefix: Path, passphrase: bytes | None) -> str:
    """Write PREFIX.key (mode 0600) and PREFIX.pub; return the key id. Never overwrites."""
    prefix = Path(prefix)
    key_path, pub_path = _with_suffix(prefix, ".key"), _with_suffix(prefix, ".pub")
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise UsageError(f"{path} already exists; refusing to overwrite a key", hint="choose another name or move it away")
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
        os.fchmod(fd, mode)  # exactly this mode, whatever the umask took away or left
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
                raise UsageError(f"private key {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o})", hint=f"run `chmod 600 {path}`")
            data = f.read()
    except FileNotFoundError as exc:
        raise UsageError(f"no such key file: {path}") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{path} is a directory, not a key file") from exc
    except PermissionError as exc:
        raise UsageError(f"cannot read key file {path}: permission denied") from exc
    return load_private_key(data, passphrase, source=f"private key {path}")


def write_private_file(path: Path, data: bytes) -> None:
    """A secret (the web panel's token) readable by this user only, replaced whole: mode 0600 from its first byte."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    _create_exclusive(tmp, data, 0o600)
    os.replace(tmp, path)


# --- the trust store ---------------------------------------------------------------------------


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
        self._make_directory()
        if path.exists():
            return kid
        tmp = path.with_name(f".{kid}.pub.tmp{os.getpid()}")
        try:
            _create_exclusive(tmp, public_key_pem(public), 0o644)  # canonical PEM, not the caller's bytes
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return kid

    def _make_directory(self) -> None:
        """The folders it creates are 0755 whatever the umask: group- or world-writable ones would be refused."""
        missing = [d for d in (self.directory, *self.directory.parents) if not d.exists()]
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=0o755)
            except FileExistsError:
                continue
            os.chmod(folder, 0o755)

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
            raise UsageError(f"{prefix} matches {len(matches)} trusted keys: {', '.join(k for k, _ in matches)}", hint="give more digits of the key id")
        kid, path = matches[0]
        path.unlink()
        return kid

    def keys(self) -> list[Ed25519PublicKey]:
        """Every trusted key, each read as StrictModes allows and checked against the id its file is named by."""
        keys = []
        for kid, path in self.list():
            try:
                public = read_public_key_file(path)
            except UsageError as exc:
                raise ConfigError(f"trusted key file {path} cannot be read: {exc}") from exc
            if key_id(public) != kid:
                raise ConfigError(f"trusted key file {path} holds key {key_id(public)}, not the key its name says", hint="remove the file and add the key again")
            keys.append(public)
        return keys

    def _path(self, kid: str) -> Path:
        return self.directory / f"{kid}.pub"
