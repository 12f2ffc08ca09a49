"""`devops-cp data install` driven end to end: real servers on 127.0.0.1, real exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import types
from pathlib import Path

import pytest

from support.localserver import Fault

from conftest import download_step, fast_settings, files_under, gets, make_tar_gz, payload, sha256

MiB = 2**20


def stderr_events(result) -> list[dict]:
    """`--progress json`: every stderr line is one JSON event."""
    return [json.loads(line) for line in result.stderr.splitlines() if line.strip()]


# --- the must-show: a 64 MiB download cut half way, then re-run ---------------------------------


def test_64mib_cut_half_way_then_rerun_moves_less_than_1_6x(cli, local_server, serve_pack, isolated_env):
    # One stream: several connections start only when the first is slower than a threshold, so on a
    # loaded machine helpers would join and split the requests this test counts.
    isolated_env.write_config("max_connections_per_download = 1\n")
    size = 64 * MiB
    data = payload(size)
    serve_pack("big", data)
    path = "/packs/big.bin"
    local_server.set_fault(path, Fault(drop_after=32 * MiB))

    first = cli("install", "big", "--progress", "none", settings=fast_settings(retries=0))
    assert first.exit_code == 6, first.stderr
    assert "run the same command again" in first.stderr
    staged = files_under(isolated_env.sample_dir())
    assert len(staged) == 2 and all(p.startswith(".devops-cp-staging/partial/") for p in staged)  # the partial and its validator
    kept = gets(local_server, path)[0].body_bytes_sent
    assert 31 * MiB < kept <= 32 * MiB

    second = cli("install", "big", "--json", "--progress", "none")
    assert second.exit_code == 0, second.stderr
    installed = isolated_env.sample_dir() / "big" / "big.bin"
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == sha256(data)
    assert second.json()["results"][0]["record"]["files"][0]["sha256"] == sha256(data)

    resumed = gets(local_server, path)[1]
    assert resumed.range == f"bytes={kept}-" and resumed.status == 206 and "if-range" in resumed.headers
    total = local_server.bytes_sent(path)
    assert total < 1.6 * size, f"{total / size:.2f}x the file moved over the wire"
    assert files_under(isolated_env.sample_dir()) == ["big/big.bin"]  # no partial, no staging left


# --- pre-flight through the CLI ----------------------------------------------------------------------


def test_not_enough_space_exit_5_before_any_request(cli, local_server, serve_pack):
    serve_pack("huge", payload(1000), size_bytes=10**15)
    result = cli("install", "huge", "--yes")
    assert result.exit_code == 5
    assert "not enough space" in result.stderr and "needs 1091.4 TiB" in result.stderr  # 10^15 x 1.2
    assert local_server.requests == []


def test_read_only_data_dir_exit_5(cli, tmpfs, local_server, serve_pack, isolated_env):
    mnt = tmpfs("1m", ro=True)
    isolated_env.write_config(f'[data_dirs]\nsample = "{mnt}/samples"\n')
    serve_pack("ro", payload(1000))
    result = cli("install", "ro")
    assert result.exit_code == 5 and "cannot write" in result.stderr and str(mnt) in result.stderr
    assert local_server.requests == []


def test_missing_tool_exit_7(cli, local_server, serve_pack):
    serve_pack("needs-tool", payload(100), top={"requires": {"tools": ["no-such-tool-xyz"]}})
    result = cli("install", "needs-tool")
    assert result.exit_code == 7 and "no-such-tool-xyz" in result.stderr
    assert local_server.requests == []


# --- the size warning --------------------------------------------------------------------------------


def test_large_download_without_yes_and_without_a_terminal_is_refused(cli, local_server, serve_pack, isolated_env):
    serve_pack("large", payload(2 * 10**6), top={"size_warning_mb": 1})
    refused = cli("install", "large")
    assert refused.exit_code == 4
    assert "--yes" in refused.stderr and "1.9 MiB" in refused.stderr and "10 Mbps" in refused.stderr
    assert local_server.requests == []
    accepted = cli("install", "large", "--yes")
    assert accepted.exit_code == 0, accepted.stderr
    assert (isolated_env.sample_dir() / "large" / "large.bin").stat().st_size == 2 * 10**6


def test_small_download_needs_no_yes(cli, serve_pack):
    serve_pack("small", payload(1000), top={"size_warning_mb": 1})
    assert cli("install", "small").exit_code == 0


# --- checksums ------------------------------------------------------------------------------------------


def test_wrong_checksum_downloads_twice_then_exit_3_and_installs_nothing(cli, local_server, serve_pack, isolated_env):
    data = payload(300_000)
    serve_pack("bad", data, checksum="sha256:" + "0" * 64)
    result = cli("install", "bad", "--progress", "plain")
    assert result.exit_code == 3
    assert "checksum mismatch" in result.stderr and sha256(data) in result.stderr
    assert "downloading once more" in result.stderr
    assert len(gets(local_server, "/packs/bad.bin")) == 2
    assert files_under(isolated_env.sample_dir()) == []
    assert not isolated_env.sample_dir().exists() or list(isolated_env.sample_dir().iterdir()) == []
    assert not isolated_env.records_dir.exists() or list(isolated_env.records_dir.iterdir()) == []


def test_right_checksum_places_the_file_and_records_its_sha256(cli, local_server, serve_pack, isolated_env):
    data = payload(300_000)
    url = serve_pack("good", data)
    result = cli("install", "good", "--json", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "good" / "good.bin").read_bytes() == data
    record = isolated_env.record("good")
    assert record["files"] == [{"path": "good/good.bin", "size": len(data), "sha256": sha256(data)}]
    assert record["source"] == url and record["checksum_verified"] is True
    assert record["data_dir"] == str(isolated_env.sample_dir())
    assert len(gets(local_server)) == 1


def test_redirect_to_file_url_exit_6(cli, local_server, serve_pack):
    serve_pack("redirected", payload(1000))
    local_server.set_fault("/packs/redirected.bin", Fault(redirect_to="file:///etc/passwd"))
    result = cli("install", "redirected")
    assert result.exit_code == 6 and "file://" in result.stderr


def test_a_rerun_after_retries_ran_out_continues_from_the_partial(cli, local_server, serve_pack, isolated_env):
    data = payload(4 * MiB)
    serve_pack("flaky", data)
    local_server.set_fault("/packs/flaky.bin", Fault(drop_after=MiB, drop_times=3))  # each attempt gets 1 MiB further
    first = cli("install", "flaky", settings=fast_settings(retries=2))  # 3 attempts, all dropped
    assert first.exit_code == 6
    requests = gets(local_server)
    assert len(requests) == 3 and requests[1].range and requests[2].range
    second = cli("install", "flaky")
    assert second.exit_code == 0, second.stderr
    assert gets(local_server)[3].status == 206
    assert (isolated_env.sample_dir() / "flaky" / "flaky.bin").read_bytes() == data
    assert local_server.bytes_sent("/packs/flaky.bin") < 1.6 * len(data)


def test_changed_file_between_two_runs_restarts_from_zero(cli, local_server, serve_pack, isolated_env):
    old, new = payload(MiB, seed=1), payload(MiB, seed=2)
    serve_pack("moving", old, checksum=False, etag=None)  # Last-Modified is the only validator
    local_server.set_fault("/packs/moving.bin", Fault(drop_after=MiB // 2))
    assert cli("install", "moving", settings=fast_settings(retries=0)).exit_code == 6
    local_server.replace("/packs/moving.bin", new)
    result = cli("install", "moving")
    assert result.exit_code == 0, result.stderr
    retry = gets(local_server)[1]
    assert retry.range and "if-range" in retry.headers and retry.status == 200  # validator changed: whole new file
    assert (isolated_env.sample_dir() / "moving" / "moving.bin").read_bytes() == new


# --- output: --json and --progress json ------------------------------------------------------------


def test_json_prints_one_document_on_stdout(cli, serve_pack):
    data = payload(100_000)
    serve_pack("doc", data)
    result = cli("install", "doc", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)  # the whole of stdout is one document
    assert document["ok"] is True
    (entry,) = document["results"]
    assert entry["ok"] is True and entry["pack"] == "doc" and entry["record"]["size_bytes"] == len(data)


def test_json_reports_errors_too(cli, serve_pack):
    serve_pack("bad", payload(1000), checksum="sha256:" + "0" * 64)
    result = cli("install", "bad", "--json", "--progress", "none")
    assert result.exit_code == 3
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["results"][0]["ok"] is False
    assert "checksum mismatch" in document["results"][0]["error"]


def test_progress_json_prints_json_lines_on_stderr(cli, local_server, serve_pack):
    data = payload(MiB)
    serve_pack("lines", data)
    local_server.set_fault("/packs/lines.bin", Fault(delay_per_chunk=0.002))
    result = cli("install", "lines", "--progress", "json")
    assert result.exit_code == 0
    events = stderr_events(result)
    types = [e["type"] for e in events]
    assert types[0] == "step_started" and "download_done" in types
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and {"downloaded", "total", "percent", "speed_bps", "eta_seconds"} <= set(progress[0])
    assert progress[-1]["downloaded"] == len(data) and progress[-1]["percent"] == 100
    assert result.stdout.startswith("installed lines")


def test_three_packs_download_at_most_two_at_a_time(cli, local_server, serve_pack, isolated_env):
    isolated_env.write_config("max_parallel_downloads = 2\n")
    for name in ("a", "b", "c"):
        serve_pack(name, payload(512 * 1024, seed=ord(name)))
        local_server.set_fault(f"/packs/{name}.bin", Fault(delay_per_chunk=0.03))
    result = cli("install", "a", "b", "c", "--progress", "json")
    assert result.exit_code == 0, result.stderr
    in_flight = most = 0
    for event in stderr_events(result):
        if event["type"] == "step_started":
            in_flight += 1
            most = max(most, in_flight)
        elif event["type"] == "download_done":
            in_flight -= 1
    assert most == 2
    assert sorted(files_under(isolated_env.sample_dir())) == ["a/a.bin", "b/b.bin", "c/c.bin"]


# --- install PACK --source FILE ------------------------------------------------------------------------

UNREACHABLE = "http://127.0.0.1:9/never/db.bin"  # --source must not touch the network


@pytest.fixture
def offline_pack(write_recipe, tmp_path):
    data = payload(200_000)
    source = tmp_path / "usb" / "db.bin"
    source.parent.mkdir()
    source.write_bytes(data)
    write_recipe("offline-db", [download_step(UNREACHABLE, "db/db.bin", data, checksum=False)])
    return source, data


def test_source_with_checksum(cli, offline_pack, isolated_env):
    source, data = offline_pack
    result = cli("install", "offline-db", "--source", str(source), "--checksum", f"sha256:{sha256(data)}")
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "db" / "db.bin").read_bytes() == data
    record = isolated_env.record("offline-db")
    assert record["source"] == f"file:{source}" and record["checksum_verified"] is True
    assert source.exists()  # the stick's file is copied, not moved


def test_source_with_a_sha256sum_file(cli, offline_pack, isolated_env, tmp_path):
    source, data = offline_pack
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'e' * 64}  other.bin\n{sha256(data)} *db.bin\n")
    result = cli("install", "offline-db", "--source", str(source), "--checksum-file", str(sums))
    assert result.exit_code == 0, result.stderr
    assert isolated_env.record("offline-db")["checksum_verified"] is True


@pytest.mark.parametrize("how", ["--checksum", "--checksum-file"])
def test_source_with_a_wrong_checksum_is_refused(how, cli, offline_pack, isolated_env, tmp_path):
    source, _ = offline_pack
    wrong = "f" * 64
    if how == "--checksum":
        args = ["--checksum", f"sha256:{wrong}"]
    else:
        (tmp_path / "sums").write_text(f"{wrong}  db.bin\n")
        args = ["--checksum-file", str(tmp_path / "sums")]
    result = cli("install", "offline-db", "--source", str(source), *args)
    assert result.exit_code == 3 and "checksum mismatch" in result.stderr
    assert files_under(isolated_env.sample_dir()) == []
    assert not isolated_env.records_dir.exists() or list(isolated_env.records_dir.iterdir()) == []


def test_source_without_a_checksum_says_it_was_not_checked(cli, offline_pack, isolated_env):
    source, data = offline_pack
    result = cli("install", "offline-db", "--source", str(source), "--json")
    assert result.exit_code == 0
    warnings = result.json()["results"][0]["warnings"]
    assert any("not checked" in w for w in warnings)
    record = isolated_env.record("offline-db")
    assert record["checksum_verified"] is False and record["files"][0]["sha256"] == sha256(data)


def test_source_uses_the_recipe_checksum_when_none_is_given(cli, write_recipe, tmp_path, isolated_env):
    data = payload(1000)
    source = tmp_path / "db.bin"
    source.write_bytes(data + b"tampered")
    write_recipe("pinned", [download_step(UNREACHABLE, "db.bin", data)])
    assert cli("install", "pinned", "--source", str(source)).exit_code == 3
    source.write_bytes(data)
    assert cli("install", "pinned", "--source", str(source)).exit_code == 0


def test_source_checksum_argument_is_validated(cli, offline_pack):
    source, _ = offline_pack
    result = cli("install", "offline-db", "--source", str(source), "--checksum", "md5:abc")
    assert result.exit_code == 2 and "sha256:" in result.stderr


def test_source_tar_gz_is_extracted_with_strip_components(cli, write_recipe, tmp_path, isolated_env):
    archive = make_tar_gz([("GeoLite2-City_20260101/", "dir"), ("GeoLite2-City_20260101/GeoLite2-City.mmdb", b"M" * 5000), ("GeoLite2-City_20260101/sub/COPYRIGHT.txt", b"c")])
    source = tmp_path / "GeoLite2-City.tar.gz"
    source.write_bytes(archive)
    write_recipe("city", [download_step(UNREACHABLE, "GeoLite2-City", archive, extract="tar.gz", strip_components=1)])
    result = cli("install", "city", "--source", str(source))
    assert result.exit_code == 0, result.stderr
    assert files_under(isolated_env.sample_dir()) == ["GeoLite2-City/GeoLite2-City.mmdb", "GeoLite2-City/sub/COPYRIGHT.txt"]
    record = isolated_env.record("city")
    assert {f["path"]: f["sha256"] for f in record["files"]}["GeoLite2-City/sub/COPYRIGHT.txt"] == sha256(b"c")


HOSTILE = {
    "dotdot": [("top/ok.txt", b"fine"), ("top/../../evil", b"pwned")],
    "absolute": [("top/ok.txt", b"fine"), ("/tmp/devops-cp-evil-absolute", b"pwned")],
    "symlink": [("top/ok.txt", b"fine"), ("top/link", "symlink", "/etc/passwd")],
    "hardlink": [("top/ok.txt", b"fine"), ("top/hard", "hardlink", "top/ok.txt")],
    "duplicate": [("top/ok.txt", b"fine"), ("top/ok.txt", b"replaced")],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_source_archive_is_refused_and_nothing_installed(kind, cli, write_recipe, tmp_path, isolated_env):
    archive = make_tar_gz(HOSTILE[kind])
    source = tmp_path / "usb" / "db.tar.gz"
    source.parent.mkdir()
    source.write_bytes(archive)
    write_recipe("hostile", [download_step(UNREACHABLE, "db", archive, extract="tar.gz", strip_components=1)])
    result = cli("install", "hostile", "--source", str(source))
    assert result.exit_code == 3, result.stderr
    assert "member" in result.stderr
    assert files_under(isolated_env.sample_dir()) == []
    assert not isolated_env.records_dir.exists() or list(isolated_env.records_dir.iterdir()) == []
    assert not Path("/tmp/devops-cp-evil-absolute").exists()
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))


# --- tool_command ---------------------------------------------------------------------------------------

WRITER = (
    "import os, sys; d = sys.argv[1]; os.makedirs(os.path.join(d, 'db'), exist_ok=True); "
    "open(os.path.join(d, 'db', 'trivy.db'), 'wb').write(b'x' * 1000); "
    "print('downloading vulnerability DB', flush=True); print('done', flush=True)"
)


def test_tool_command_streams_output_and_its_files_are_recorded(cli, write_recipe, isolated_env):
    write_recipe("tooldb", [{"type": "tool_command", "command": ["{python}", "-c", WRITER, "{data_dir}"]}])
    result = cli("install", "tooldb", "--progress", "json")
    assert result.exit_code == 0, result.stderr
    notices = [e["message"] for e in stderr_events(result) if e["type"] == "notice"]
    assert any(m.endswith("downloading vulnerability DB") for m in notices)
    assert any(m.endswith(": done") for m in notices)
    assert (isolated_env.sample_dir() / "db" / "trivy.db").read_bytes() == b"x" * 1000
    record = isolated_env.record("tooldb")
    assert record["files"] == [{"path": "db/trivy.db", "size": 1000, "sha256": sha256(b"x" * 1000)}]
    assert record["source"].startswith("tool:")


def test_a_named_tool_on_path_installs_where_we_say(cli, write_recipe, isolated_env, tmp_path, monkeypatch):
    """The seed's `trivy image --download-db-only --cache-dir {data_dir}` form, with a stand-in trivy."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "fake-trivy"
    tool.write_text('#!/bin/sh\nwhile [ "$1" != "--cache-dir" ]; do shift; done\nmkdir -p "$2/db"\nprintf metadata > "$2/db/metadata.json"\necho "fake-trivy: DB written"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    write_recipe(
        "fake-trivy-db",
        [{"type": "tool_command", "command": ["fake-trivy", "image", "--download-db-only", "--cache-dir", "{data_dir}"], "produces": ["db/metadata.json"]}],
        requires={"tools": ["fake-trivy"]},
    )
    result = cli("install", "fake-trivy-db", "--progress", "plain")
    assert result.exit_code == 0, result.stderr
    assert "DB written" in result.stderr
    assert (isolated_env.sample_dir() / "db" / "metadata.json").read_text() == "metadata"
    assert [f["path"] for f in isolated_env.record("fake-trivy-db")["files"]] == ["db/metadata.json"]


