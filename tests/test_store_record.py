"""Install record files (executor/store.py): written without json's slow indent mode, read back
exactly, and the older indent=2 files still load."""

from __future__ import annotations

import json

import pytest

from executor.config import Config
from executor.store import FileRecord, InstallRecord, Store


@pytest.fixture
def store(tmp_path):
    return Store(Config(path=tmp_path / "config.toml"), state=tmp_path / "state")


def record(files) -> InstallRecord:
    return InstallRecord(
        key="pack/v=1", pack_id="pack", label='A "files": [] label', data_type="generic", data_dir="/data",
        choices={"files": "x"}, files=files, source="bundle:1", installed_at="2026-01-01T00:00:00Z",
        fetched_at="2026-01-01T00:00:00Z", extra={"files": [], "nested": {"a": [1, 2]}},
    )


ODD_FILES = [
    FileRecord("db/plain.bin", 0, "0" * 64),
    FileRecord('db/quote"and\\backslash', 12, "a" * 64),
    FileRecord("db/ünïcode 文件\ttab\nnewline", 2**40, "b" * 64),
]


@pytest.mark.parametrize("files", [[], ODD_FILES], ids=["no-files", "odd-names"])
def test_a_written_record_reads_back_equal_and_matches_the_plain_encoding(store, files):
    rec = record(files)
    store.write_record(rec)
    assert store.read_record(rec.key) == rec
    text = store._record_path(rec.key).read_text(encoding="utf-8")
    assert json.loads(text) == json.loads(json.dumps(rec.to_json(), indent=2, sort_keys=True))
    if files:  # readable: one file per line
        assert sum(line.lstrip().startswith('{"path": ') for line in text.splitlines()) == len(files)


def test_a_record_file_written_by_the_older_indent_format_still_loads(store):
    rec = record(ODD_FILES)
    store.records_dir.mkdir(parents=True)
    old = {**rec.to_json(), "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in rec.files]}
    store._record_path(rec.key).write_text(json.dumps(old, indent=2, sort_keys=True), encoding="utf-8")
    assert store.read_record(rec.key) == rec


def test_to_json_is_a_fresh_dict_with_the_files_as_plain_dicts():
    rec = record(ODD_FILES)
    data = rec.to_json()
    data["choices"]["files"] = "changed"
    assert rec.choices == {"files": "x"}
    assert data["files"][1] == {"path": 'db/quote"and\\backslash', "size": 12, "sha256": "a" * 64}
    assert InstallRecord.from_json(json.loads(json.dumps(data))).files == ODD_FILES


def test_file_records_have_no_per_instance_dict():
    assert not hasattr(FileRecord("a", 1, "c" * 64), "__dict__")
