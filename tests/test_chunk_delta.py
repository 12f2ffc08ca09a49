"""The chunk round trip without a bundle around it: index the host's file, decide what to carry,
rebuild from the host's file and the carried member; and every lie in a recipe or an export refused."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random

import pytest

from bundler.delta import KEPT, WHOLE, decide
from executor.chunking import index_file
from executor.rebuild import rebuild
from manifests.chunk_format import (
    CARRIED,
    HOST,
    MAGIC,
    RecipeWriter,
    check_index,
    iter_index,
    read_recipe,
    recipe_size,
)
from manifests.errors import (
    BundleStructureError,
    ChecksumMismatch,
    PolicyError,
)
from manifests.hoststate import (
    CHUNKER_DOC,
    ExportError,
    HostFile,
    HostState,
    parse_export,
    to_json,
)


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def host_file(path) -> HostFile:
    found = index_file(path)
    return HostFile(path.name, found.size, found.sha256, found.index)


def Step(kind, offset, length, digest):
    return (kind, offset, length, digest)


def encode_recipe(steps) -> bytes:
    writer = RecipeWriter()
    for step in steps:
        writer.add(*step)
    return writer.encode()


def member_bytes(delivery) -> bytes:
    return delivery.recipe + delivery.spill.read_bytes()


@pytest.fixture
def pair(tmp_path):
    """An old file on the host and a new version on the builder, 1 MiB of 8 MiB changed in place."""
    old = noise(8 << 20, 1)
    new = bytearray(old)
    new[3 << 20 : 4 << 20] = noise(1 << 20, 2)
    (tmp_path / "host").mkdir()
    (tmp_path / "builder").mkdir()
    (tmp_path / "host" / "f.bin").write_bytes(old)
    (tmp_path / "builder" / "f.bin").write_bytes(bytes(new))
    return tmp_path / "host" / "f.bin", tmp_path / "builder" / "f.bin", bytes(new)


def test_index_file_gives_sha256_and_chunks_that_add_up(pair):
    old, _, _ = pair
    found = index_file(old)
    assert found.sha256 == hashlib.sha256(old.read_bytes()).hexdigest()
    chunks = list(iter_index(found.index))
    assert sum(length for length, _ in chunks) == found.size == 8 << 20
    assert len(chunks) > 100  # content-defined, not one chunk per file


def test_same_file_is_kept_and_no_host_means_whole(pair):
    old, _, _ = pair
    assert decide(old, old.stat().st_size, hashlib.sha256(old.read_bytes()).hexdigest(), host_file(old)) is KEPT
    assert decide(old, old.stat().st_size, "0" * 64, None) is WHOLE


def test_changed_file_carries_about_the_change_and_rebuilds_exactly(pair, tmp_path):
    old, staged, new = pair
    delivery = decide(staged, len(new), hashlib.sha256(new).hexdigest(), host_file(old))
    assert delivery.kind == "rebuilt"
    assert (1 << 20) <= delivery.member_size < (1 << 20) + (256 << 10)  # the changed MiB, its edge chunks and the recipe
    out = tmp_path / "out.bin"
    member = member_bytes(delivery)
    assert hashlib.sha256(member).hexdigest() == delivery.member_sha256
    copy = rebuild(str(out), old, io.BytesIO(member), size=len(new), sha256=hashlib.sha256(new).hexdigest(), base_size=old.stat().st_size, carried_size=len(member), what="p/f.bin")
    assert out.read_bytes() == new and copy.done == len(new)


def test_an_insertion_shifts_nothing_else(pair, tmp_path):
    old, staged, _ = pair
    data = old.read_bytes()
    new = data[: 5 << 20] + noise(1_000_003, 3) + data[5 << 20 :]
    staged.write_bytes(new)
    delivery = decide(staged, len(new), hashlib.sha256(new).hexdigest(), host_file(old))
    assert delivery.kind == "rebuilt" and delivery.member_size < 1_000_003 + (256 << 10)
    out = tmp_path / "out.bin"
    rebuild(str(out), old, io.BytesIO(member_bytes(delivery)), size=len(new), sha256=hashlib.sha256(new).hexdigest(), base_size=old.stat().st_size, carried_size=delivery.member_size, what="f")
    assert out.read_bytes() == new


def test_a_file_mostly_new_is_carried_whole(pair):
    old, staged, _ = pair
    new = noise(8 << 20, 9)
    staged.write_bytes(new)
    assert decide(staged, len(new), hashlib.sha256(new).hexdigest(), host_file(old)) is WHOLE


# --- hostile recipes: exit 3, nothing but the staging file written -------------------------------


def _rebuild(tmp_path, old, steps, carried=b"", *, size=None, sha256="0" * 64):
    member = encode_recipe(steps) + carried
    size = sum(s[2] for s in steps) if size is None else size
    return rebuild(str(tmp_path / "out"), old, io.BytesIO(member), size=size, sha256=sha256, base_size=old.stat().st_size, carried_size=len(member), what="p/f.bin")


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:16]


def test_a_recipe_that_reads_past_the_hosts_file_is_refused(pair, tmp_path):
    old, _, _ = pair
    size = old.stat().st_size
    with pytest.raises(BundleStructureError, match="reads past the end of the host's file") as caught:
        _rebuild(tmp_path, old, [Step(HOST, size - 100, 4096, b"\0" * 16)])
    assert caught.value.exit_code == 3
    assert not (tmp_path / "out").exists()


def test_a_chunk_whose_hash_lies_is_refused(pair, tmp_path):
    old, _, _ = pair
    with pytest.raises(BundleStructureError, match="chunk 0 from the host's file does not match its hash") as caught:
        _rebuild(tmp_path, old, [Step(HOST, 0, 4096, _hash(b"something else"))])
    assert caught.value.exit_code == 3
    with pytest.raises(BundleStructureError, match="chunk 1 from the bundle does not match"):
        data = old.read_bytes()[:4096]
        _rebuild(tmp_path, old, [Step(HOST, 0, 4096, _hash(data)), Step(CARRIED, 0, 5, _hash(b"hello"))], b"HELLO")


def test_a_rebuilt_file_larger_than_the_manifest_says_is_refused(pair, tmp_path):
    old, _, _ = pair
    data = old.read_bytes()
    steps = [Step(HOST, 0, 4096, _hash(data[:4096])), Step(HOST, 4096, 4096, _hash(data[4096:8192]))]
    with pytest.raises(BundleStructureError, match="builds 8192 bytes, the manifest says 4096") as caught:
        _rebuild(tmp_path, old, steps, size=4096)
    assert caught.value.exit_code == 3


def test_a_rebuilt_file_with_the_wrong_sha256_is_refused(pair, tmp_path):
    old, _, _ = pair
    data = old.read_bytes()
    with pytest.raises(ChecksumMismatch):
        _rebuild(tmp_path, old, [Step(HOST, 0, 4096, _hash(data[:4096]))], sha256="1" * 64)


def test_a_recipe_claiming_more_chunks_than_the_file_can_have_is_refused(pair, tmp_path):
    old, _, _ = pair
    member = MAGIC + (5_000_000).to_bytes(4, "big")
    with pytest.raises(BundleStructureError, match="claims 5000000 chunks"):
        read_recipe(io.BytesIO(member).read, size=4096, base_size=old.stat().st_size, carried_size=len(member), what="f")


def test_a_host_file_changed_while_rebuilding_is_refused(pair, tmp_path):
    old, staged, new = pair
    delivery = decide(staged, len(new), hashlib.sha256(new).hexdigest(), host_file(old))
    old.write_bytes(old.read_bytes()[: 1 << 20])  # shorter than the recipe needs
    with pytest.raises((PolicyError, BundleStructureError)):
        rebuild(str(tmp_path / "out"), old, io.BytesIO(member_bytes(delivery)), size=len(new), sha256="0" * 64, base_size=8 << 20, carried_size=delivery.member_size, what="f")


def test_truncated_carried_bytes_are_refused(pair, tmp_path):
    old, _, _ = pair
    steps = [Step(CARRIED, 0, 5, _hash(b"hello"))]
    member = encode_recipe(steps) + b"hel"
    with pytest.raises(BundleStructureError):
        rebuild(str(tmp_path / "out"), old, io.BytesIO(member), size=5, sha256="0" * 64, base_size=1, carried_size=recipe_size(1) + 5, what="f")


# --- the export: strict, bounded -----------------------------------------------------------------


def _doc_with_file(chunks: dict, size=1 << 20) -> bytes:
    return json.dumps({
        "export_format": 1, "tool_version": "1", "reads_manifest_formats": [1, 2, 3], "host": {"name": "h", "export_id": "x"},
        "created": "2026-01-01T00:00:00Z", "chunker": CHUNKER_DOC, "free_space": [], "gpus": [], "wants": [],
        "packs": [{"key": "p", "id": "p", "choices": {}, "data_type": "sample", "source": "s", "fetched_at": "2026-01-01T00:00:00Z",
                   "files": [{"path": "f.bin", "size": size, "sha256": "a" * 64, "chunks": chunks}]}],
    }).encode()  # fmt: skip


def test_an_export_claiming_millions_of_chunks_is_refused_before_decoding():
    with pytest.raises(BundleStructureError, match="claims 3000000 chunks") as caught:
        parse_export(_doc_with_file({"count": 3_000_000, "index": ""}))
    assert caught.value.exit_code == 3


def test_an_export_whose_chunks_do_not_add_up_is_refused():
    index = base64.b64encode((4096).to_bytes(4, "big") + b"\0" * 16).decode()
    with pytest.raises(BundleStructureError, match="do not add up"):
        parse_export(_doc_with_file({"count": 1, "index": index}))
    with pytest.raises(BundleStructureError, match="holds 20 bytes, 2 chunks need 40"):
        parse_export(_doc_with_file({"count": 2, "index": index}))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{not json", "not valid JSON"),
        (b'{"export_format": 1, "export_format": 1}', "duplicate key"),
        (b"[]", "must be a JSON object"),
        (b'{"export_format": 1}', "missing"),
        (b" " * (64 << 20) + b"{}", "more than the"),
    ],
)
def test_a_malformed_or_oversized_export_is_a_usage_error(data, message):
    with pytest.raises(ExportError, match=message) as caught:
        parse_export(data)
    assert caught.value.exit_code == 2


def test_an_export_with_an_unsafe_path_or_other_chunker_is_refused():
    doc = json.loads(_doc_with_file({"count": 0, "index": ""}, size=0))
    doc["packs"][0]["files"][0]["path"] = "../../etc/passwd"
    with pytest.raises(ExportError, match="not a relative path"):
        parse_export(json.dumps(doc).encode())
    doc = json.loads(_doc_with_file({"count": 0, "index": ""}, size=0))
    doc["chunker"] = {**CHUNKER_DOC, "avg": 8192}
    with pytest.raises(ExportError, match="other settings"):
        parse_export(json.dumps(doc).encode())


def test_an_export_round_trips(pair):
    old, _, _ = pair
    f = host_file(old)
    state = HostState("1", (1, 2, 3), "host-a", "e" * 32, "2026-01-01T00:00:00Z", (), {"sample": 10}, (), ())
    assert parse_export(to_json(state)) == state
    assert check_index(b"", 0, 0, "f") == b""
    assert f.chunks and os.path.getsize(old) == f.size