def test_tool_command_with_a_missing_tool_exit_7(cli, write_recipe):
    write_recipe("notool", [{"type": "tool_command", "command": ["no-such-tool-xyz", "--download"]}])
    result = cli("install", "notool")
    assert result.exit_code == 7 and "no-such-tool-xyz" in result.stderr and "not on PATH" in result.stderr


def test_failing_tool_exit_7_with_its_last_output(cli, write_recipe, isolated_env):
    code = "import sys; print('starting'); print('error: the mirror answered 503', flush=True); sys.exit(3)"
    write_recipe("failing", [{"type": "tool_command", "command": ["{python}", "-c", code]}])
    result = cli("install", "failing", "--progress", "none")
    assert result.exit_code == 7
    assert "exit code 3" in result.stderr and "the mirror answered 503" in result.stderr
    assert not isolated_env.records_dir.exists() or list(isolated_env.records_dir.iterdir()) == []


def test_tool_that_does_not_produce_what_it_promised_exit_7(cli, write_recipe, isolated_env):
    write_recipe("lazy", [{"type": "tool_command", "command": ["{python}", "-c", "print('nothing written')"], "produces": ["db/trivy.db"]}])
    result = cli("install", "lazy")
    assert result.exit_code == 7 and "db/trivy.db" in result.stderr
    assert files_under(isolated_env.sample_dir()) == []


