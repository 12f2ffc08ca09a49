"""Writes the archive: tar stream -> zstd -> parts on disk, each part hashed as it is written.

Layout: `manifest.json`, `manifest.json.sig`, then every payload member in manifest
order, so a reader can check the signature before it reads any payload.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import zstandard

from executor import durable
from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME, PartEntry, part_name

ZSTD_LEVEL = 3
TAR_COPY_BUFFER = 1 << 20
ZSTD_JOB_SIZE = 2 << 20  # bounds the compressor's memory (see write_archive)


class PartWriter:
    """A write-only file that becomes OUT (or OUT.001, OUT.002, ... of at most `split_size` bytes).

    Parts are written under temporary names and renamed only by `finish()`, so a failed
    bundle never leaves something that looks like a bundle.
    """

    def __init__(self, out: Path, split_size: int | None):
        self.out = out
        self.split_size = split_size
        self.parts: list[PartEntry] = []
        self._tmp_paths: list[Path] = []
        self._file: BinaryIO | None = None
        self._hasher = hashlib.sha256()
        self._size = 0

    def _final_name(self, number: int) -> str:
        return part_name(self.out.name, number) if self.split_size else self.out.name

    def _open_next(self) -> None:
        self._close_current()
        tmp = self.out.with_name(f".{self._final_name(len(self.parts) + 1)}.tmp")
        self._tmp_paths.append(tmp)
        self._file = open(tmp, "wb")
        self._hasher, self._size = hashlib.sha256(), 0

    def _close_current(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self.parts.append(PartEntry(self._final_name(len(self.parts) + 1), self._size, self._hasher.hexdigest()))

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            if self._file is None or (self.split_size and self._size >= self.split_size):
                self._open_next()
            room = len(view) if not self.split_size else min(len(view), self.split_size - self._size)
            piece = view[:room]
            self._file.write(piece)
            self._hasher.update(piece)
            self._size += room
            view = view[room:]
        return len(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def finish(self) -> list[PartEntry]:
        self._close_current()
        for tmp, part in zip(self._tmp_paths, self.parts):
            os.replace(tmp, self.out.with_name(part.name))
        durable.fsync_dir(self.out.parent)
        return self.parts

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        for tmp in self._tmp_paths:
            tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Member:
    name: str
    path: Path
    size: int


class _Metered:
    """Reports bytes as tarfile reads a staged file into the archive."""

    def __init__(self, raw: BinaryIO, on_bytes: Callable[[int], None]):
        self.raw, self.on_bytes = raw, on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.on_bytes(len(data))
        return data


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0  # reproducible: the manifest carries the times that matter
    return info


def write_archive(
    out: Path,
    manifest: bytes,
    signature: bytes | None,
    members: list[Member],
    *,
    split_size: int | None = None,
    level: int = ZSTD_LEVEL,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> list[PartEntry]:
    parts = PartWriter(out, split_size)
    try:
        # Every core compresses, in jobs of ZSTD_JOB_SIZE: libzstd's default job at level 3 is
        # several MiB and its worker pool then holds about 110 MiB; 2 MiB jobs hold about 30.
        params = zstandard.ZstdCompressionParameters.from_level(level, threads=-1, job_size=ZSTD_JOB_SIZE, write_checksum=True)
        compressor = zstandard.ZstdCompressor(compression_params=params)
        with compressor.stream_writer(parts, closefd=False) as zst:
            # Plain 'w' mode, not the stream mode 'w|': tar writes straight into the compressor.
            # The stream mode's buffer copies what it holds on every write (re-slicing it into
            # bufsize blocks, or appending a 512-byte header to up to a whole buffer): ~50 copies
            # of each MiB at its default 10 KiB, ~1 MiB copied per small file at 1 MiB.
            # 'w' asks the file object only for tell() (0 here) and writes the same bytes.
            with tarfile.open(fileobj=zst, mode="w:", format=tarfile.PAX_FORMAT) as tar:
                tar.copybufsize = TAR_COPY_BUFFER
                tar.addfile(_info(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
                if signature is not None:
                    tar.addfile(_info(SIGNATURE_NAME, len(signature)), io.BytesIO(signature))
                for member in members:
                    with open(member.path, "rb") as raw:
                        tar.addfile(_info(member.name, member.size), _Metered(raw, on_bytes))
        return parts.finish()
    except BaseException:
        parts.abort()
        raise
