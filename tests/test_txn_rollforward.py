"""roll_forward (executor/txn.py) at the level of one transaction: new folders, a folder in the
way of a file, and a second run after a kill part-way through the renames."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from executor.config import Config, WriteSettings
from executor.store import InstallRecord, Store, now_iso
from executor.txn import JOURNAL, PackTransaction, move_into_place, roll_forward
from manifests.errors import PolicyError


@pytest.fixture
def store(tmp_path):
    return Store(Config(path=tmp_path / "config.toml"), state=tmp_path / "state")


def record(data_dir) -> InstallRecord:
    return InstallRecord(key="pack", pack_id="pack", label="Pack", data_type="generic", data_dir=str(data_dir), choices={}, files=[], source="test", installed_at=now_iso(), fetched_at=now_iso())


def stage(txn: PackTransaction, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        Path(txn.path_for(rel)).write_bytes(content)
        txn.add(rel, len(content), "0" * 64)


FILES = {"a/one": b"1", "a/b/two": b"22", "c/three": b"333", "top": b"4444"}


def test_commit_creates_new_folders_and_replaces_a_folder_in_the_way(tmp_path, store):
    """The previous version had a folder `top/` where this one has a file `top`."""
    data = tmp_path / "data"
    with PackTransaction(store, data, "pack") as txn:
        stage(txn, {"top/old/x": b"old"})
        txn.commit(record(data), None)
    with PackTransaction(store, data, "pack") as txn:
        stage(txn, FILES)
        txn.commit(record(data), store.read_record("pack"))
    assert {rel: (data / rel).read_bytes() for rel in FILES} == FILES
    assert sorted(r.path for r in store.read_record("pack").files) == sorted(FILES)
    assert not txn.root.exists()


@pytest.mark.parametrize("foreign", ["a user's file", "a link"])
def test_a_folder_in_the_way_holding_files_not_of_this_pack_is_refused_and_nothing_changes(tmp_path, store, foreign):
    data = tmp_path / "data"
    with PackTransaction(store, data, "pack") as txn:
        stage(txn, {"top/old/x": b"old"})
        txn.commit(record(data), None)
    if foreign == "a link":
        (data / "top" / "old" / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    else:
        (data / "top" / "notes.txt").write_text("mine")
    previous = store.read_record("pack")
    with pytest.raises(PolicyError, match="is a folder, and this version of pack has a file there"):
        with PackTransaction(store, data, "pack") as txn:
            stage(txn, FILES)
            txn.commit(record(data), previous)
    assert (data / "top" / "old" / "x").read_bytes() == b"old"
    assert not (data / "a").exists() and not txn.root.exists()
    assert store.read_record("pack").files == previous.files


def test_path_for_makes_each_folder_once_and_still_finds_new_ones(tmp_path, store):
    with PackTransaction(store, tmp_path / "data", "pack") as txn:
        assert Path(txn.path_for("a/b/c")).parent.is_dir()
        assert Path(txn.path_for("a/b/d")) == txn.files_root / "a/b/d"
        assert Path(txn.path_for("e/f")).parent.is_dir()
        assert Path(txn.path_for("top")) == txn.files_root / "top"


@pytest.mark.parametrize("moved", [0, 1, 3, 4])
def test_roll_forward_again_after_a_kill_part_way_finishes_the_same(tmp_path, store, moved):
    """A killed run moved the first `moved` files (and maybe made their folders); the next finishes."""
    data = tmp_path / "data"
    data.mkdir()
    txn = PackTransaction(store, data, "pack")
    stage(txn, FILES)
    rec = record(data)
    rec.files = sorted(txn.files.values(), key=lambda f: f.path)
    journal = {"key": "pack", "renames": sorted(txn.files), "remove": [], "record": rec.to_json()}
    (txn.root / JOURNAL).write_text(json.dumps(journal))
    for rel in sorted(FILES)[:moved]:
        move_into_place(str(txn.files_root / rel), str(data / rel))
    roll_forward(txn.root, data, store.write_record)
    assert {rel: (data / rel).read_bytes() for rel in FILES} == FILES
    assert not txn.root.exists()
    assert store.read_record("pack").files == rec.files


def test_move_into_place_when_the_staged_file_is_already_gone_does_nothing(tmp_path):
    final = tmp_path / "data" / "f"
    final.parent.mkdir()
    final.write_bytes(b"moved before the kill")
    move_into_place(str(tmp_path / "gone"), str(final))
    move_into_place(str(tmp_path / "gone"), str(tmp_path / "data" / "new-folder" / "g"))
    assert final.read_bytes() == b"moved before the kill"
    assert not (tmp_path / "data" / "new-folder" / "g").exists()


def test_an_update_whose_file_becomes_a_folder(tmp_path, store):
    """Version 1 has a file `a`; version 2 has `a/b` and no `a`: the old file makes way."""
    data = tmp_path / "data"
    with PackTransaction(store, data, "pack") as txn:
        stage(txn, {"a": b"v1", "keep": b"k"})
        txn.commit(record(data), None)
    previous = store.read_record("pack")
    with PackTransaction(store, data, "pack") as txn:
        stage(txn, {"a/b": b"v2", "keep": b"k2"})
        txn.commit(record(data), previous)
    assert (data / "a" / "b").read_bytes() == b"v2" and (data / "keep").read_bytes() == b"k2"
    assert sorted(r.path for r in store.read_record("pack").files) == ["a/b", "keep"]


def _renames_into(monkeypatch, data) -> list[tuple[str, str]]:
    """Every os.replace into `data` from the staging area's files/ (not the journal's, not the record's)."""
    seen, real = [], os.replace

    def replace(src, dst, *a, **k):
        if "/files/" in str(src) and str(dst).startswith(str(data)):
            seen.append((str(src), os.path.relpath(dst, data)))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_a_new_top_level_folder_moves_in_with_one_rename(tmp_path, store, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "c").mkdir()  # already there: its files move one by one
    renames = _renames_into(monkeypatch, data)
    with PackTransaction(store, data, "pack") as txn:
        stage(txn, FILES)
        txn.commit(record(data), None)
    assert {rel: (data / rel).read_bytes() for rel in FILES} == FILES
    assert sorted(dst for _, dst in renames) == ["a", "c/three", "top"]
    assert sorted(r.path for r in store.read_record("pack").files) == sorted(FILES)


