"""The benchmark's pieces (bench/): data generators, measurement and tables; and the fast
paths it drove in the streaming copy. No timings are asserted anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import tarfile

import pytest

from bench import data
from bench.measure import Contender, Sample, run
from bench.table import ratio_table, results_table
from executor.transfer import HASH_AHEAD, HASH_BATCH, Copy
from manifests.errors import LengthError


def test_generators_write_what_they_report(tmp_path):
    sha = data.write_incompressible(tmp_path / "big.bin", 3 * data.CHUNK + 5)
    assert (tmp_path / "big.bin").stat().st_size == 3 * data.CHUNK + 5
    assert sha == hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest()

    sha = data.write_text_like(tmp_path / "vuln.json", 300_000)
    text = (tmp_path / "vuln.json").read_bytes()
    assert len(text) >= 300_000 and sha == hashlib.sha256(text).hexdigest()
    advisories = json.loads(text)
    assert advisories[0]["VulnerabilityID"].startswith("CVE-") and len(advisories) > 100

    total = data.write_small_files(tmp_path / "small", 50, mean_size=1000)
    files = sorted(p for p in (tmp_path / "small").rglob("*") if p.is_file())
    assert len(files) == 50 and sum(p.stat().st_size for p in files) == total
    sha = data.write_tar(tmp_path / "small", tmp_path / "small.tar", "smallfiles")
    with tarfile.open(tmp_path / "small.tar") as tar:
        names = tar.getnames()
    assert len(names) == 50 and all(n.startswith("smallfiles/d") for n in names)
    assert sha == data.sha256_file(tmp_path / "small.tar")


def test_run_measures_a_child_and_reports_failures():
    sample = run(["python3", "-c", "x = b'x' * (30 << 20)"])
    assert sample.wall > 0 and sample.cpu >= 0 and sample.maxrss_kib >= 30 << 10
    with pytest.raises(RuntimeError, match="exited with 3"):
        run(["bash", "-c", "echo oops >&2; exit 3"])


def test_tables_show_medians_and_ratios_to_each_peer():
    ours = Contender("ours", [], ours=True, samples=[Sample(w, 1.0, 0.5, 0.5, 50 << 10) for w in (2.0, 1.0, 3.0)])
    peer = Contender("peer", [], samples=[Sample(w, 1.0, 0.5, 0.5, 10 << 10) for w in (4.0, 4.0, 5.0)])
    table = results_table([ours, peer], size_bytes=2_000_000_000)
    assert "| **ours** | 2.00 s (1.00-3.00) |" in table and "| peer | 4.00 s (4.00-5.00) |" in table
    assert "1,000 MB/s" in table and "50 MiB" in table
    ratios = ratio_table([ours, peer], {("ours", "peer"): 0.6})
    assert "| ours | 0.50x (target <= 0.6x: met) |" in ratios


def test_a_long_copy_hashes_on_a_second_thread_exactly(tmp_path):
    """Past HASH_AHEAD the hash runs on another thread: still every byte, in order, even from
    a reused buffer, and exactly the bytes counted when the copy stops on an error."""
    rng = random.Random(5)
    chunks = [rng.randbytes(rng.randrange(1, 300_000)) for _ in range(60)]
    total = sum(map(len, chunks))
    assert total > HASH_AHEAD + 3 * HASH_BATCH
    reused = bytearray()

    def through_a_reused_buffer():
        for chunk in chunks:
            reused[:] = chunk
            yield reused

    with open(tmp_path / "out.bin", "wb") as out:
        copy = Copy(out, what="long").feed(through_a_reused_buffer())
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert copy.done == total and copy.sha256 == expected
    assert (tmp_path / "out.bin").read_bytes() == b"".join(chunks)

    limit = total - 10
    copy = Copy(None, what="capped", limit=limit)
    with pytest.raises(LengthError):
        copy.feed(iter(chunks))
    assert copy.done == total - len(chunks[-1])
    assert copy.sha256 == hashlib.sha256(b"".join(chunks[:-1])).hexdigest()


def test_no_sync_switch_skips_only_the_per_pack_sync(tmp_path, monkeypatch):
    """DEVOPS_CP_NO_SYNC=1 (the bench's `no sync` rows) skips sync_files; unset, the pack is synced."""
    from executor import durable

    calls = []
    monkeypatch.setattr(durable, "syncfs", lambda path: calls.append(("syncfs", path)) or True)
    monkeypatch.setenv(durable.NO_SYNC_ENV, "1")
    durable.sync_files(tmp_path, [tmp_path / "a"])
    assert calls == []
    monkeypatch.delenv(durable.NO_SYNC_ENV)
    durable.sync_files(tmp_path, [tmp_path / "a"])
    assert calls == [("syncfs", tmp_path)]


def test_writeback_starts_during_a_long_durable_copy(tmp_path, monkeypatch):
    """Copy(writeback=True) asks the kernel to start writing every WRITEBACK_STEP bytes; the
    bytes, hash and count are unchanged, and a plain copy never asks."""
    from executor import durable, transfer

    chunk = random.Random(7).randbytes(1 << 20)
    total = 2 * transfer.WRITEBACK_STEP + 5 * len(chunk)
    calls = []
    real = durable.write_behind
    monkeypatch.setattr(durable, "write_behind", lambda out, keep: calls.append(out.tell()) or real(out, keep))
    for writeback in (True, False):
        calls.clear()
        with open(tmp_path / "out.bin", "wb") as out:
            copy = Copy(out, what="durable", writeback=writeback).feed(chunk for _ in range(total // len(chunk)))
        assert copy.done == total and (tmp_path / "out.bin").stat().st_size == total
        assert copy.sha256 == hashlib.sha256(chunk * (total // len(chunk))).hexdigest()
        assert calls == ([transfer.WRITEBACK_STEP, 2 * transfer.WRITEBACK_STEP] if writeback else [])


def test_write_behind_waits_for_and_drops_only_what_lies_far_enough_behind(tmp_path, monkeypatch):
    """The last `keep` bytes stay in the page cache; the `keep` bytes before them are waited for
    and dropped; nothing at all happens with DEVOPS_CP_NO_SYNC=1."""
    from executor import durable

    monkeypatch.delenv(durable.NO_SYNC_ENV, raising=False)
    ranges, dropped = [], []
    monkeypatch.setattr(durable, "_sync_file_range", lambda fd, start, length, flags: ranges.append((start, length, flags)) or 0)
    monkeypatch.setattr(durable.os, "posix_fadvise", lambda fd, start, length, advice: dropped.append((start, length, advice)))
    mib = 1 << 20
    with open(tmp_path / "out.bin", "wb") as out:
        out.write(b"x" * mib)
        durable.write_behind(out, keep=2 * mib)  # nothing is far enough behind yet
        out.write(b"x" * 7 * mib)
        durable.write_behind(out, keep=2 * mib)
    wait_write_wait = 1 | 2 | 4
    assert ranges == [(0, 0, 2), (0, 0, 2), (4 * mib, 2 * mib, wait_write_wait)]
    assert dropped == [(4 * mib, 2 * mib, os.POSIX_FADV_DONTNEED)]

    ranges.clear()
    monkeypatch.setenv(durable.NO_SYNC_ENV, "1")
    with open(tmp_path / "out.bin", "ab") as out:
        durable.write_behind(out, keep=mib)
    assert ranges == []


def test_a_bundle_part_is_written_behind_as_it_grows(tmp_path, monkeypatch):
    """The archive is fsynced part by part: PartWriter hands each part to write_behind every
    WRITEBACK_STEP bytes, and a new part starts counting afresh."""
    from bundler.writer import PartWriter
    from executor import durable, transfer

    calls = []
    monkeypatch.setattr(durable, "write_behind", lambda out, keep: calls.append((out.name, out.tell(), keep)))
    step = transfer.WRITEBACK_STEP
    writer = PartWriter(tmp_path / "b.tar.zst", split_size=3 * step)
    chunk = b"z" * (step // 4)
    for _ in range(14):  # 3.5 steps: one part of 3 steps, then a part of half a step
        writer.write(chunk)
    parts = writer.finish()
    assert [p.size for p in parts] == [3 * step, step // 2]
    assert [(name.rsplit("/", 1)[-1], at) for name, at, _ in calls] == [(".b.tar.zst.001.tmp", n * step) for n in (1, 2, 3)]
    assert {keep for *_, keep in calls} == {transfer.WRITEBACK_KEEP}


def test_fleet_batches_fail_when_one_host_fails():
    """bench/fleet.py times N hosts at once: one failing host must fail the batch, not be lost in `wait`."""
    from bench.fleet import bash, in_parallel

    assert subprocess.run(bash(in_parallel(["true", "true", "true"]))).returncode == 0
    assert subprocess.run(bash(in_parallel(["true", "exit 3", "true"]))).returncode != 0
