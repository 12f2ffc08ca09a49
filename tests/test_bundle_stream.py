"""Bundling a pack whose downloads the recipe pins (sha256 and exact size): its bytes go
from the server straight into the archive, never through the staging cache, and the
bundle is the same as a staged one would be: verified on the way, resumed after a drop,
refused (with nothing named OUT left behind) when the bytes are not what the recipe pins.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from bundler import build
from conftest import download_step, files_under, fresh_host, gets, payload, read_manifest, sha256
from support.localserver import Fault
from executor.http import Download



@pytest.fixture
def key(keygen_key) -> Path:
    return keygen_key


@pytest.fixture
def no_staged_download(monkeypatch):
    """Fails the test if any download goes through a partial file (the staged path); counts the live ones."""
    live = []
    original = Download.stream_into

    def staged(self, *args, **kwargs):
        raise AssertionError(f"{self.url} was staged, not streamed into the archive")

    def streamed(self, out, expected):
        live.append(self.url)
        return original(self, out, expected)

    monkeypatch.setattr(Download, "run", staged)
    monkeypatch.setattr(Download, "stream_into", streamed)
    return live


def members(bundle: Path) -> dict[str, bytes]:
    with open(bundle, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        with tarfile.open(fileobj=io.BytesIO(reader.read()), mode="r:") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar}


def bundle(cli, key: Path, out: Path, *packs: str):
    return cli("bundle", *packs, "-o", str(out), "--key", str(key), "--progress", "none")


def test_a_pinned_pack_goes_straight_into_the_archive(cli, key, serve_pack, isolated_env, tmp_path, no_staged_download):
    data = payload(3_000_000)
    url = serve_pack("model", data, size_exact=True)
    out = tmp_path / "out" / "b.tar.zst"
    out.parent.mkdir()
    result = bundle(cli, key, out, "model")
    assert result.exit_code == 0, result.stderr
    assert no_staged_download == [url]
    assert members(out)["packs/model/model/model.bin"] == data
    manifest = read_manifest(out)
    assert [(f["path"], f["size"], f["sha256"]) for f in manifest["files"]] == [("model/model.bin", len(data), sha256(data))]
    assert manifest["packs"][0]["source"] == url
    assert files_under(build.staging_dir()) == []


def test_the_streamed_bundle_sideloads_on_another_host(cli, key, serve_pack, tmp_path, monkeypatch):
    data = payload(2_500_000, seed=7)
    serve_pack("model", data, size_exact=True)
    out = tmp_path / "out" / "b.tar.zst"
    out.parent.mkdir()
    assert bundle(cli, key, out, "model").exit_code == 0
    fresh_host(monkeypatch, tmp_path / "airgapped")
    result = cli("sideload", str(out), "--trust", str(key.with_suffix(".pub")), "--progress", "none")
    assert result.exit_code == 0, result.stderr
    installed = tmp_path / "airgapped" / "home" / ".local" / "share" / "devops-cp" / "samples" / "model" / "model.bin"
    assert installed.read_bytes() == data


def test_a_dropped_connection_resumes_inside_the_archive(cli, key, serve_pack, local_server, tmp_path, no_staged_download):
    data = payload(4_000_000, seed=3)
    url = serve_pack("model", data, size_exact=True)
    local_server.set_fault("/packs/model.bin", Fault(drop_after=1_500_000))
    out = tmp_path / "b.tar.zst"
    result = bundle(cli, key, out, "model")
    assert result.exit_code == 0, result.stderr
    assert members(out)["packs/model/model/model.bin"] == data
    requests = gets(local_server, "/packs/model.bin")
    assert len(requests) == 2 and requests[1].headers.get("range") == "bytes=1500000-"
    assert no_staged_download == [url]


def test_a_server_that_ignores_range_still_gives_the_right_bytes(cli, key, serve_pack, local_server, tmp_path, no_staged_download):
    data = payload(3_000_000, seed=4)
    serve_pack("model", data, size_exact=True)
    local_server.set_fault("/packs/model.bin", Fault(drop_after=1_000_000, ignore_range=True))
    out = tmp_path / "b.tar.zst"
    result = bundle(cli, key, out, "model")
    assert result.exit_code == 0, result.stderr
    assert members(out)["packs/model/model/model.bin"] == data


def test_bytes_that_are_not_what_the_recipe_pins_leave_no_bundle(cli, key, local_server, write_recipe, tmp_path):
    data = payload(2_000_000, seed=5)
    url = local_server.add("/packs/model.bin", data)
    write_recipe("model", [download_step(url, "model/model.bin", data, checksum="sha256:" + "0" * 64, size_exact=True)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = bundle(cli, key, out_dir / "b.tar.zst", "model")
    assert result.exit_code == 3, result.stderr
    assert "checksum" in result.stderr.lower()
    assert list(out_dir.iterdir()) == []
    assert files_under(build.staging_dir()) == []


def test_a_longer_body_than_pinned_is_refused(cli, key, local_server, write_recipe, tmp_path):
    data = payload(1_000_000, seed=6)
    url = local_server.add("/packs/model.bin", data + b"more")
    write_recipe("model", [download_step(url, "model/model.bin", data, size_exact=True)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = bundle(cli, key, out_dir / "b.tar.zst", "model")
    assert result.exit_code == 3, result.stderr
    assert list(out_dir.iterdir()) == []


def test_only_the_largest_pinned_pack_streams_the_others_are_staged(cli, key, serve_pack, local_server, write_recipe, tmp_path, monkeypatch):
    big, small, unpinned = payload(3_000_000, seed=8), payload(500_000, seed=9), payload(300_000, seed=10)
    big_url = serve_pack("big", big, size_exact=True)
    serve_pack("small", small, size_exact=True)
    serve_pack("loose", unpinned, checksum=False)
    live = []
    original = Download.stream_into
    monkeypatch.setattr(Download, "stream_into", lambda self, out, expected: live.append(self.url) or original(self, out, expected))
    out = tmp_path / "b.tar.zst"
    result = bundle(cli, key, out, "small", "big", "loose")
    assert result.exit_code == 0, result.stderr
    assert live == [big_url]
    got = members(out)
    assert got["packs/big/big/big.bin"] == big and got["packs/small/small/small.bin"] == small and got["packs/loose/loose/loose.bin"] == unpinned
    manifest = read_manifest(out)
    assert [f["pack_key"] for f in manifest["files"]] == ["small", "big", "loose"]  # the order the packs were asked for
    assert {f["sha256"] for f in manifest["files"]} == {hashlib.sha256(d).hexdigest() for d in (big, small, unpinned)}


def test_a_streamed_pack_needs_no_room_in_the_staging_cache(cli, key, serve_pack, tmpfs, tmp_path, monkeypatch):
    data = payload(3_000_000, seed=11)
    serve_pack("model", data, size_exact=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmpfs("1m")))  # the staging cache: a third of the pack
    out = tmp_path / "b.tar.zst"
    result = bundle(cli, key, out, "model")
    assert result.exit_code == 0, result.stderr
    assert members(out)["packs/model/model/model.bin"] == data


def test_a_pack_that_must_be_staged_is_still_refused_when_the_cache_is_too_small(cli, key, serve_pack, tmpfs, tmp_path, monkeypatch):
    serve_pack("loose", payload(3_000_000, seed=12), checksum=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmpfs("1m")))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = bundle(cli, key, out_dir / "b.tar.zst", "loose")
    assert result.exit_code == 5, result.stderr
    assert list(out_dir.iterdir()) == []
