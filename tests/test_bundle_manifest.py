"""The bundle manifest and parts index: models, strict JSON, pure verification.

Everything here runs on bytes in memory, except the interoperability tests,
which hand files in tmp_path to openssl and sha256sum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

import manifests.codec as codec
import manifests.trust as trust
from manifests.bundle import (
    BundleManifest,
    FileEntry,
    PackEntry,
    PartEntry,
    PartsIndex,
    Unpack,
    format_timestamp,
    parse_manifest,
    parse_parts_index,
    part_name,
    parts_index_name,
    sha256sum_lines,
    to_json,
    verify_manifest,
    verify_parts_index,
)
from manifests.errors import BundleStructureError, PolicyError, SignatureError
from manifests.signing import generate_keypair, key_id, public_key_pem, sign
from manifests.steps import ToolCommand

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
H1, H2, H3 = (hashlib.sha256(s).hexdigest() for s in (b"one", b"two", b"three"))


@pytest.fixture(scope="module")
def pair():
    return generate_keypair()


@pytest.fixture(scope="module")
def stranger():
    return generate_keypair()


def make_manifest(signer: str | None = None, expires: str | None = "2024-07-01T00:00:00Z") -> BundleManifest:
    whisper = PackEntry(
        key="whisper-model@model_size=base",
        id="whisper-model",
        label="Whisper — base",  # non-ASCII on purpose
        data_type="ml_model",
        choices={"model_size": "base"},
        update_schedule="manual",
        fetched_at="2024-05-30T08:00:00Z",
        offline_steps=(),
        source="https://openaipublic.azureedge.net/main/whisper/models/base.pt",
        checksum_verified=True,
        tool_hint="whisper downloads it otherwise",
    )
    trivy = PackEntry(
        key="trivy-db",
        id="trivy-db",
        label="Trivy vulnerability DB",
        data_type="vulnerability_db",
        choices={},
        update_schedule="daily",
        fetched_at="2024-05-31T23:59:59+00:00",
        offline_steps=(ToolCommand(command=("trivy", "--version")),),
        source="oci://ghcr.io/aquasecurity/trivy-db:2",
        checksum_verified=False,
        tool_hint="",
    )
    return BundleManifest(
        bundle_id="7f3c9a",
        created="2024-05-31T00:00:00Z",
        expires=expires,
        tool_version="0.1.0",
        signer_key_id=signer,
        packs=(whisper, trivy),
        files=(
            FileEntry("whisper-model@model_size=base", "base.pt", 3, H1, "data/0001"),
            FileEntry("trivy-db", "db/trivy.db", 5, H2, "data/0002"),
            FileEntry("trivy-db", "db/metadata.json", 7, H3, "data/0003"),
        ),
    )


def doc() -> dict:
    return json.loads(to_json(make_manifest()))


def dumps(d) -> bytes:
    return json.dumps(d).encode()


# --- model and JSON round trip ------------------------------------------------------


def test_round_trip():
    m = make_manifest(signer="ab" * 32)
    assert parse_manifest(to_json(m)) == m


def with_archive(m: BundleManifest, unpack: Unpack = Unpack("tar.gz", 1, 1_000_000)) -> BundleManifest:
    archive = FileEntry("trivy-db", "db/vulns", 11, H1, "archives/trivy-db/db/vulns.tar.gz", unpack)
    return dataclasses.replace(m, files=(*m.files, archive))


@pytest.mark.parametrize("unpack", [Unpack("tar.gz", 1, 1_000_000), Unpack("zip"), Unpack("tar", 0, None)])
def test_an_archive_to_unpack_round_trips(unpack):
    m = with_archive(make_manifest(), unpack)
    data = to_json(m)
    assert parse_manifest(data) == m
    assert json.loads(data)["files"][-1]["unpack"] == {"format": unpack.format, "strip_components": unpack.strip_components, "unpacked_size_bytes": unpack.unpacked_size_bytes}
    assert "unpack" not in json.loads(data)["files"][0]  # plain files are written as before


def test_an_archive_folder_may_hold_other_files_but_not_sit_under_one():
    m = with_archive(make_manifest())
    beside = dataclasses.replace(m, files=(*m.files, FileEntry("trivy-db", "db/vulns/README", 1, H2, "data/0009")))
    assert parse_manifest(to_json(beside)) == beside  # a clash inside the folder is extraction's to refuse
    under_a_file = dataclasses.replace(m, files=(*m.files[:-1], dataclasses.replace(m.files[-1], path="db/trivy.db/vulns")))
    with pytest.raises(BundleStructureError, match="is a file and also the directory"):
        to_json(under_a_file)


@pytest.mark.parametrize(
    ("unpack", "field", "problem"),
    [
        ({"format": "rar", "strip_components": 0, "unpacked_size_bytes": None}, "files[3].unpack.format", "must be one of tar, tar.gz"),
        ({"format": "tar", "strip_components": -1, "unpacked_size_bytes": None}, "files[3].unpack.strip_components", "at least 0"),
        ({"format": "tar", "strip_components": 0, "unpacked_size_bytes": "1"}, "files[3].unpack.unpacked_size_bytes", "must be an integer"),
        ({"format": "tar", "strip_components": 0}, "files[3].unpack.unpacked_size_bytes", "missing"),
        ({"format": "tar", "strip_components": 0, "unpacked_size_bytes": None, "run": "sh"}, "files[3].unpack.run", "unknown field"),
        ("tar", "files[3].unpack", "must be a JSON object"),
    ],
)
def test_an_archive_with_a_bad_unpack_is_refused(unpack, field, problem):
    d = json.loads(to_json(with_archive(make_manifest())))
    d["files"][3]["unpack"] = unpack
    with pytest.raises(BundleStructureError) as err:
        parse_manifest(dumps(d))
    assert f"field '{field}'" in str(err.value) and problem in str(err.value)


def test_a_version_1_manifest_carries_no_archive_to_unpack():
    d = json.loads(to_json(with_archive(make_manifest())))
    d["format_version"] = 1
    with pytest.raises(BundleStructureError, match="version 1 manifests carry no archives"):
        parse_manifest(dumps(d))
    del d["files"][3]
    assert parse_manifest(dumps(d)).format_version == 1  # bundles made before archives travelled whole are still read


def test_to_json_is_deterministic_sorted_utf8_with_newline():
    data = to_json(make_manifest())
    assert data == to_json(make_manifest())
    assert data.endswith(b"}\n")
    assert "Whisper — base".encode() in data  # UTF-8, not \u escapes
    top = json.loads(data)
    assert list(top) == sorted(top)
    assert list(top["files"][0]) == sorted(top["files"][0])


def test_to_json_writes_one_file_per_line_and_the_same_json_as_the_indent_encoder():
    m = make_manifest()
    data = to_json(m)
    indented = json.dumps(json.loads(data), sort_keys=True, ensure_ascii=False, indent=2, allow_nan=False)
    assert json.loads(data) == json.loads(indented)
    lines = data.decode().splitlines()
    entries = [line for line in lines if line.lstrip().startswith('{"member"')]
    assert len(entries) == len(m.files)
    assert all(line.startswith("    {") for line in entries)


def test_a_file_line_is_what_json_writes():
    rnd = random.Random(5)
    alphabet = 'ab/.é"\\\u2028\U0001f600\x7f\x1f\t'
    for _ in range(500):
        entry = {key: "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for key in ("pack_key", "path", "sha256", "member")}
        entry["size"] = rnd.choice([0, 1, 2**63, 10**30])
        assert codec._file_line(entry) == json.dumps(entry, sort_keys=True, ensure_ascii=False)


def test_files_share_their_pack_key_string_and_have_no_dict():
    """20,000 files in one pack: one key string, no per-entry __dict__ (the model stays small)."""
    m = parse_manifest(to_json(make_manifest()))
    trivy = next(p for p in m.packs if p.key == "trivy-db")
    assert all(f.pack_key is trivy.key for f in m.files_for("trivy-db"))
    assert not hasattr(m.files[0], "__dict__")


def test_to_json_keeps_every_file_after_validating_them():
    assert len(json.loads(to_json(make_manifest()))["files"]) == 3


def test_total_size_and_files_for():
    m = make_manifest()
    assert m.total_size == 15
    assert [f.path for f in m.files_for("trivy-db")] == ["db/trivy.db", "db/metadata.json"]
    assert m.files_for("nope") == ()


def test_empty_bundle_is_valid():
    m = dataclasses.replace(make_manifest(), packs=(), files=())
    assert parse_manifest(to_json(m)) == m and m.total_size == 0


def test_same_path_in_two_packs_is_fine():
    d = doc()
    d["files"][0]["path"] = "db/trivy.db"
    assert parse_manifest(dumps(d)).files[0].path == "db/trivy.db"


def test_to_json_refuses_what_parse_would_refuse():
    m = make_manifest()
    bad = dataclasses.replace(m, files=(dataclasses.replace(m.files[0], path="../../.bashrc"),))
    with pytest.raises(BundleStructureError, match=r"files\[0\]\.path.*'\.\.'"):
        to_json(bad)


def test_format_timestamp():
    cest = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2024, 5, 1, 14, 0, 7, 999, tzinfo=cest)) == "2024-05-01T12:00:07Z"
    with pytest.raises(ValueError):
        format_timestamp(datetime(2024, 5, 1))


# --- refusals: every one names its field --------------------------------------------


def _set(path, value):
    def edit(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value

    return edit


REFUSALS = [
    # (edit, field the message names, words in the problem)
    (_set(["format_version"], 4), "format_version", "newer devops-cp"),
    (_set(["format_version"], "1"), "format_version", "must be an integer"),
    (_set(["format_version"], True), "format_version", "must be an integer"),
    (_set(["format_version"], KeyError), "format_version", "missing"),
    (_set(["surprise"], 1), "surprise", "unknown field"),
    (_set(["bundle_id"], KeyError), "bundle_id", "missing"),
    (_set(["bundle_id"], ""), "bundle_id", "must not be empty"),
    (_set(["tool_version"], 1), "tool_version", "must be a string"),
    (_set(["signer_key_id"], "AB" * 32), "signer_key_id", "64 lowercase hex"),
    (_set(["created"], "yesterday"), "created", "ISO 8601"),
    (_set(["created"], "2024-05-31T00:00:00"), "created", "UTC"),
    (_set(["expires"], "2024-05-30T00:00:00Z"), "expires", "later than 'created'"),
    (_set(["packs"], {}), "packs", "must be an array"),
    (_set(["packs", 0], []), "packs[0]", "must be a JSON object"),
    (_set(["packs", 1, "key"], "whisper-model@model_size=base"), "packs[1].key", "duplicate pack key"),
    (_set(["packs", 0, "checksum_verified"], "yes"), "packs[0].checksum_verified", "true or false"),
    (_set(["packs", 0, "checksum_verified"], 1), "packs[0].checksum_verified", "true or false"),
    (_set(["packs", 0, "choices", "model_size"], 3), "packs[0].choices.model_size", "to a string"),
    (_set(["packs", 0, "choices"], ["base"]), "packs[0].choices", "must be a JSON object"),
    (_set(["packs", 0, "fetched_at"], "2024-05-30T08:00:00+02:00"), "packs[0].fetched_at", "UTC"),
    (_set(["packs", 1, "offline_steps"], ["trivy --version"]), "packs[1].offline_steps[0]", "JSON object"),
    (_set(["packs", 0, "data_type"], ""), "packs[0].data_type", "must not be empty"),
    (_set(["packs", 0, "extra"], 1), "packs[0].extra", "unknown field"),
    (_set(["files", 0, "pack_key"], "ghost"), "files[0].pack_key", "names no pack"),
    (_set(["files", 0, "size"], -1), "files[0].size", "at least 0"),
    (_set(["files", 0, "size"], 1.5), "files[0].size", "must be an integer"),
    (_set(["files", 0, "size"], "3"), "files[0].size", "must be an integer"),
    (_set(["files", 0, "size"], True), "files[0].size", "must be an integer"),
    (_set(["files", 0, "sha256"], H1.upper()), "files[0].sha256", "64 lowercase hex"),
    (_set(["files", 0, "sha256"], H1[:-1]), "files[0].sha256", "64 lowercase hex"),
    (_set(["files", 0, "sha256"], "sha256:" + H1), "files[0].sha256", "64 lowercase hex"),
    (_set(["files", 0, "sha256"], H1 + "\n"), "files[0].sha256", "64 lowercase hex"),
    (_set(["signer_key_id"], "ab" * 32 + "\n"), "signer_key_id", "64 lowercase hex"),
    (_set(["files", 2, "path"], "db/trivy.db"), "files[2].path", "duplicate path"),
    (_set(["files", 2, "member"], "data/0002"), "files[2].member", "duplicate archive member"),
    (_set(["files", 0, "member"], "manifest.json"), "files[0].member", "reserved"),
    (_set(["files", 0, "member"], "manifest.json.sig"), "files[0].member", "reserved"),
    (_set(["files", 0, "member"], "../0001"), "files[0].member", "'..'"),
    (_set(["files", 2, "path"], "db/trivy.db/x"), "files", "is a file and also the directory"),
    (_set(["files"], None), "files", "must be an array, got null"),
]


@pytest.mark.parametrize(("edit", "field", "problem"), REFUSALS)
def test_refusals_name_the_field(edit, field, problem):
    d = doc()
    edit(d)
    with pytest.raises(BundleStructureError) as err:
        trust.check_manifest(parse_manifest(dumps(d)))  # the strict parse, then the document's own rules
    message = str(err.value)
    assert f"field '{field}'" in message
    assert problem in message
    assert err.value.exit_code == 3


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "must not be empty"),
        ("/etc/passwd", "absolute"),
        ("../x", "'..'"),
        ("a/../../b", "'..'"),
        ("..", "'..'"),
        ("a\\b", "backslash"),
        ("..\\..\\x", "backslash"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("a//b", "empty or '.'"),
        ("./a", "empty or '.'"),
        ("a/", "empty or '.'"),
        (".", "empty or '.'"),
        (7, "must be a string"),
    ],
)
def test_unsafe_paths_refused(path, problem):
    d = doc()
    d["files"][1]["path"] = path
    with pytest.raises(BundleStructureError, match=r"field 'files\[1\]\.path'") as err:
        parse_manifest(dumps(d))
    assert problem in str(err.value)


FILE_VARIANTS = [
    ("path", v) for v in ["db/x", "a b/ü.json", "..x/.y", "x..", "...", "a/./b", "a//b", "/a", "a/", "a\\b", "a\x7fb", "a\tb", "", ".", "..", 7, None]
] + [
    ("member", v) for v in ["data/9", "manifest.json", "manifest.json.sig", "a/manifest.json", "tool/x.whl", "../m", "m/..", ""]
] + [
    ("size", v) for v in [0, 10**20, -1, True, 1.0, "1", None]
] + [
    ("sha256", v) for v in [H3, H3 + "\n", H3.upper(), H3[:-1], "", 0]
] + [
    ("pack_key", v) for v in ["trivy-db", "ghost", "", "trivy-db\n", 1]
] + [("extra", 1), ("size", KeyError), ("member", KeyError)]


@pytest.mark.parametrize(("field", "value"), FILE_VARIANTS)
def test_files_read_in_one_go_or_field_by_field_alike(field, value, monkeypatch):
    """_well_formed_file (the shortcut for entries as the bundler writes them) accepts nothing
    that _file_from_doc refuses, and reads what it accepts the same way."""
    d = doc()
    _set(["files", 2, field], value)(d)

    def outcome():
        try:
            return parse_manifest(dumps(d))
        except BundleStructureError as err:
            return str(err)

    shortcut = outcome()
    monkeypatch.setattr(codec, "_well_formed_file", lambda item, pack_keys: None)
    assert shortcut == outcome()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"format_version": 1, "format_version": 1}', "duplicate key 'format_version'"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object, got an array"),
        (b'{"format_version": NaN}', "NaN is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "cannot be read as JSON"),
        (b'{"format_version": 1' + b"0" * 5000 + b"}", "cannot be read as JSON"),
    ],
)
def test_unreadable_documents_refused(data, problem):
    with pytest.raises(BundleStructureError, match=problem):
        parse_manifest(data)


def test_duplicate_key_in_nested_object_refused():
    data = to_json(make_manifest()).replace(b'"member": "data/0001",', b'"member": "data/0001", "member": "x/y",', 1)
    assert data != to_json(make_manifest())
    with pytest.raises(BundleStructureError, match="duplicate key 'member'"):
        parse_manifest(data)


# --- verify_manifest: signature first, then parse, then policy ----------------------


def signed(pair, manifest=None) -> tuple[bytes, bytes]:
    private, public = pair
    data = to_json(manifest or make_manifest(signer=key_id(public)))
    return data, sign(private, data)


def test_verify_signed_manifest(pair, stranger):
    data, sig = signed(pair)
    trusted = [stranger[1], pair[1]]
    manifest, signer = verify_manifest(data, sig, trusted, allow_unsigned=False, now=NOW, allow_expired=False)
    assert signer == key_id(pair[1]) == manifest.signer_key_id
    assert manifest == parse_manifest(data)


def test_one_changed_byte_fails(pair):
    data, sig = signed(pair)
    for i in range(0, len(data), 7):
        tampered = data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1 :]
        with pytest.raises(SignatureError):
            verify_manifest(tampered, sig, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)


def test_one_changed_byte_says_invalid_signature(pair):
    data, sig = signed(pair)
    tampered = data.replace(b'"size": 3', b'"size": 4')
    with pytest.raises(SignatureError, match="invalid signature") as err:
        verify_manifest(tampered, sig, [pair[1]], allow_unsigned=True, now=NOW, allow_expired=True)
    assert err.value.exit_code == 3


def test_untrusted_signer_fails_and_is_named(pair, stranger):
    data, sig = signed(stranger)
    with pytest.raises(SignatureError, match=f"signed by key {key_id(stranger[1])}, which is not trusted"):
        verify_manifest(data, sig, [pair[1]], allow_unsigned=True, now=NOW, allow_expired=True)


def test_signature_of_another_manifest_fails(pair):
    data, _ = signed(pair)
    other = make_manifest(signer=key_id(pair[1]))
    _, other_sig = signed(pair, dataclasses.replace(other, bundle_id="another"))
    with pytest.raises(SignatureError, match="invalid signature"):
        verify_manifest(data, other_sig, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)


def test_signature_checked_before_parsing(pair, stranger, monkeypatch):
    """Unverified bytes never reach the parser: garbage with a bad signature is a signature failure."""

    def must_not_parse(data):
        raise AssertionError("parsed before the signature verified")

    monkeypatch.setattr(trust, "parse_manifest", must_not_parse)
    data, sig = signed(stranger)
    with pytest.raises(SignatureError):
        verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)
    with pytest.raises(SignatureError):
        verify_manifest(b'{"a": 1, "a": 2}', sig, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)


def test_signed_but_malformed_manifest_is_still_refused(pair):
    private, public = pair
    data = b'{"format_version": 1, "format_version": 1}'
    with pytest.raises(BundleStructureError, match="duplicate key"):
        verify_manifest(data, sign(private, data), [public], allow_unsigned=False, now=NOW, allow_expired=False)


def test_manifest_naming_another_signer_is_refused(pair, stranger):
    data, sig = signed(pair, make_manifest(signer=key_id(stranger[1])))
    with pytest.raises(SignatureError, match=f"names signer key {key_id(stranger[1])} but was signed by trusted key"):
        verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)
    data, sig = signed(pair, make_manifest(signer=None))
    with pytest.raises(SignatureError, match="names no signer key"):
        verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)


def test_unsigned_refused_by_policy_unless_allowed(pair):
    data = to_json(make_manifest())
    with pytest.raises(PolicyError, match="not signed") as err:
        verify_manifest(data, None, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)
    assert err.value.exit_code == 4
    assert "--allow-unsigned" in str(err.value)
    manifest, signer = verify_manifest(data, None, [], allow_unsigned=True, now=NOW, allow_expired=False)
    assert signer is None and manifest.bundle_id == "7f3c9a"


def test_stripped_signature_is_called_out(pair):
    data, _ = signed(pair)
    with pytest.raises(PolicyError, match=f"names signer key {key_id(pair[1])}: its signature may have been removed"):
        verify_manifest(data, None, [pair[1]], allow_unsigned=False, now=NOW, allow_expired=False)


def test_bad_signature_is_not_excused_by_allow_unsigned(pair):
    data, sig = signed(pair)
    with pytest.raises(SignatureError):
        verify_manifest(data + b" ", sig, [pair[1]], allow_unsigned=True, now=NOW, allow_expired=True)
    with pytest.raises(SignatureError, match="malformed signature: 0 bytes"):
        verify_manifest(data, b"", [pair[1]], allow_unsigned=True, now=NOW, allow_expired=True)


def test_expired_refused_by_policy_unless_allowed(pair):
    data, sig = signed(pair)
    later = datetime(2024, 7, 1, tzinfo=timezone.utc)  # the moment it expires
    with pytest.raises(PolicyError, match="expired at 2024-07-01T00:00:00Z") as err:
        verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=later, allow_expired=False)
    assert err.value.exit_code == 4
    assert "--allow-expired" in str(err.value)
    manifest, _ = verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=later, allow_expired=True)
    assert manifest.expires == "2024-07-01T00:00:00Z"
    just_before = later - timedelta(seconds=1)
    verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=just_before, allow_expired=False)


def test_no_expiry_never_expires(pair):
    data, sig = signed(pair, make_manifest(signer=key_id(pair[1]), expires=None))
    far = datetime(2999, 1, 1, tzinfo=timezone.utc)
    assert verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=far, allow_expired=False)[0].expires is None


def test_now_must_be_aware(pair):
    data, sig = signed(pair)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_manifest(data, sig, [pair[1]], allow_unsigned=False, now=datetime(2024, 6, 1), allow_expired=False)


# --- parts index --------------------------------------------------------------------


def make_index(signer: str | None = None) -> PartsIndex:
    return PartsIndex(
        bundle_name="out.tar.zst",
        parts=(PartEntry("out.tar.zst.001", 10, H1), PartEntry("out.tar.zst.002", 4, H2)),
        total_size=14,
        signer_key_id=signer,
    )


def test_part_names():
    assert part_name("out.tar.zst", 1) == "out.tar.zst.001"
    assert part_name("out.tar.zst", 1234) == "out.tar.zst.1234"
    assert parts_index_name("out.tar.zst") == "out.tar.zst.parts.json"


def test_parts_index_round_trip():
    index = make_index(signer="cd" * 32)
    data = to_json(index)
    assert data.endswith(b"\n") and data == to_json(make_index(signer="cd" * 32))
    assert parse_parts_index(data) == index


def index_doc() -> dict:
    return json.loads(to_json(make_index()))


PARTS_REFUSALS = [
    (_set(["format_version"], 9), "format_version", "not supported"),
    (_set(["bundle_name"], "../out.tar.zst"), "bundle_name", "plain file name"),
    (_set(["bundle_name"], "dir\\out.tar.zst"), "bundle_name", "plain file name"),
    (_set(["parts"], []), "parts", "at least one part"),
    (_set(["parts", 0, "name"], "out.tar.zst.002"), "parts[0].name", "must be named 'out.tar.zst.001'"),
    (_set(["parts", 1, "name"], "/etc/passwd"), "parts[1].name", "must be named"),
    (_set(["parts", 0, "size"], 0), "parts[0].size", "at least 1"),
    (_set(["parts", 0, "sha256"], "x"), "parts[0].sha256", "64 lowercase hex"),
    (_set(["parts", 0, "extra"], 1), "parts[0].extra", "unknown field"),
    (_set(["total_size"], 15), "total_size", "add up to 14"),
    (_set(["total_size"], -14), "total_size", "at least 0"),
    (_set(["signer_key_id"], "nope"), "signer_key_id", "key id"),
]


@pytest.mark.parametrize(("edit", "field", "problem"), PARTS_REFUSALS)
def test_parts_index_refusals(edit, field, problem):
    d = index_doc()
    edit(d)
    with pytest.raises(BundleStructureError) as err:
        parse_parts_index(dumps(d))
    assert f"field '{field}'" in str(err.value) and problem in str(err.value)


def test_parts_index_duplicate_keys_refused():
    data = to_json(make_index()).replace(b'"total_size": 14', b'"total_size": 14, "total_size": 14')
    with pytest.raises(BundleStructureError, match="duplicate key 'total_size'"):
        parse_parts_index(data)


def test_verify_parts_index(pair, stranger):
    private, public = pair
    data = to_json(make_index(signer=key_id(public)))
    sig = sign(private, data)
    index, signer = verify_parts_index(data, sig, [public], allow_unsigned=False)
    assert signer == key_id(public) and index.total_size == 14
    with pytest.raises(SignatureError, match="invalid signature"):
        # Change the size field only: a blind replace could also hit the random key id.
        verify_parts_index(data.replace(b'"total_size": 14', b'"total_size": 15'), sig, [public], allow_unsigned=False)
    with pytest.raises(SignatureError, match="not trusted"):
        verify_parts_index(data, sig, [stranger[1]], allow_unsigned=False)
    with pytest.raises(PolicyError, match="--allow-unsigned"):
        verify_parts_index(data, None, [public], allow_unsigned=False)
    assert verify_parts_index(data, None, [], allow_unsigned=True)[1] is None


# --- sha256sum ----------------------------------------------------------------------


def test_sha256sum_lines_format():
    assert sha256sum_lines([("out.tar.zst.001", H1), ("out.tar.zst.002", H2)]) == (
        f"{H1}  out.tar.zst.001\n{H2}  out.tar.zst.002\n"
    )
    assert sha256sum_lines([]) == ""


@pytest.mark.parametrize(("name", "digest"), [("a\nb", H1), ("a/b", H1), ("x", H1.upper()), ("", H1)])
def test_sha256sum_lines_refuses_what_sha256sum_cannot_read(name, digest):
    with pytest.raises(BundleStructureError):
        sha256sum_lines([(name, digest)])


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum is not on PATH")
def test_sha256sum_check_accepts_our_lines(tmp_path):
    entries = []
    for name, body in (("out.tar.zst.001", b"first part"), ("out.tar.zst.002", b"second")):
        (tmp_path / name).write_bytes(body)
        entries.append((name, hashlib.sha256(body).hexdigest()))
    (tmp_path / "SHA256SUMS").write_text(sha256sum_lines(entries))
    subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, check=True, capture_output=True)


# --- OpenSSL interoperability (DECISIONS "Signatures") ------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH: cannot check interoperability")
def test_openssl_verifies_our_manifest_signature(tmp_path, pair):
    private, public = pair
    data, sig = signed(pair)
    (tmp_path / "manifest.json").write_bytes(data)
    (tmp_path / "manifest.json.sig").write_bytes(sig)
    (tmp_path / "site.pub").write_bytes(public_key_pem(public))
    command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "site.pub", "-rawin",
               "-in", "manifest.json", "-sigfile", "manifest.json.sig"]  # fmt: skip

    ok = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Signature Verified Successfully" in ok.stdout

    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0x01
    (tmp_path / "manifest.json").write_bytes(bytes(tampered))
    bad = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "Signature Verification Failure" in bad.stdout + bad.stderr

