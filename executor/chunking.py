"""Cutting a file into content-defined chunks: FastCDC 2020 through pyfastcdc's compiled chunker.

One read of the file gives its sha256 and every chunk's length and hash (manifests/chunk_format.py
says what those are); memory stays at the chunker's buffer whatever the file's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import pyfastcdc

from executor.events import Meter
from executor.transfer import HashingReader
from manifests.chunk_format import AVG_CHUNK, MAX_CHUNK, MIN_CHUNK, chunk_hash


@dataclass(frozen=True)
class FileChunks:
    size: int
    sha256: str
    chunks: list[tuple[int, bytes]]  # (length, hash) in file order


def _chunker() -> pyfastcdc.FastCDC:
    return pyfastcdc.FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)


def cut(stream: BinaryIO) -> Iterator[memoryview]:
    """Each chunk's bytes, valid until the next one is cut."""
    for chunk in _chunker().cut_stream(stream):
        yield chunk.data


def index_file(path: Path, meter: Meter | None = None) -> FileChunks:
    with open(path, "rb") as f:
        reader = HashingReader(f, meter, what=str(path))
        chunks = [(len(data), chunk_hash(data)) for data in cut(reader)]
        copy = reader.drain()
    return FileChunks(copy.done, copy.sha256, chunks)
