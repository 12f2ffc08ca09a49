"""BundleReader.payload(): each member's bytes come straight from the tar stream, bounded by its size."""

from __future__ import annotations

import pytest

from bundle_helpers import PackSpec, Raw, build_manifest, bundle_members, new_key, write_bundle, write_tar_zst
from conftest import payload
from manifests import signing
from manifests.bundle import parse_manifest, to_json
from manifests.errors import BundleStructureError
from sideload.reader import BundleReader, locate

FILES = {"a.bin": payload(5000, seed=1), "b/c.bin": payload(70_000, seed=2), "empty": b"", "d.bin": payload(512, seed=3)}


def read_all(path, read_size: int) -> dict[str, bytes]:
    with BundleReader(locate(path)) as reader:
        manifest = parse_manifest(reader.read_header()[0])
        got = {}
        for entry, source in reader.payload(manifest):
            chunks = []
            while chunk := source.read(read_size):
                chunks.append(chunk)
            got[entry.path] = b"".join(chunks)
        reader.finish()
    return got


@pytest.mark.parametrize("read_size", [1, 511, 4096, 1 << 20, -1])
def test_each_member_reads_exactly_its_bytes_whatever_the_read_size(tmp_path, read_size):
    built = write_bundle(tmp_path / "b.tar.zst", [PackSpec("p", FILES)], key=new_key())
    assert read_all(built.path, read_size) == FILES


def test_a_member_cut_short_by_the_end_of_the_stream_is_a_structure_error(tmp_path):
    key = new_key()
    manifest, members = build_manifest([PackSpec("p", {"x.bin": payload(9000, seed=4)})], key=key)
    data = to_json(manifest)
    raws = bundle_members(data, signing.sign(key, data), members)
    raws[-1] = Raw(raws[-1].name, raws[-1].data[:3000], size=9000)  # the header keeps the declared size
    path = write_tar_zst(tmp_path / "cut.tar.zst", raws, end=False)
    with BundleReader(locate(path)) as reader:
        listed = parse_manifest(reader.read_header()[0])
        _, source = next(reader.payload(listed))
        assert source.read(2000) == members[0][1][:2000]
        with pytest.raises(BundleStructureError, match="truncated|damaged"):
            source.read(7000)
