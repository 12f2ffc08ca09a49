"""Start-up: the one process-wide tweak a `devops-cp` run makes (glibc's malloc keeps megabyte
blocks on its heap), in the command's own process only. Each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


# --- malloc: freed memory kept for reuse (devops_cp.cli._reuse_freed_memory) ----------------------------

MMAPPED_BLOCKS = """
import ctypes, sys
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "cli":
    from devops_cp.cli import _reuse_freed_memory
    _reuse_freed_memory()
before = libc.mallinfo2().hblks
blocks = [bytearray(1 << 20) for _ in range(8)]  # 1 MiB each, as a socket read or a file chunk
print(libc.mallinfo2().hblks - before)
"""


def test_a_command_keeps_megabyte_blocks_on_the_heap_instead_of_mapping_each_fresh():
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later: no mallinfo2 to count mapped blocks with")

    def mapped(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", MMAPPED_BLOCKS, mode], capture_output=True, text=True, check=True)
        return int(result.stdout)

    assert mapped("default") == 8  # glibc maps each one fresh: a page fault per 4 KiB when it is touched
    assert mapped("cli") == 0
