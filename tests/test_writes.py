"""How packs are written: the config's [writes] table (and DEVOPS_CP_PLAIN_WRITES=1), the engine's
parameter, and the Writer interface's plain reference against the fast small-file writers."""

from __future__ import annotations

import pytest

from executor.config import PLAIN_WRITES_ENV, WriteSettings, load_config
from executor.transfer import PlainWriter, SmallFileWriter, SmallFilesProcess, small_file_writer
from manifests.errors import ConfigError


def test_the_defaults_are_durable_and_fast(isolated_env):
    assert load_config().writes == WriteSettings(durable=True, plain=False)


def test_the_config_and_the_environment_set_them(isolated_env, monkeypatch):
    isolated_env.write_config("[writes]\ndurable = false\nplain = true\n")
    assert load_config().writes == WriteSettings(durable=False, plain=True)
    isolated_env.write_config("[writes]\n")
    monkeypatch.setenv(PLAIN_WRITES_ENV, "1")
    assert load_config().writes == WriteSettings(durable=True, plain=True)


@pytest.mark.parametrize("text", ["[writes]\ndurable = 0\n", "[writes]\nfast = true\n", "writes = true\n"])
def test_a_bad_writes_table_names_the_key(isolated_env, text):
    isolated_env.write_config(text)
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert "'writes'" in caught.value.message and caught.value.exit_code == 2


def test_the_engine_takes_them_from_the_config_unless_given(isolated_env):
    from devops_cp.app import App
    from executor.engine import Engine

    isolated_env.write_config("[writes]\nplain = true\n")
    app = App()
    assert app.engine().writes == WriteSettings(plain=True)
    assert Engine(app.store, writes=WriteSettings(durable=False)).writes == WriteSettings(durable=False)


def test_plain_selects_the_reference_writer():
    assert isinstance(small_file_writer(plain=True), PlainWriter)
    fast = small_file_writer(plain=False)
    try:
        assert isinstance(fast, SmallFileWriter)
    finally:
        fast.close()


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "fast"])
def test_every_writer_writes_the_same_files(tmp_path, monkeypatch, plain):
    """More files than SmallFilesProcess.MIN_FILES, so the fast writer's child process takes part."""
    monkeypatch.setattr(SmallFilesProcess, "MIN_FILES", 20)
    files = {str(tmp_path / f"f{i}.bin"): bytes([i % 256]) * (i * 37) for i in range(60)}
    with small_file_writer(plain) as writer:
        for path, data in files.items():
            writer.write(path, data)
    assert {str(p): p.read_bytes() for p in tmp_path.iterdir()} == files


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "fast"])
def test_a_failed_write_is_raised_by_every_writer(tmp_path, plain):
    missing = tmp_path / "no-such-folder" / "f.bin"
    with pytest.raises(OSError):
        with small_file_writer(plain) as writer:
            writer.write(str(missing), b"data")
    assert not missing.exists()
