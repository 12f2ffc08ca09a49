"""An archive streamed from its server straight into the bundle, walked on the way.

A pinned archive (sha256 and exact size in its recipe) is not staged: its bytes go from the
socket into the bundle's compressor. The bundle still refuses what extraction would refuse, so
the same bytes are also handed to extraction's own walk (executor.extract.iter_tar_stream),
which reads them on a second thread through a short queue: the walk goes on while the download
waits on the network and the compressor, memory stays flat, and a refusal stops the download at
the next chunk. Tar formats only: a zip is read from its end, so a zip pack is staged.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

from executor.extract import iter_tar_stream

STREAMABLE = ("tar", "tar.gz", "tar.xz", "tar.zst")


class _QueueReader:
    """A file object over the chunks put in a queue (None ends it): read(n) returns n bytes unless at the end, as a file's does."""

    def __init__(self, chunks: queue.Queue):
        self.chunks = chunks
        self.head, self.ended = b"", False

    def read(self, size: int = -1) -> bytes:
        parts, have = [self.head], len(self.head)
        while (size < 0 or have < size) and not self.ended:
            chunk = self.chunks.get()
            if chunk is None:
                self.ended = True
            else:
                parts.append(chunk)
                have += len(chunk)
        data = b"".join(parts)
        if size < 0 or len(data) <= size:
            self.head = b""
            return data
        self.head = data[size:]
        return data[:size]

    def drain(self) -> None:
        while not self.ended:
            self.ended = self.chunks.get() is None


class StreamWalk:
    """Extraction's walk of an archive whose bytes are fed to it as they pass (see the module)."""

    QUEUE = 8  # chunks of at most 1 MiB

    def __init__(self, fmt: str, *, strip: int, max_total: int | None, name: str):
        self.fmt, self.strip, self.max_total, self.name = fmt, strip, max_total, name
        self.chunks: queue.Queue = queue.Queue(maxsize=self.QUEUE)
        self.paths: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="archive-walk", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        reader = _QueueReader(self.chunks)
        try:
            for rel, _, _ in iter_tar_stream(reader, self.fmt, strip=self.strip, max_total=self.max_total, name=self.name):
                self.paths.append(rel)
        except BaseException as exc:  # handed to the thread that feeds the walk, which raises it
            self.error = exc
        finally:
            reader.drain()  # what follows the archive's end, or the rest after a refusal: feed() never blocks

    def feed(self, chunk) -> None:
        if self.error is not None:
            raise self.error
        self.chunks.put(chunk if type(chunk) is bytes else bytes(chunk))  # a reused buffer would change under the thread

    def finish(self) -> list[str]:
        """Every file's path (after stripping), once the whole archive was fed; or the walk's refusal."""
        self.chunks.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.paths

    def abandon(self) -> None:
        """The download failed: end the walk without waiting for more bytes."""
        if self.thread.is_alive():
            self.chunks.put(None)
            self.thread.join()


class Tee:
    """The bundle's member output, with every byte written also fed to a StreamWalk."""

    def __init__(self, out: BinaryIO, walk: StreamWalk):
        self.out, self.walk = out, walk

    def write(self, chunk) -> int:
        self.walk.feed(chunk)
        return self.out.write(chunk)

    def flush(self) -> None:
        self.out.flush()
