"""Issue 18 rule 10: the bootstrap script comes from the stick, so it runs only after the signed
checksum list (which covers it) was verified: its own header and the README say so, in that order."""

from __future__ import annotations

from pathlib import Path

from bundler.bootstrap import BootstrapInfo, render, script_name

README = Path(__file__).resolve().parents[1] / "README.md"


def _order(text: str, *needles: str) -> list[int]:
    return [text.index(needle) for needle in needles]


def test_the_scripts_header_says_to_check_it_before_running_it():
    info = BootstrapInfo("stick.tar.zst", (), ("tool/devops_cp_data-1-py3-none-any.whl",), "3.11", "devops-cp-data")
    header = render(info).split("\nset -eu", 1)[0]
    positions = _order(header, "check it BEFORE running it", "openssl pkeyutl -verify", "sha256sum -c stick.tar.zst.sha256", f"sh {script_name('stick.tar.zst')} DIR")
    assert positions == sorted(positions)


def test_the_readme_checks_the_stick_before_it_runs_the_script():
    text = README.read_text()
    section = text[text.index("A host without it"):text.index("## Benchmarks")]
    positions = _order(section, 'openssl pkeyutl -verify -pubin -inkey "$KEY" -rawin -in "$B.sha256"', 'sha256sum -c "$B.sha256"', "run it only **after** steps 1 and 2", "sh stick.tar.zst.bootstrap.sh DIR")
    assert positions == sorted(positions)
    assert section.count("bootstrap.sh DIR") == 1  # no earlier invitation to run it unchecked
