"""The README and docs/recipes.md name every config key and every environment variable the code
reads, and no DEVOPS_CP_ variable that the code does not read."""

from __future__ import annotations

import re
from pathlib import Path

from executor.config import KNOWN_KEYS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
RECIPES = (ROOT / "docs" / "recipes.md").read_text()
PRODUCT = ["devops_cp", "executor", "manifests", "bundler", "sideload", "fleet"]

_READ = re.compile(r"""os\.environ(?:\.get)?[\[(]\s*"([A-Z][A-Z0-9_]+)"|^[A-Z_]+_ENV\s*=\s*"([A-Z][A-Z0-9_]+)\"""", re.M)


def _source() -> str:
    return "\n".join(p.read_text() for package in PRODUCT for p in sorted((ROOT / package).rglob("*.py")))


def _variables_read() -> set[str]:
    return {a or b for a, b in _READ.findall(_source())}


def test_every_config_key_is_in_the_readme_and_the_recipe_guide():
    for key in sorted(KNOWN_KEYS):
        assert re.search(rf"(^|\[){key}\b", README, re.M), f"README.md does not show the config key {key}"
        assert f"`{key}`" in RECIPES or f"`[{key}]`" in RECIPES or f"`[{key}." in RECIPES, f"docs/recipes.md does not name {key}"
    for key in ("token", "bundle_dirs", "source", "plain_http", "hosts", "plain", "durable"):
        assert re.search(rf"^{key} = ", README, re.M), f"README.md's config example lacks {key}"


def test_every_environment_variable_read_is_in_the_readme():
    found = _variables_read()
    assert {"DEVOPS_CP_CONFIG", "DEVOPS_CP_CATALOG", "SSL_CERT_FILE"} <= found  # the scan sees them
    missing = sorted(v for v in found if f"`{v}" not in README and f" {v}" not in README)
    assert missing == [], f"read by the code, not in README.md: {missing}"


def test_the_readme_names_no_devops_cp_variable_the_code_does_not_read():
    named = set(re.findall(r"\bDEVOPS_CP_[A-Z_]+\b", README))
    assert named - _variables_read() == set()
