"""Start-up of a command that imports httpx: httpx's own command-line client (httpx._main, which
pulls in rich and pygments) is not imported by a `devops-cp` run, and only by a run.

Each check runs in a fresh interpreter: this test process has imported httpx already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import download_step, payload, sha256

UNREACHABLE = "http://127.0.0.1:9/never.bin"


@pytest.fixture
def offline_install(write_recipe, tmp_path) -> list[str]:
    """`data install` from a local file with a sha256sum file: a real command that imports executor.http (httpx)."""
    data = payload(10_000)
    source = tmp_path / "usb" / "db.bin"
    source.parent.mkdir()
    source.write_bytes(data)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{sha256(data)}  db.bin\n")
    write_recipe("offline-db", [download_step(UNREACHABLE, "db/db.bin", data, checksum=False)])
    return ["data", "install", "offline-db", "--source", str(source), "--checksum-file", str(sums), "--progress", "none", "--yes"]


def run_python(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_a_command_that_imports_httpx_does_not_import_its_command_line_client(offline_install, isolated_env):
    code = (
        "import json, sys\n"
        "from devops_cp.cli import main\n"
        "try:\n"
        f"    main({offline_install!r}, prog_name='devops-cp')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "sys.stdout = sys.__stdout__\n"
        "print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))\n"
    )
    loaded = set(json.loads(run_python("-c", code).stdout.splitlines()[-1]))
    assert (isolated_env.sample_dir() / "db" / "db.bin").exists()  # the command did run
    assert {"httpx", "executor.http"} <= loaded
    assert sorted(loaded & {"httpx._main", "pygments", "rich.syntax"}) == []


def test_python_dash_m_does_not_import_it_either(offline_install):
    """The console script and `python -m devops_cp` call the same group. -X importtime lists every
    import started (httpx._main too: its import starts, then stops at the None), so the check is on
    what httpx._main would have imported."""
    result = run_python("-X", "importtime", "-m", "devops_cp", *offline_install)
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "httpx" in imported
    assert sorted(imported & {"pygments", "rich.syntax"}) == []


def test_importing_our_modules_leaves_httpx_alone():
    """Only a run of the command keeps httpx._main out: a program that imports our modules gets httpx as it is."""
    code = "import sys\nimport devops_cp.cli, executor.http\nprint(repr(sys.modules.get('httpx._main', 'absent')))\n"
    assert run_python("-c", code).stdout.strip() != "None"


def test_a_run_leaves_its_objects_out_of_the_last_garbage_collection(isolated_env):
    """The interpreter's final collection would walk every object the command left (25-50 ms for a
    20,000-file sideload); main() freezes them on the way out, whether the command failed or not."""
    code = (
        "import gc, sys\n"
        "from devops_cp.cli import main\n"
        "for args in (['data', 'list'], ['data', 'info', 'no-such-pack']):\n"
        "    gc.unfreeze()\n"
        "    try:\n"
        "        main(args, prog_name='devops-cp')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    print('frozen', gc.get_freeze_count(), file=sys.__stdout__)\n"
    )
    counts = [int(line.split()[1]) for line in run_python("-c", code).stdout.splitlines() if line.startswith("frozen ")]
    assert len(counts) == 2 and all(count > 10_000 for count in counts), counts


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
