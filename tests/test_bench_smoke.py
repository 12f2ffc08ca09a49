"""The benchmark's pieces (bench/): data generators, measurement and tables; and the fast
paths it drove in the streaming copy. No timings are asserted anywhere."""

from __future__ import annotations

import hashlib
import json
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


@pytest.mark.parametrize("plain", [False, True], ids=["fast", "plain"])
def test_a_long_copy_hashes_on_a_second_thread_exactly(tmp_path, plain):
    """Past HASH_AHEAD the hash runs on another thread (unless plain): still every byte, in order,
    even from a reused buffer, and exactly the bytes counted when the copy stops on an error."""
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
        copy = Copy(out, what="long", plain=plain).feed(through_a_reused_buffer())
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert copy.done == total and copy.sha256 == expected
    assert (tmp_path / "out.bin").read_bytes() == b"".join(chunks)

    limit = total - 10
    copy = Copy(None, what="capped", limit=limit, plain=plain)
    with pytest.raises(LengthError):
        copy.feed(iter(chunks))
    assert copy.done == total - len(chunks[-1])
    assert copy.sha256 == hashlib.sha256(b"".join(chunks[:-1])).hexdigest()


def test_writeback_starts_during_a_long_durable_copy(tmp_path, monkeypatch):
    """Copy(writeback=True) asks the kernel to start writing every WRITEBACK_STEP bytes; the
    bytes, hash and count are unchanged, and neither a copy without writeback nor a plain one asks."""
    from executor import durable, transfer

    chunk = random.Random(7).randbytes(1 << 20)
    total = 2 * transfer.WRITEBACK_STEP + 5 * len(chunk)
    calls = []
    real = durable.write_behind
    monkeypatch.setattr(durable, "write_behind", lambda out, keep: calls.append(out.tell()) or real(out, keep))
    for writeback, plain in ((True, False), (False, False), (True, True)):
        calls.clear()
        with open(tmp_path / "out.bin", "wb") as out:
            copy = Copy(out, what="durable", writeback=writeback, plain=plain).feed(chunk for _ in range(total // len(chunk)))
        assert copy.done == total and (tmp_path / "out.bin").stat().st_size == total
        assert copy.sha256 == hashlib.sha256(chunk * (total // len(chunk))).hexdigest()
        assert calls == ([transfer.WRITEBACK_STEP, 2 * transfer.WRITEBACK_STEP] if writeback and not plain else [])


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


def test_bench_threads_names_each_thread_of_a_download_and_its_cpu(tmp_path, capsys):
    """bench/threads.py: the fast path's receiving, writing and hashing threads, the plain path's one."""
    from bench import threads

    threads.main(["--size-mib", "16", "--runs", "1", "--workdir", str(tmp_path / "work"), "--plain-too"])
    fast, plain = [line for line in capsys.readouterr().out.splitlines() if "wall" in line]
    assert fast.startswith("fast ") and all(f"{name} " in fast for name in ("MainThread", "copy-sha256", "copy-write"))
    assert plain.startswith("plain ") and "MainThread " in plain and "copy-" not in plain
    assert not (tmp_path / "work").exists()