# --- GPU gating -----------------------------------------------------------------------------------------

GPU_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpu"  # from a real H100 (tools/gpu_check.py)


@pytest.fixture
def gpu_pack(local_server, write_recipe):
    small, large = payload(1000, seed=3), payload(2000, seed=4)
    steps = {
        "small": [download_step(local_server.add("/m/small.pt", small), "small.pt", small)],
        "large": [download_step(local_server.add("/m/large.pt", large), "large.pt", large)],
    }
    choices = [{"id": "model_size", "label": "Model size", "options": [
        {"value": "small", "label": "Small", "default": True},
        {"value": "large", "label": "Large", "gpu_vendor": "nvidia", "min_vram_mb": 100_000},
    ]}]
    write_recipe("gpu-model", steps, choices=choices)


def test_gpu_option_is_refused_without_a_gpu_and_accepted_with_force(cli, gpu_pack, local_server, isolated_env):
    refused = cli("install", "gpu-model", "-c", "model_size=large")
    assert refused.exit_code == 4
    assert "requires an NVIDIA GPU" in refused.stderr and "--force" in refused.stderr
    assert local_server.requests == []
    forced = cli("install", "gpu-model:model_size=large", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "installing anyway because of --force" in forced.stderr
    assert (isolated_env.sample_dir() / "large.pt").exists()
    assert cli("install", "gpu-model").exit_code == 0  # the default option needs no GPU


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    fixture = GPU_FIXTURES / "nvidia-smi-query.csv"
    bin_dir = tmp_path / "gpu-bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat '{fixture}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("DEVOPS_CP_NO_GPU")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # NVML is not importable: nvidia-smi is asked
    return fixture


def test_nvidia_smi_on_path_is_parsed(fake_nvidia_smi):
    from executor.hardware import detect

    hardware = detect()
    assert hardware.source == "nvidia-smi"
    (gpu,) = hardware.gpus
    assert gpu.vendor == "nvidia" and gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.memory_total_mb == 81559 and gpu.memory_free_mb == 81079 and gpu.driver_version == "580.159.04"


H100_NAME = "NVIDIA H100 80GB HBM3"


class FakeNvml(types.ModuleType):
    """The calls executor.hardware makes, answering what nvidia-ml-py answered on the H100
    the nvidia-smi fixtures come from (tools/gpu_check.py checks the two agree on real hardware)."""

    class NVMLError(Exception):
        pass

    def __init__(self, *, name=H100_NAME, fail_at: str | None = None):
        super().__init__("pynvml")
        self.name, self.fail_at, self.calls = name, fail_at, []

    def _call(self, what, result=None):
        self.calls.append(what)
        if what == self.fail_at:
            raise self.NVMLError(f"{what} failed")
        return result

    def nvmlInit(self):
        return self._call("init")

    def nvmlShutdown(self):
        return self._call("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return self._call("driver", "580.159.04")

    def nvmlDeviceGetCount(self):
        return self._call("count", 1)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self._call("handle", object())

    def nvmlDeviceGetName(self, handle):
        return self._call("name", self.name)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return self._call("memory", types.SimpleNamespace(total=85520809984, free=85017493504, used=0))


@pytest.mark.parametrize("name", [H100_NAME, H100_NAME.encode()], ids=["str", "bytes (older pynvml)"])
def test_nvml_is_asked_first_and_agrees_with_nvidia_smi(fake_nvidia_smi, monkeypatch, name):
    from executor.hardware import detect
    from manifests.hardware import parse_nvidia_smi_csv

    nvml = FakeNvml(name=name)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    hardware = detect()
    assert hardware.source == "nvml"
    assert hardware.gpus == parse_nvidia_smi_csv(fake_nvidia_smi.read_text())
    assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown"


@pytest.mark.parametrize("fail_at", ["init", "driver", "memory"])
def test_an_nvml_failure_falls_back_to_nvidia_smi(fake_nvidia_smi, monkeypatch, fail_at):
    from executor.hardware import detect

    nvml = FakeNvml(fail_at=fail_at)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    hardware = detect()
    assert hardware.source == "nvidia-smi" and hardware.gpus[0].memory_total_mb == 81559
    if fail_at != "init":
        assert nvml.calls[-1] == "shutdown"  # a failure half-way still lets go of NVML


def test_gpu_option_is_accepted_when_nvidia_smi_finds_one(cli, gpu_pack, fake_nvidia_smi, isolated_env):
    result = cli("install", "gpu-model", "-c", "model_size=large")
    assert result.exit_code == 0, result.stderr
    assert "100000 MiB" in result.stderr and "81559 MiB detected" in result.stderr  # the VRAM warning
    assert (isolated_env.sample_dir() / "large.pt").exists()


def test_unknown_choice_lists_the_valid_ones(cli, gpu_pack):
    result = cli("install", "gpu-model", "-c", "model_size=huge")
    assert result.exit_code == 2 and "small, large" in result.stderr
    result = cli("install", "gpu-model", "-c", "colour=red")
    assert result.exit_code == 2 and "model_size" in result.stderr
