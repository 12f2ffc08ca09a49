"""An archive that a pack unpacks, carried in the bundle as its files, never unpacked to disk.

Bundling a pack of 20,000 small files used to extract them into the staging cache, read
them back into the bundle and delete them: 60,000 file operations for nothing the bundle
needs. Instead the verified archive is staged whole; a first walk hashes its members for
the manifest (which comes first in the bundle), and a second walk copies them into the
bundle, where each is checked against the first. Both walks are extraction's own
(executor/extract.py): the same refusals, the same paths a direct install would create.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from executor.extract import ArchiveItem, iter_archive
from executor.transfer import Copy, file_chunks
from executor.txn import KeptArchive
from manifests.errors import UnsafeArchiveError


class UnpackedArchive:
    def __init__(self, kept: KeptArchive):
        self.kept = kept
        self._second_walk: Iterator[ArchiveItem] | None = None

    def _walk(self) -> Iterator[ArchiveItem]:
        kept = self.kept
        return iter_archive(kept.path, kept.fmt, strip=kept.strip, max_total=kept.max_total)

    def _rel(self, member: str) -> str:
        return f"{self.kept.dest}/{member}"

    def files(self) -> list[tuple[str, int, str]]:
        """The first walk: (path in the pack, size, sha256) of every file, in archive order."""
        found = []
        for member, size, source in self._walk():
            copy = Copy(None, what=f"{self.kept.path.name}:{member}", limit=size).feed(file_chunks(source, size + 1))
            copy.check(None, size)
            found.append((self._rel(member), size, copy.sha256))
        return found

    def copy_next(self, rel: str, out: BinaryIO) -> Copy:
        """The second walk, one file per call, in the first walk's order: `rel`'s bytes into `out`."""
        if self._second_walk is None:
            self._second_walk = self._walk()
        item = next(self._second_walk, None)
        if item is None or self._rel(item[0]) != rel:
            raise UnsafeArchiveError(f"{self.kept.path.name} changed in the staging cache while it was being bundled", hint="run the bundle again")
        _, size, source = item
        return Copy(out, what=rel, limit=size).feed(file_chunks(source, size + 1))

    def close(self) -> None:
        if self._second_walk is not None:
            self._second_walk.close()
