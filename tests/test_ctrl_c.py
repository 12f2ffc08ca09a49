"""Ctrl-C: a real SIGINT to the process group of a running `devops-cp` against a real slow server.

No timed assertions: "stopped promptly" is measured in bytes, the server sent far less than the
file when the process had exited.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import fast_settings, files_under, gets, payload, sha256
from support.localserver import Fault

from executor import interrupt
from executor.config import load_config
from executor.engine import Engine
from executor.store import Store
from manifests.errors import Interrupted

MiB = 2**20
SIZE = 16 * MiB
SLOW = Fault(trickle_bps=256 * 1024)  # the whole file would take a minute


class Running:
    """`devops-cp data ARGS --progress json` in its own process group, its stderr read line by line."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devops_cp", "data", *args, "--progress", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a shell gives a foreground job
        )
        self.lines: list[str] = []
        self._moving = threading.Event()
        self._receiving = threading.Event()  # the answer's headers are in: its body is being read
        self._waiting = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("type") == "progress":
                self._receiving.set()
            if event.get("type") == "progress" and event["downloaded"] >= 256 * 1024:
                self._moving.set()
            if event.get("type") == "notice" and "waiting for another devops-cp run" in event["message"]:
                self._waiting.set()

    def wait_until_bytes_move(self) -> None:
        assert self._moving.wait(60), "".join(self.lines)

    def wait_until_receiving(self) -> None:
        assert self._receiving.wait(60), "".join(self.lines)

    def wait_until_waiting_for_a_lock(self) -> None:
        assert self._waiting.wait(60), "".join(self.lines)

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what the terminal sends to the foreground job

    def finish(self) -> tuple[int, str, str]:
        """Waits for the exit at most 120 s (a generous bound: a stopped run exits within a second
        or two); a run still going then is killed, and the test fails."""
        try:
            code = self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError("still running 120 s after Ctrl-C:\n" + "".join(self.lines)) from None
        stdout = self.proc.stdout.read()
        self._reader.join(10)
        return code, stdout, "".join(self.lines)


def test_ctrl_c_stops_an_install_keeps_the_partial_download_and_exits_130(serve_pack, local_server, isolated_env, cli):
    data = payload(SIZE)
    serve_pack("big", data)
    local_server.set_fault("/packs/big.bin", SLOW)

    run = Running("install", "big", "--yes")
    run.wait_until_bytes_move()
    run.ctrl_c()
    code, _, stderr = run.finish()

    assert code == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(stopped) == 1 and "partial download is kept" in stopped[0] and "run the same command again" in stopped[0]
    sent = local_server.bytes_sent("/packs/big.bin")
    assert sent < SIZE / 2, f"{sent} of {SIZE} bytes were sent before it stopped"
    assert not (isolated_env.records_dir / "big.json").exists()
    kept = [p for p in files_under(isolated_env.sample_dir()) if p.endswith(".part")]
    assert len(kept) == 1 and kept[0].startswith(".devops-cp-staging/partial/")
    assert "big/big.bin" not in files_under(isolated_env.sample_dir())

    local_server.set_fault("/packs/big.bin", Fault())
    again = cli("install", "big", "--progress", "none")
    assert again.exit_code == 0, again.stderr
    resumed = gets(local_server, "/packs/big.bin")[-1]
    assert resumed.range is not None and resumed.status == 206  # resumed, not fetched again
    assert sha256((isolated_env.sample_dir() / "big" / "big.bin").read_bytes()) == sha256(data)


def test_ctrl_c_while_the_server_sends_nothing_stops_long_before_the_read_timeout(serve_pack, local_server, isolated_env):
    """Headers, then silence: the read that waits for the body ends on Ctrl-C, not at stall_timeout."""
    config = isolated_env.config_dir / "devops-cp" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("stall_timeout = 300\n")  # were the read left to time out, the wait below would fail first
    serve_pack("silent", payload(MiB))
    local_server.set_fault("/packs/silent.bin", Fault(stall_after=0, stall_seconds=600))

    run = Running("install", "silent", "--yes")
    run.wait_until_receiving()  # its first progress event (0 bytes): the headers are in, the body never comes
    run.ctrl_c()
    code, _, stderr = run.finish()  # waits at most 120 s, far below the 300 s read timeout
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("interrupted")], stderr
    assert local_server.bytes_sent("/packs/silent.bin") == 0
    assert not (isolated_env.records_dir / "silent.json").exists()
    assert "silent/silent.bin" not in files_under(isolated_env.sample_dir())


def test_a_second_ctrl_c_while_stopping_is_not_a_traceback(serve_pack, local_server, isolated_env):
    serve_pack("big", payload(SIZE))
    local_server.set_fault("/packs/big.bin", SLOW)

    run = Running("install", "big", "--yes")
    run.wait_until_bytes_move()
    run.ctrl_c()
    run.ctrl_c()
    code, _, stderr = run.finish()
    assert code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (isolated_env.records_dir / "big.json").exists()


