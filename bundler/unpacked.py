"""An archive that a pack unpacks, carried in the bundle as its files, never unpacked to disk.

Bundling a pack of 20,000 small files used to extract them into the staging cache, read
them back into the bundle and delete them: 60,000 file operations for nothing the bundle
needs. Instead the verified archive is staged whole; a first walk hashes its members for
the manifest (which comes first in the bundle), and a second pass copies them into the
bundle, where each is checked against the first. The first walk is extraction's own
(executor/extract.py): the same refusals, the same paths a direct install would create.

The second pass of an uncompressed tar reads each member's bytes where the first walk found
them, without parsing the headers again; a compressed tar or a zip is walked again.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

from executor.extract import ArchiveItem, iter_archive, member_chunks
from executor.transfer import Copy
from executor.txn import KeptArchive
from manifests.errors import UnsafeArchiveError


READ_BUFFER = 1 << 20  # the members lie one after the other: most seeks land in the buffer


class UnpackedArchive:
    def __init__(self, kept: KeptArchive):
        self.kept = kept
        self._second_walk: Iterator[ArchiveItem] | None = None
        # Uncompressed tar only: (path in the pack, offset in the tar, size) of every file, in the
        # first walk's order, and how many of them the second pass has copied.
        self._spans: list[tuple[str, int, int]] | None = [] if kept.fmt == "tar" else None
        self._copied = 0
        self._tar: BinaryIO | None = None

    def _walk(self) -> Iterator[ArchiveItem]:
        kept = self.kept
        return iter_archive(kept.path, kept.fmt, strip=kept.strip, max_total=kept.max_total)

    def _rel(self, member: str) -> str:
        return f"{self.kept.dest}/{member}"

    def _changed(self) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.kept.path.name} changed in the staging cache while it was being bundled", hint="run the bundle again")

    def files(self) -> list[tuple[str, int, str]]:
        """The first walk: (path in the pack, size, sha256) of every file, in archive order."""
        found = []
        for member, size, source in self._walk():
            rel = self._rel(member)
            copy = Copy(None, what=f"{self.kept.path.name}:{member}", limit=size).feed(member_chunks(source, size + 1))
            copy.check(None, size)
            found.append((rel, size, copy.sha256))
            if self._spans is not None:
                self._spans.append((rel, source.tar_offset, size))
        return found

    def copy_next(self, rel: str, out: BinaryIO) -> Copy:
        """The second pass, one file per call, in the first walk's order: `rel`'s bytes into `out`.

        The caller checks the copy against the first walk's hash and size."""
        if self._spans is not None:
            return self._copy_span(rel, out)
        if self._second_walk is None:
            self._second_walk = self._walk()
        item = next(self._second_walk, None)
        if item is None or self._rel(item[0]) != rel:
            raise self._changed()
        _, size, source = item
        return Copy(out, what=rel, limit=size).feed(member_chunks(source, size + 1))

    def _copy_span(self, rel: str, out: BinaryIO) -> Copy:
        """`rel`'s bytes from where the first walk found them in the tar: no header parsed twice."""
        if self._copied >= len(self._spans) or self._spans[self._copied][0] != rel:
            raise self._changed()
        _, offset, size = self._spans[self._copied]
        self._copied += 1
        if self._tar is None:
            self._tar = open(self.kept.path, "rb", buffering=READ_BUFFER)
        self._tar.seek(offset)
        copy = Copy(out, what=rel, limit=size).feed(member_chunks(self._tar, size))
        if copy.done != size:  # the tar got shorter since the first walk
            raise self._changed()
        return copy

    def close(self) -> None:
        if self._second_walk is not None:
            self._second_walk.close()
        if self._tar is not None:
            self._tar.close()
