"""Creates small files, each given whole: in-process (SmallFiles' thread) or as a child process.

Standard library only: executor.transfer.SmallFilesProcess runs this module in a child Python
(`python -I -S`, no site-packages), so that creating thousands of files never waits for the
parent's GIL while it parses and hashes the next members (figures: bench/RESULTS.md, W5).

The protocol, parent to child on stdin: frames of FRAME (path length, data length), the path
(bytes), then the data. Child to parent on stdout, once: `ok COUNT` after the parent closed
stdin, or one JSON line [errno, strerror, path, size] for the first failure (then exit 1). A child
whose parent died stops at the next frame, writing nothing more.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from typing import BinaryIO, TextIO

FRAME = struct.Struct("<IQ")  # path length, data length
FAILED, ORPHANED = 1, 2  # the child's exit codes besides 0
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def write_whole(path: str | bytes, data: bytes) -> None:
    fd = os.open(path, _FLAGS, 0o644)
    try:
        view = memoryview(data)
        while view:  # a regular file takes it all in one call unless the disk fills up
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def serve(inp: BinaryIO, out: TextIO, parent: int | None = None) -> int:
    """The child's loop: every frame of `inp` becomes a file; the exit code."""
    count = 0
    while head := inp.read(FRAME.size):
        if parent is not None and os.getppid() != parent:
            return ORPHANED  # killed or crashed parent: its update is abandoned, add nothing to it
        if len(head) != FRAME.size:
            return ORPHANED  # a cut frame: the parent died while sending it
        path_len, size = FRAME.unpack(head)
        path, data = inp.read(path_len), inp.read(size)
        if len(path) != path_len or len(data) != size:
            return ORPHANED
        try:
            write_whole(path, data)
        except OSError as exc:
            import json

            out.write(json.dumps([exc.errno, exc.strerror, os.fsdecode(path), size]) + "\n")
            out.flush()
            return FAILED
        count += 1
    out.write(f"ok {count}\n")
    out.flush()
    return 0


def main() -> int:
    # Ctrl-C on a terminal reaches the whole process group: the parent decides (it abandons the
    # update and kills this child); a KeyboardInterrupt here would only print a second traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False) as inp:
        return serve(inp, sys.stdout, parent=os.getppid())


if __name__ == "__main__":
    sys.exit(main())
