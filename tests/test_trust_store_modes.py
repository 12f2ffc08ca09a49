"""Issue 18 rule 7: the trust store is only as trusted as its permissions (ssh's StrictModes).

Keys are read only from regular files owned by this user or root that group and others cannot
write, in folders they cannot write either; otherwise exit 4 naming the file and the chmod that
fixes it. A FIFO or device is never opened. `--trust FILE` gets the same checks, and `trust add`
writes what passes them whatever the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bundle_helpers import PackSpec, key_id, new_key, write_bundle, write_public_key

OTHER_UID = 54321


@pytest.fixture
def signed(tmp_path):
    key = new_key()
    built = write_bundle(tmp_path / "stick" / "out.tar.zst", [PackSpec("pack", {"a.bin": b"a" * 100})], key=key)
    return key, built.path


def _trusted_file(isolated_env, key) -> Path:
    folder = isolated_env.config_dir / "devops-cp" / "trusted-keys"
    folder.mkdir(parents=True, exist_ok=True)
    return write_public_key(folder / f"{key_id(key)}.pub", key)


def test_a_trusted_key_with_sane_modes_verifies(cli, isolated_env, signed):
    key, bundle = signed
    _trusted_file(isolated_env, key)
    result = cli("verify", str(bundle))
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_key_file_others_may_write_is_refused_with_the_chmod(cli, isolated_env, signed, mode):
    key, bundle = signed
    path = _trusted_file(isolated_env, key)
    os.chmod(path, mode)
    result = cli("verify", str(bundle))
    assert result.exit_code == 4, result.stderr
    assert str(path) in result.stderr and f"chmod go-w {path}" in result.stderr and "FAT" in result.stderr


def test_a_key_folder_others_may_write_is_refused(cli, isolated_env, signed):
    key, bundle = signed
    path = _trusted_file(isolated_env, key)
    os.chmod(path.parent, 0o777)
    result = cli("verify", str(bundle))
    assert result.exit_code == 4 and f"chmod go-w {path.parent}" in result.stderr


def test_a_sticky_world_writable_folder_above_is_fine(cli, isolated_env, signed, tmp_path):
    """Like /tmp: others may add names there but cannot replace ours."""
    key, bundle = signed
    sticky = tmp_path / "shared"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (sticky / "mine").mkdir()
    result = cli("verify", "--trust", str(write_public_key(sticky / "mine" / "site.pub", key)), str(bundle))
    assert result.exit_code == 0, result.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_of_another_user_is_refused(cli, isolated_env, signed):
    key, bundle = signed
    path = _trusted_file(isolated_env, key)
    os.chown(path, OTHER_UID, -1)
    result = cli("verify", str(bundle))
    assert result.exit_code == 4 and "another user" in result.stderr and str(path) in result.stderr


def test_a_fifo_in_the_trust_store_is_never_opened(cli, isolated_env, signed):
    """Opened for reading, a FIFO would block until someone writes a key into it."""
    key, bundle = signed
    folder = _trusted_file(isolated_env, key).parent
    fifo = folder / f"{key_id(new_key())}.pub"
    os.mkfifo(fifo)
    result = cli("verify", str(bundle))
    assert result.exit_code == 4 and "not a regular file" in result.stderr and str(fifo) in result.stderr
    with pytest.raises(OSError):  # no reader has it open: a writer that will not wait is turned away
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_device_given_with_trust_is_never_read(cli, signed):
    key, bundle = signed
    result = cli("verify", "--trust", "/dev/zero", str(bundle))
    assert result.exit_code == 4 and "/dev/zero is not a regular file" in result.stderr


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_trust_file_gets_the_same_checks(cli, signed, tmp_path, mode):
    key, bundle = signed
    pub = write_public_key(tmp_path / "site.pub", key)
    os.chmod(pub, mode)
    result = cli("verify", "--trust", str(pub), str(bundle))
    assert result.exit_code == 4 and f"chmod go-w {pub}" in result.stderr


def test_trust_add_writes_what_passes_whatever_the_umask(cli, isolated_env, signed, tmp_path):
    key, bundle = signed
    pub = write_public_key(tmp_path / "site.pub", key)
    old = os.umask(0)
    try:
        result = cli("trust", "add", str(pub))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    folder = isolated_env.config_dir / "devops-cp" / "trusted-keys"
    for path in (isolated_env.config_dir, folder.parent, folder, folder / f"{key_id(key)}.pub"):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o022, path
    assert cli("verify", str(bundle)).exit_code == 0
