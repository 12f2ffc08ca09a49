"""Names from outside (manifests/names.py): identifiers, safe relative paths, record file names."""

from __future__ import annotations

import random

import pytest

from manifests.names import (
    STAGING_NAME,
    archive_member_path,
    is_identifier,
    pack_key,
    record_file_name,
    relative_path_problem,
    shared_path,
)


@pytest.mark.parametrize("text", ["sample", "ml_model", "whisper-model", "a", "0", "x" * 64])
def test_identifiers(text):
    assert is_identifier(text)


@pytest.mark.parametrize(
    "text",
    ["", "../x", "a/b", "/etc", ".", "..", "-rf", "_x", "Sample", "a.b", "a b", "a\x00", "a\n", "é", "x" * 65, 3, None],
)
def test_not_identifiers(text):
    assert not is_identifier(text)


@pytest.mark.parametrize("path", ["a", "a/b", "db/trivy.db", "é/ü", "a..b", "...", ".hidden/x", ".devops/x"])
def test_safe_relative_paths(path):
    assert relative_path_problem(path) is None


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("a\\b", "backslash"),
        ("a//b", "empty or '.'"),
        ("./a", "empty or '.'"),
        ("a/", "empty or '.'"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        ("a\x1b[2Jb", "control"),  # a terminal escape in a name shown in messages
        (f"{STAGING_NAME}/txn-x/files/a", "staging"),
        (".DEVOPS-CP-STAGING/x", "staging"),  # a data dir on a case-insensitive filesystem
        (".devops-cp-staging", "staging"),
    ],
)
def test_unsafe_relative_paths(path, words):
    assert words in relative_path_problem(path)


def test_archive_members_follow_the_same_rule_after_normalising():
    assert archive_member_path("./top/a", 1) == "a"
    assert archive_member_path("top\\a\\b", 1) == "a/b"  # written on Windows
    assert archive_member_path("top/", 1) is None
    for bad in ("../a", "/a", "a/../../b", "a\x00b", "a\nb", "a\\..\\b"):
        with pytest.raises(ValueError):
            archive_member_path(bad, 0)


def test_record_file_names_never_collide():
    """Distinct pack keys, whatever their bytes, get distinct file names that stay in the records folder."""
    rnd = random.Random(3)
    alphabet = "ab@=,._-/%\\\x00é.A"
    keys = {"".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 8))) for _ in range(20_000)}
    names = {record_file_name(k) for k in keys}
    assert len(names) == len(keys)
    for name in names:
        assert "/" not in name and "\x00" not in name and not name.startswith(".") and name.endswith(".json")


def test_record_file_names_of_ordinary_keys_are_unchanged():
    """Records written before keep their names: an installed pack is found again after an upgrade."""
    for key in ("trivy-db", "whisper-model@model_size=base.en", pack_key("geolite2", {"edition": "GeoLite2-City"})):
        assert record_file_name(key) == key + ".json"


@pytest.mark.parametrize(
    "files, folders, clash",
    [
        ({"a": ["/d/x", "/d/y/z"], "b": ["/d/x2", "/d/y/w"]}, {}, None),  # side by side in one folder: no clash
        ({"a": ["/d/x"], "b": ["/d/x"]}, {}, "/d/x is a file of both 'a' and 'b'"),
        ({"a": ["/d/x"], "b": ["/d/x/y"]}, {}, "/d/x is a file of 'a' and a folder of 'b'"),
        ({"a": ["/d/x/y"], "b": ["/d/x"]}, {}, "/d/x is a file of 'b' and a folder of 'a'"),
        ({"a": ["/d/q"]}, {"b": ["/d/q"]}, "/d/q is a file of 'a' and the folder 'b' unpacks an archive into"),
        ({"a": ["/d/q"]}, {"b": ["/d/q/r"]}, "/d/q is a file of 'a' and a folder of 'b'"),
        ({"a": ["/d/q/r"]}, {"b": ["/d/q"]}, None),  # known once b's archive is unpacked: checked then
        ({"a": [], "b": []}, {"a": ["/d/q"], "b": ["/d/q"]}, None),  # two archives into one folder: their members decide
        ({"a": ["/d/x", "/d/x/y"]}, {}, None),  # inside one pack: the manifest's own rule, not this one
    ],
)
def test_shared_path_finds_a_path_two_packs_claim(files, folders, clash):
    assert shared_path(files, folders) == clash
