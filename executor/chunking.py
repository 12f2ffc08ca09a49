"""Cutting a file into content-defined chunks: FastCDC 2020 through pyfastcdc's compiled chunker.

One read of the file gives its sha256 and every chunk's length and hash (manifests/chunk_format.py
says what those are); memory stays at the chunker's buffer whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyfastcdc

from executor.events import Meter
from executor.transfer import HashingReader
from manifests.chunk_format import (
    AVG_CHUNK,
    MAX_CHUNK,
    MIN_CHUNK,
    chunk_hash,
    index_record,
)


@dataclass(frozen=True)
class FileChunks:
    size: int
    sha256: str
    index: bytes  # (length, hash) of each chunk in file order, encoded (manifests/chunk_format.py)


def _chunker() -> pyfastcdc.FastCDC:
    return pyfastcdc.FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)


def cut(stream: BinaryIO, meter: Meter | None = None) -> Iterator[memoryview]:
    """Each chunk's bytes, valid until the next one is cut; `meter` sees the bytes read."""
    for chunk in _chunker().cut_stream(stream if meter is None else _Metered(stream, meter)):
        yield chunk.data


class _Metered:
    """A file whose reads (the chunker's, a MiB or so each) report progress."""

    def __init__(self, raw: BinaryIO, meter: Meter):
        self.raw, self.meter, self.done = raw, meter, 0

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.done += n
        self.meter.update(self.done)
        return n


def index_file(path: Path, meter: Meter | None = None) -> FileChunks:
    with open(path, "rb") as f:
        reader = HashingReader(f, meter, what=str(path))
        index = bytearray()
        for data in cut(reader):
            index += index_record(len(data), chunk_hash(data))
        copy = reader.drain()
    return FileChunks(copy.done, copy.sha256, bytes(index))
