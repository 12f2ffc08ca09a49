"""bundler/stream_walk.py: extraction's walk of an archive fed chunk by chunk from another thread."""

from __future__ import annotations

import io
import queue
import random

import pytest
import zstandard

from bundler.stream_walk import StreamWalk, Tee, _QueueReader
from conftest import make_tar_gz
from manifests.errors import LengthError, UnsafeArchiveError

MEMBERS = [("top/", "dir"), ("top/a.json", b'{"a": 1}' * 300), ("top/sub/b.bin", random.Random(1).randbytes(300_000)), ("top/empty", b"")]


def chunked(data: bytes, seed: int = 0):
    rnd, at = random.Random(seed), 0
    while at < len(data):
        size = rnd.choice([1, 7, 512, 4096, 65_536, 300_000])
        yield data[at : at + size]
        at += size


def test_the_queue_reader_returns_what_a_file_would():
    data = random.Random(2).randbytes(100_000)
    chunks: queue.Queue = queue.Queue()
    for chunk in chunked(data, seed=3):
        chunks.put(chunk)
    chunks.put(None)
    reader, got = _QueueReader(chunks), []
    for size in [0, 1, 10, 4096, 70_000, 50_000, 10]:
        piece = reader.read(size)
        assert len(piece) == min(size, len(data) - sum(map(len, got)))  # exactly `size`, short only at the end
        got.append(piece)
    assert b"".join(got) == data and reader.read(5) == b"" and reader.read() == b""


@pytest.mark.parametrize("fmt, mode", [("tar", "w"), ("tar.gz", "w:gz"), ("tar.xz", "w:xz"), ("tar.zst", None)])
def test_the_walk_finds_every_file_whatever_the_chunks(fmt, mode):
    tar = make_tar_gz(MEMBERS, fmt="w") if mode is None else make_tar_gz(MEMBERS, fmt=mode)
    data = zstandard.ZstdCompressor().compress(tar) if fmt == "tar.zst" else tar
    out = io.BytesIO()
    walk = StreamWalk(fmt, strip=1, max_total=None, name="db")
    tee = Tee(out, walk)
    for chunk in chunked(data, seed=5):
        tee.write(chunk)
    assert walk.finish() == ["a.json", "sub/b.bin", "empty"]
    assert out.getvalue() == data  # the bundle gets every byte, unchanged


def test_a_refusal_stops_the_feeding():
    """The feeder can run at most the walk's read-ahead plus the queue ahead of the walk, which records its refusal before it drains."""
    hostile = make_tar_gz([("top/../../escape", b"x"), ("top/after", random.Random(4).randbytes(20_000_000))], fmt="w")
    pieces = [hostile[at : at + 65_536] for at in range(0, len(hostile), 65_536)]
    walk = StreamWalk("tar", strip=1, max_total=None, name="db")
    fed = 0
    with pytest.raises(UnsafeArchiveError, match="outside"):
        for piece in pieces:
            walk.feed(piece)
            fed += 1
    assert fed * 65_536 <= (1 << 20) + (StreamWalk.QUEUE + 2) * 65_536  # long before the end
    walk.abandon()
    assert not walk.thread.is_alive()


def test_the_bound_on_what_it_unpacks_to_holds():
    walk = StreamWalk("tar", strip=1, max_total=1000, name="db")
    for chunk in chunked(make_tar_gz(MEMBERS, fmt="w")):
        try:
            walk.feed(chunk)
        except LengthError:
            break
    with pytest.raises(LengthError, match="more than the 1000 bytes"):
        walk.finish()


def test_a_cut_archive_is_damage():
    tar = make_tar_gz(MEMBERS, fmt="w")
    walk = StreamWalk("tar", strip=1, max_total=None, name="db")
    for chunk in chunked(tar[:5000]):
        walk.feed(chunk)
    with pytest.raises(UnsafeArchiveError, match="damaged"):
        walk.finish()


def test_a_download_that_fails_leaves_no_thread_behind():
    walk = StreamWalk("tar", strip=0, max_total=None, name="db")
    walk.feed(make_tar_gz(MEMBERS, fmt="w")[:1000])
    walk.abandon()  # no more bytes will come
    assert not walk.thread.is_alive()
