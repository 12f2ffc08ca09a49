"""Issue 18 rule 2: recovery reads a journal left in a staging area as untrusted input.

A journal may act only inside the data directory whose staging area holds it, for a data type
this host's config or records put there, on canonical paths below it. A planted one (anything
that could write into the staging area could leave it) is ignored with a warning, never acted
on; the next command of any kind (here `status`, which recovers every known data dir) shows it.
"""

from __future__ import annotations

import json

import pytest

from bundle_helpers import Untouched, is_state_lock
from executor.store import STAGING_NAME, FileRecord, InstallRecord, now_iso
from executor.txn import JOURNAL


def _plant(where, *, renames=(), remove=(), files=(), **record_fields) -> None:
    """A journal as commit() writes one into `where`'s staging area, with what the test changes in it, and its staged files."""
    txn = where / STAGING_NAME / "txn-planted-0000beef"
    for rel in renames:
        staged = txn / "files" / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(b"planted " + rel.encode())
    fields = dict(key="pack", pack_id="pack", label="P", data_type="sample", data_dir=str(where), choices={}, source="test", installed_at=now_iso(), fetched_at=now_iso())
    fields.update(record_fields)
    record = InstallRecord(files=[FileRecord(p, 1, "0" * 64) for p in (files or renames)], **fields)
    doc = {"key": record.key, "folders": [], "renames": list(renames), "remove": list(remove), "record": record.to_json()}
    txn.mkdir(parents=True, exist_ok=True)
    (txn / JOURNAL).write_text(json.dumps(doc))


@pytest.fixture
def victim(isolated_env):
    """The user's own files, beside and above the data dirs."""
    isolated_env.sample_dir().mkdir(parents=True)
    secret = isolated_env.home / ".ssh" / "authorized_keys"
    secret.parent.mkdir(parents=True)
    secret.write_text("ssh-ed25519 AAAA the user's own key\n")
    (isolated_env.sample_dir() / "notes.txt").write_text("mine\n")
    return secret


def _expected(path: str) -> bool:
    """Recovery may tidy the planted staging area away and make its lock: nothing else may change."""
    return STAGING_NAME in path or is_state_lock(path)


@pytest.mark.parametrize(
    ("plant", "why"),
    [
        (dict(remove=["../../../../.ssh/authorized_keys"], renames=["ok.bin"]), "not all plain paths"),
        (dict(remove=["notes.txt"], renames=["ok.bin"], data_dir="{home}/.ssh"), "names data directory"),
        (dict(renames=["../../../../.ssh/authorized_keys"]), "not all plain paths"),
        (dict(renames=[".devops-cp-staging/x"]), "not all plain paths"),
        (dict(renames=["ok.bin"], files=["../../escape"]), "not all plain paths"),
        (dict(remove=["notes.txt"], renames=["ok.bin"], data_type="fonts"), "puts data type 'fonts'"),
        (dict(renames=["ok.bin"], data_type="../x"), "not a name this tool writes"),
        (dict(renames=["ok.bin"], key="other"), "not a name this tool writes"),
    ],
    ids=["remove-escapes", "record-elsewhere", "rename-escapes", "rename-into-staging", "record-file-escapes", "another-data-type", "data-type-path", "key-not-its-id"],
)
def test_a_planted_journal_is_ignored_with_a_warning(cli, isolated_env, victim, plant, why):
    plant = {k: v.format(home=isolated_env.home) if isinstance(v, str) else v for k, v in plant.items()}
    _plant(isolated_env.sample_dir(), **plant)
    home = Untouched(isolated_env.home.parent)  # HOME and what is beside it
    result = cli("status")
    assert result.exit_code == 0, result.stderr
    assert "ignored the journal" in result.stderr and why in result.stderr
    assert home.changes(ignore=_expected) == []  # nothing acted on: no file moved, removed or recorded
    assert not (isolated_env.sample_dir() / STAGING_NAME).exists()  # the planted staging area itself is tidied away


def test_a_journal_this_tool_wrote_is_still_rolled_forward(cli, isolated_env, victim):
    _plant(isolated_env.sample_dir(), renames=["ok.bin"])
    result = cli("status")
    assert result.exit_code == 0 and "ignored" not in result.stderr
    assert (isolated_env.sample_dir() / "ok.bin").read_bytes() == b"planted ok.bin"
    assert isolated_env.record("pack")["files"][0]["path"] == "ok.bin"
    assert victim.read_text() == "ssh-ed25519 AAAA the user's own key\n"