def test_ctrl_c_while_waiting_for_another_runs_lock_stops_at_once(serve_pack, local_server, isolated_env):
    serve_pack("big", payload(SIZE))
    local_server.set_fault("/packs/big.bin", SLOW)
    first = Running("install", "big", "--yes")
    first.wait_until_bytes_move()
    second = Running("install", "big", "--yes")  # waits for the first one's lock on this pack
    second.wait_until_waiting_for_a_lock()
    second.ctrl_c()
    code, _, stderr = second.finish()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert first.proc.poll() is None  # the other run goes on, untouched
    first.ctrl_c()
    assert first.finish()[0] == 130
    assert local_server.bytes_sent("/packs/big.bin") < SIZE / 2  # neither waited for the download to end


def test_ctrl_c_stops_a_bundle_and_leaves_no_bundle_behind(serve_pack, local_server, tmp_path):
    serve_pack("big", payload(SIZE), size_exact=True)  # pinned: streamed straight into the archive
    local_server.set_fault("/packs/big.bin", SLOW)
    out = tmp_path / "stick" / "b.tar.zst"
    out.parent.mkdir()

    run = Running("bundle", "big", "-o", str(out), "--unsigned", "--yes")
    run.wait_until_bytes_move()
    run.ctrl_c()
    code, _, stderr = run.finish()
    assert code == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert local_server.bytes_sent("/packs/big.bin") < SIZE / 2
    assert list(out.parent.iterdir()) == []


# --- the commit boundary, in process: STOP set at the exact moment that matters -----------------


@pytest.fixture
def engine(isolated_env):
    return Engine(Store(load_config()), settings=fast_settings())


@pytest.fixture(autouse=True)
def clear_stop():
    interrupt.STOP.clear()
    yield
    interrupt.STOP.clear()


def _plan(serve_pack, pack_id: str, data: bytes):
    from devops_cp.app import App

    serve_pack(pack_id, data)
    return App().plan(pack_id)


def test_ctrl_c_after_the_download_but_before_the_swap_commits_nothing(serve_pack, engine, isolated_env, monkeypatch):
    plan = _plan(serve_pack, "small", payload(100_000))
    real_stage = Engine.stage

    def stage_then_ctrl_c(self, *args, **kwargs):
        outcomes = real_stage(self, *args, **kwargs)
        interrupt.STOP.set()  # the signal lands between the last byte and the swap
        return outcomes

    monkeypatch.setattr(Engine, "stage", stage_then_ctrl_c)
    [outcome] = engine.install([plan], confirm=lambda *_: True)
    assert isinstance(outcome.error, Interrupted) and outcome.error.exit_code == 130
    assert files_under(isolated_env.sample_dir()) == [] and not (isolated_env.records_dir / "small.json").exists()


def test_a_swap_that_began_before_ctrl_c_finishes_and_is_reported(serve_pack, engine, isolated_env, monkeypatch):
    from executor.txn import PackTransaction

    data = payload(100_000)
    plan = _plan(serve_pack, "small", data)
    real_commit = PackTransaction.commit

    def ctrl_c_during_swap(self, *args, **kwargs):
        interrupt.STOP.set()  # the signal lands once the swap has begun
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(PackTransaction, "commit", ctrl_c_during_swap)
    [outcome] = engine.install([plan], confirm=lambda *_: True)
    assert outcome.error is None and outcome.record.key == "small"
    assert (isolated_env.sample_dir() / "small" / "small.bin").read_bytes() == data
    assert (isolated_env.records_dir / "small.json").exists()


def test_readme_lists_exit_130():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "| 130 |" in readme


@pytest.mark.parametrize("value", ['"60"', "0", "-1", "true"])
def test_stall_timeout_must_be_seconds_above_0(cli, isolated_env, value):
    isolated_env.write_config(f"stall_timeout = {value}\n")
    result = cli("status")
    assert result.exit_code == 2 and "stall_timeout" in result.stderr and "seconds" in result.stderr


def test_stall_timeout_reaches_the_downloads(isolated_env):
    from devops_cp.app import App

    isolated_env.write_config("stall_timeout = 300\n")
    assert App().engine().settings.stall_timeout == 300.0


def test_ctrl_c_while_the_server_never_answers_stops_long_before_the_read_timeout(write_recipe, isolated_env):
    """The connection is accepted and the request read, but no header ever comes back."""
    import socket

    from conftest import download_step

    isolated_env.write_config("stall_timeout = 300\n")
    listener = socket.create_server(("127.0.0.1", 0))
    asked = threading.Event()
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        asked.set()  # the client has sent its request: it now waits for the headers

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/mute.bin"
    write_recipe("mute", [download_step(url, "mute/mute.bin", payload(1000))])
    try:
        run = Running("install", "mute", "--yes")
        assert asked.wait(60), "".join(run.lines)
        run.ctrl_c()
        code, _, stderr = run.finish()  # waits at most 120 s, far below the 300 s read timeout
    finally:
        for conn in held:
            conn.close()
        listener.close()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert not (isolated_env.records_dir / "mute.json").exists()