def test_a_tool_step_staging_area_moves_file_by_file_and_leaves_its_strays(tmp_path, store):
    """A tool may leave files it does not declare: only recorded files become visible."""
    data = tmp_path / "data"
    with PackTransaction(store, data, "pack") as txn:
        stage(txn, FILES)
        (txn.files_root / "a" / "tool.log").write_text("not part of the pack")
        txn.only_recorded_files = False
        txn.commit(record(data), None)
    assert {rel: (data / rel).read_bytes() for rel in FILES} == FILES
    assert not (data / "a" / "tool.log").exists()


def test_a_plain_commit_fsyncs_each_file_and_the_folders_to_move(tmp_path, store, monkeypatch):
    from executor import durable

    synced = []
    monkeypatch.setattr(durable, "fsync_path", lambda path: synced.append(path))
    data = tmp_path / "data"
    with PackTransaction(store, data, "pack", writes=WriteSettings(plain=True)) as txn:
        stage(txn, FILES)
        txn.commit(record(data), None)
        root = txn.files_root
    staged = {Path(p) for p in synced if Path(p).is_relative_to(root)}  # not the journal's, record's or data dir's
    assert staged == {root / rel for rel in FILES} | {root / "a", root / "a/b", root / "c"}


def _journaled(store, data, files=FILES) -> PackTransaction:
    """A transaction staged and journaled as commit() does, stopped before roll_forward."""
    txn = PackTransaction(store, data, "pack")
    stage(txn, files)
    rec = record(data)
    rec.files = sorted(txn.files.values(), key=lambda f: f.path)
    journal = txn._journal(None, txn._new_folders(), set())
    (txn.root / JOURNAL).write_text(json.dumps({**journal, "record": rec.to_json()}))
    return txn


def test_roll_forward_after_a_kill_right_after_the_folder_rename(tmp_path, store):
    data = tmp_path / "data"
    data.mkdir()
    txn = _journaled(store, data)
    os.replace(txn.files_root / "a", data / "a")  # the killed run got this far
    roll_forward(txn.root, data, store.write_record)
    assert {rel: (data / rel).read_bytes() for rel in FILES} == FILES
    assert not txn.root.exists()


def test_a_folder_that_appears_after_the_journal_is_merged_into_file_by_file(tmp_path, store):
    data = tmp_path / "data"
    data.mkdir()
    txn = _journaled(store, data)
    (data / "a").mkdir()
    (data / "a" / "mine").write_text("a user's file, put there meanwhile")
    roll_forward(txn.root, data, store.write_record)
    assert {rel: (data / rel).read_bytes() for rel in FILES} == FILES
    assert (data / "a" / "mine").read_text() == "a user's file, put there meanwhile"
    assert not txn.root.exists()


@pytest.mark.parametrize("writes, syncfs_calls, files_fsynced", [
    (WriteSettings(), 1, False),  # the one filesystem sync per pack, before its swap
    (WriteSettings(plain=True), 0, True),  # one fsync per staged file instead
    (WriteSettings(durable=False), 0, False),  # the benchmark's unsafe `no sync` rows
    (WriteSettings(durable=False, plain=True), 0, False),
])
def test_durability_is_the_engines_parameter(tmp_path, store, monkeypatch, writes, syncfs_calls, files_fsynced):
    from executor import durable

    syncfs, fsynced = [], []
    monkeypatch.setattr(durable, "syncfs", lambda path: syncfs.append(path) or True)
    monkeypatch.setattr(durable, "fsync_path", lambda path: fsynced.append(Path(path)))
    data = tmp_path / "data"
    with PackTransaction(store, data, "pack", writes=writes) as txn:
        stage(txn, FILES)
        root = txn.files_root
        txn.commit(record(data), None)
    assert len(syncfs) == syncfs_calls
    files = {root / rel for rel in FILES}
    assert set(fsynced) & files == (files if files_fsynced else set())
    assert {rel: (data / rel).read_bytes() for rel in FILES} == FILES
