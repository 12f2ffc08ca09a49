"""Walking a tar archive while its download is still writing it.

A bundle keeps a pack's archive whole and needs every member's sha256 for its manifest
before it writes a payload byte (bundler/unpacked.py). Walking the archive after the
download means reading it all a second time, after the last byte came in; walking it as it
arrives, on a second core, makes that walk cost (almost) nothing more than the download.

The follower reads the partial file as it grows and hashes every byte it reads. Its walk
counts only if that hash equals the verified download's: then it walked exactly the bytes
that were verified, whatever happened meanwhile (a resume, a restart from zero). Otherwise,
or if anything went wrong, the caller walks the finished file as before, which also gives
any refusal its usual words.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import BinaryIO

from executor.extract import MemberDigest, digest_members, iter_tar_stream
from manifests.errors import DataPackError

POLL = 0.002  # seconds between looks at a file that has not grown


class _Stopped(Exception):
    """The download failed or was given up: the walk ends without a result."""


class GrowingFile:
    """Reads a file that another thread is still writing, hashing what it returns.

    read(n) returns n bytes, fewer only once the writer said it is done (as a file would at
    its end), so that the tar reader never mistakes a pause for a truncated archive.
    """

    def __init__(self, path: Path):
        self.path = path
        self.file: BinaryIO | None = None
        self.hasher = hashlib.sha256()
        self.complete = threading.Event()  # the writer is done: what is there now is all there is
        self.stopped = False

    def read(self, size: int = -1) -> bytes:
        pieces, wanted = [], size
        while size < 0 or wanted > 0:
            if self.stopped:
                raise _Stopped()
            done = self.complete.is_set()  # before the read: data written before done was set is seen by this read
            piece = self._read_some(wanted)
            if piece:
                pieces.append(piece)
                wanted -= len(piece)
            elif done:
                break
            else:
                time.sleep(POLL)
        data = b"".join(pieces)
        self.hasher.update(data)
        return data

    def _read_some(self, size: int) -> bytes:
        if self.file is None:
            try:
                self.file = open(self.path, "rb")
            except FileNotFoundError:
                return b""  # the first response has not come yet
        return self.file.read(size)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class ArchiveFollower:
    """A thread walking the tar archive at `path` while it downloads; see the module's docstring."""

    def __init__(self, path: Path, fmt: str, *, strip: int, max_total: int | None):
        self.source = GrowingFile(path)
        self.args = (fmt, strip, max_total, path.name)
        self.members: list[MemberDigest] | None = None
        self.thread = threading.Thread(target=self._run, name="archive-follower", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        fmt, strip, max_total, name = self.args
        try:
            members = digest_members(iter_tar_stream(self.source, fmt, strip=strip, max_total=max_total, name=name), name)
            while self.source.read(1 << 20):  # the tar's end padding: the hash must cover the whole file
                pass
            self.members = members
        except (DataPackError, OSError, _Stopped):  # no result: the caller walks the finished file, and says why
            self.members = None
        finally:
            self.source.close()

    def result(self, verified_sha256: str) -> list[MemberDigest] | None:
        """After the download finished and verified: the walk, if it walked exactly those bytes."""
        self.source.complete.set()
        self.thread.join()
        if self.members is None or self.source.hasher.hexdigest() != verified_sha256:
            return None
        return self.members

    def stop(self) -> None:
        """End the walk: no result, if result() was not taken yet."""
        self.source.stopped = True
        self.thread.join()
