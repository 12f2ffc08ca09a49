"""bundler/writer.py writes the tar stream itself: byte for byte what tarfile writes."""

from __future__ import annotations

import io
import random
import string
import tarfile

from bundler.writer import Member, TarWriter, header


def tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def test_every_header_is_the_one_tarfile_writes():
    rnd = random.Random(6)
    names = ["packs/a/x", "a" * 100, "a" * 101, "pâcks/é", "packs/" + "d/" * 47 + "f", "sp ace", "x"]
    names += ["".join(rnd.choice(string.ascii_letters + string.digits + "/._- ") for _ in range(rnd.randint(1, 120))) for _ in range(500)]
    sizes = [0, 1, 511, 512, 8**11 - 1, 8**11, 10**12]  # the last two need a pax size record
    for name in names:
        for size in sizes + [rnd.randint(0, 10**10)]:
            assert header(name, size) == tarfile_header(name, size), (name, size)


class Recording(io.BytesIO):
    flushes = 0

    def flush(self):
        self.flushes += 1


def test_the_stream_is_tarfiles_and_members_do_not_flush_the_compressor(tmp_path):
    files = {"packs/a/x.bin": bytes(range(256)) * 4, "packs/a/é/ü.txt": b"hello" * 3000, "packs/b/" + "long/" * 40 + "f": b"", "packs/c/z": b"z" * 512}
    members = []
    for number, (name, data) in enumerate(files.items()):
        path = tmp_path / str(number)
        path.write_bytes(data)
        members.append(Member(name, path, len(data)))
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("manifest.json", b"{}"), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out = Recording()
    writer = TarWriter(out)
    writer.add_bytes("manifest.json", b"{}")
    for member in members:
        writer.add(member, lambda n: None)
    writer.close()
    assert out.getvalue() == expected.getvalue()
    assert out.flushes == 0
