"""Start-up: each command imports only what it needs (structural checks, no timings).

Every `devops-cp` run imports devops_cp.cli and the command modules beside it; the web app,
the engine's HTTP stack, signing, sideload and rich are imported inside the commands that use
them. The checks run in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from devops_cp.cli import main
from manifests import version

# Needed by no command's --help, nor by list/status.
HEAVY = (
    "httpx",
    "httpcore",
    "rich",
    "cryptography",
    "starlette",
    "uvicorn",
    "zstandard",
    "importlib.metadata",
    "devops_cp.demo_server",
    "devops_cp.web",
    "devops_cp.jobs",
    "executor.engine",
    "executor.http",
    "manifests.signing",
    "manifests.bundle",
    "sideload.reader",
    "sideload.api",
    "bundler.build",
)


def modules_after(*argv: str) -> set[str]:
    """sys.modules of a fresh interpreter after `devops-cp ARGV` (nothing: only the import)."""
    code = (
        "import json, sys\n"
        "from devops_cp.cli import main\n"
        f"argv = {list(argv)!r}\n"
        "if argv:\n"
        "    try:\n"
        "        main(argv, prog_name='devops-cp')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), exc.code\n"
        "sys.stdout = sys.__stdout__\n"
        "print('\\n' + json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_every_module_named_here_exists():
    """A name that no longer exists would make its "not loaded" check pass for nothing."""
    import importlib.util

    assert [name for name in HEAVY if importlib.util.find_spec(name) is None] == []


def test_importing_the_cli_loads_no_heavy_module():
    loaded = modules_after()
    assert "devops_cp.cli" in loaded
    assert sorted(loaded & set(HEAVY)) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["data", "--help"],
        ["data", "install", "--help"],
        ["data", "sideload", "--help"],
        ["data", "bundle", "--help"],
        ["data", "list"],
        ["data", "status"],
    ],
    ids=" ".join,
)
def test_commands_that_need_no_heavy_module_do_not_load_one(argv):
    assert sorted(modules_after(*argv) & set(HEAVY)) == []


def test_sideload_imports_neither_the_bundler_nor_the_http_stack():
    """The air-gapped side: verifying and installing a bundle needs no download or bundling code."""
    code = "import json, sys\nimport sideload.api\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "sideload.api" in loaded
    assert sorted(loaded & {"bundler.build", "bundler.tool_wheels", "httpx", "httpcore", "importlib.metadata"}) == []


def test_version_matches_the_distribution_metadata():
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as metadata_version

    try:
        expected = metadata_version(version.DISTRIBUTION)
    except PackageNotFoundError:
        expected = version.UNKNOWN
    assert version.VERSION == expected
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"devops-cp, version {expected}\n"


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


@pytest.mark.parametrize("path", list(_commands(main)), ids=" ".join)
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "devops_cp", "data", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage: devops-cp data" in result.stdout
