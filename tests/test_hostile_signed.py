"""Issue 18: a trusted signature is not a blank cheque.

Every hostile bundle here is run twice: signed by a key this host TRUSTS (a compromised or careless
signer), and unsigned with --allow-unsigned (an operator who let one in). Each must be refused
with the README's exit code (2 usage, 3 verification, 4 policy: never 0, never 1), saying why, and
leave HOME and everything beside it byte for byte as it was (lock files in the state dir aside).

Rules here: 1 (identifiers, record names), 2 (the tool's state out of reach, choice values),
3 (code from the host, data from the signer; a strict schema for steps), 4 (two packs of one
bundle claiming one path), 7 (trust store permissions), 9 (install --source BUNDLE --checksum).
Rules 4, 5, 6 and 8 against what is already on the host (file ownership, updates, unpack bounds,
rollback) have their own tests; docs/security.md lists them all.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from bundle_helpers import PackSpec, Untouched, hostile_bundle, new_key, write_bundle, write_public_key
from manifests.model import Unpack
from manifests.plan import resolve
from manifests.hardware import Hardware
from manifests.recipe import parse_recipe

WHEEL = b"the host's pinned wheel" * 100
OTHER_WHEEL = b"a wheel the signer slipped in" * 100
HOSTED = f"""
id = "hosted"
label = "A pack this host's catalog defines, with an offline step"
data_type = "sample"
[[choices]]
id = "v"
label = "V"
options = [{{ value = "a", label = "A" }}, {{ value = "b", label = "B" }}]
[[install._default]]
type = "download"
url = "https://x.invalid/w.whl"
dest = "w.whl"
checksum = "sha256:{hashlib.sha256(WHEEL).hexdigest()}"
[[install._default]]
type = "tool_command"
command = ["{{python}}", "-c", "import sys; open(sys.argv[1] + '.ran', 'w').write('ran')", "{{data_dir}}/w.whl"]
"""


def _host_step() -> dict:
    [step] = resolve(parse_recipe(tomllib.loads(HOSTED), "hosted.toml"), {"v": "a"}, Hardware(), mode="bundle").offline_steps
    return {"type": "tool_command", "command": list(step.command)}


def _set(path: str, value) -> Callable[[dict], None]:
    """An edit of the manifest's JSON: 'packs.0.data_type' = value."""

    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        target = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return edit


def _all(*edits) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        for one in edits:
            one(doc)

    return edit


@dataclass
class Case:
    name: str
    exit_code: int
    needle: str
    edit: Callable[[dict], None] | None = None
    packs: list[PackSpec] = field(default_factory=lambda: [PackSpec("pack", {"a.bin": b"a" * 1000})])
    command: tuple[str, ...] = ("sideload", "{bundle}")
    hosted: bool = False  # this host's catalog defines `hosted`
    modes: tuple[str, ...] = ("trusted", "unsigned")
    split: bool = False
    config: str = ""  # this host's config file ("{sample}": the sample data type's folder)


HOSTED_PACK = PackSpec("hosted", {"w.whl": WHEEL}, choices={"v": "a"})
TWO_PACKS = [PackSpec("pack", {"a.bin": b"a" * 1000}), PackSpec("other", {"b.bin": b"b" * 1000})]  # files.0 is pack's a.bin, files.1 other's b.bin
SHARED = "two packs of this bundle claim one path"


def _archive_into_db(*members: tuple[str, bytes]) -> dict:
    from support.tarballs import make_tar_gz

    return {"db": (make_tar_gz([(f"top/{name}", data) for name, data in members]), Unpack("tar.gz", 1))}
OUTSIDE = "{outside}"  # where a hostile step or path aims: a folder of the user's beside HOME

CASES = [
    # rule 1: names, not paths
    Case("data-type-is-a-relative-path", 3, "data_type", _set("packs.0.data_type", "../../../../outside")),
    Case("data-type-is-an-absolute-path", 3, "data_type", _set("packs.0.data_type", OUTSIDE)),
    Case("data-type-hidden-name", 3, "data_type", _set("packs.0.data_type", ".ssh")),
    Case("pack-id-is-a-path", 3, "packs[0].id", _all(_set("packs.0.id", "../x"), _set("packs.0.key", "../x"), _set("files.0.pack_key", "../x"))),
    Case("key-not-its-id-and-choices", 3, "is not the pack's id and choices", _all(_set("packs.0.key", "other"), _set("files.0.pack_key", "other"))),
    Case("choice-value-is-a-path", 3, "choices.v", _all(_set("packs.0.choices", {"v": "../../x"}), _set("packs.0.key", "pack@v=../../x"), _set("files.0.pack_key", "pack@v=../../x"))),
    Case("choice-value-splits-the-key", 3, "choices.v", _all(_set("packs.0.choices", {"v": "a,w=b"}), _set("packs.0.key", "pack@v=a,w=b"), _set("files.0.pack_key", "pack@v=a,w=b"))),
    # rule 2: the tool's own state is out of reach
    Case("path-into-the-staging-area", 3, "staging", _set("files.0.path", ".devops-cp-staging/txn-x-00000000/JOURNAL.json")),
    Case("path-into-the-staging-area-other-case", 3, "staging", _set("files.0.path", ".DEVOPS-CP-STAGING/partial/x.part")),
    Case("path-with-a-terminal-escape", 3, "control characters", _set("files.0.path", "a\x1b]0;owned\x07.bin")),
    Case("choice-not-an-option-of-the-hosts-recipe", 4, "is not an option", _all(_set("packs.0.choices", {"v": "c"}), _set("packs.0.key", "hosted@v=c"), _set("files.0.pack_key", "hosted@v=c")), packs=[HOSTED_PACK], hosted=True),
    Case("choice-unknown-to-the-host-not-an-identifier", 4, "is not an identifier", packs=[PackSpec("pack", {"a.bin": b"a"}, choices={"edition": "GeoLite2-City"})]),
    # rule 3: code from the host, data from the signer; a strict schema for every step
    Case("steps-of-a-pack-the-host-does-not-define", 4, "does not define pack 'pack'", _set("packs.0.offline_steps", [{"type": "tool_command", "command": ["sh", "-c", f"touch {OUTSIDE}/pwned"]}])),
    Case("steps-the-hosts-recipe-does-not-have", 4, "differ from those of this host's recipe", _set("packs.0.offline_steps", [{"type": "tool_command", "command": ["sh", "-c", f"touch {OUTSIDE}/pwned"]}]), packs=[HOSTED_PACK], hosted=True),
    Case("a-wheel-other-than-the-hosts-pin", 4, "pins w.whl", _set("packs.0.offline_steps", [_host_step()]), packs=[PackSpec("hosted", {"w.whl": OTHER_WHEEL}, choices={"v": "a"})], hosted=True),
    Case("steps-through-install-source", 4, "does not define pack 'pack'", _set("packs.0.offline_steps", [{"type": "tool_command", "command": ["sh", "-c", f"touch {OUTSIDE}/pwned"]}]), command=("install", "pack", "--source", "{bundle}"), modes=("trusted",)),
    Case("step-with-an-unknown-field", 3, "not a known field", _set("packs.0.offline_steps", [{"type": "tool_command", "command": ["true"], "shell": True}])),
    Case("step-with-an-empty-command", 3, "non-empty first argument", _set("packs.0.offline_steps", [{"type": "tool_command", "command": []}])),
    Case("step-with-a-wrong-type", 3, "a list of strings", _set("packs.0.offline_steps", [{"type": "tool_command", "command": "sh -c reboot"}])),
    Case("offline-step-that-downloads", 3, "only tool_command", _set("packs.0.offline_steps", [{"type": "download", "url": "https://x.invalid/a", "dest": "a"}])),
    Case("allow-commands-with-allow-unsigned", 2, "cannot be used with --allow-unsigned", _set("packs.0.offline_steps", [{"type": "tool_command", "command": ["sh", "-c", f"touch {OUTSIDE}/pwned"]}]), command=("sideload", "{bundle}", "--allow-commands", "pack"), modes=("unsigned",)),
    Case("allow-commands-naming-no-pack-of-the-bundle", 2, "no such pack", _set("packs.0.offline_steps", [{"type": "tool_command", "command": ["sh", "-c", f"touch {OUTSIDE}/pwned"]}]), command=("sideload", "{bundle}", "--allow-commands", "another"), modes=("trusted",)),
    # rule 4: two packs of one bundle never claim one path, as this host puts their data types
    Case("two-packs-claim-one-file", 3, SHARED, _set("files.1.path", "a.bin"), packs=TWO_PACKS),
    Case("a-file-of-one-pack-is-the-folder-of-another", 3, SHARED, _set("files.1.path", "a.bin/b.bin"), packs=TWO_PACKS),
    Case("two-data-types-this-host-puts-in-one-folder", 3, SHARED, _all(_set("packs.1.data_type", "other_type"), _set("files.1.path", "a.bin")), packs=TWO_PACKS, config='[data_dirs]\nother_type = "{sample}"\n'),
    Case("a-data-dir-inside-another-packs-folder", 3, SHARED, _all(_set("packs.1.data_type", "other_type"), _set("files.1.path", "b.bin"), _set("files.0.path", "nested/b.bin")), packs=TWO_PACKS, config='[data_dirs]\nother_type = "{sample}/nested"\n'),
    Case("an-archive-member-is-a-file-of-another-pack", 3, SHARED, packs=[PackSpec("pack", {}, archives=_archive_into_db(("x.bin", b"1" * 100))), PackSpec("other", {"db/x.bin": b"2" * 100})]),
    Case("two-packs-archives-unpack-one-file", 3, SHARED, packs=[PackSpec("pack", {}, archives=_archive_into_db(("x.bin", b"1" * 100))), PackSpec("other", {}, archives=_archive_into_db(("y.bin", b"y"), ("x.bin", b"2" * 100)))]),
    # rule 9: --checksum with a bundle is checked, or refused
    Case("install-source-bundle-with-a-wrong-checksum", 3, "does not match --checksum", command=("install", "pack", "--source", "{bundle}", "--checksum", "sha256:" + "0" * 64), modes=("trusted",)),
    Case("install-source-split-bundle-with-a-checksum", 2, "split into parts", command=("install", "pack", "--source", "{bundle}", "--checksum", "sha256:" + "0" * 64), modes=("trusted",), split=True),
]


class Stick:
    """One test's host (the current HOME), its trusted key, and the folder of the user's beside HOME that hostile bundles aim at."""

    def __init__(self, cli, env, tmp_path: Path):
        self.cli, self.env, self.tmp = cli, env, tmp_path
        self.key = new_key()
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        (self.outside / "notes.txt").write_text("the user's own file\n")
        assert cli("trust", "add", str(write_public_key(tmp_path / "site.pub", self.key))).exit_code == 0
        first = write_bundle(tmp_path / "first" / "first.tar.zst", [PackSpec("installed", {"keep.bin": b"k" * 5000})], key=self.key)
        assert cli("sideload", str(first.path), "--progress", "none").exit_code == 0  # a pack that must stay intact

    def build(self, case: Case, mode: str) -> Path:
        key = self.key if mode == "trusted" else None
        where = self.tmp / "stick" / f"{case.name}-{mode}.tar.zst"
        if case.split:
            return write_bundle(where, [PackSpec("pack", {"a.bin": os.urandom(300_000)})], key=key, split_size=100_000).path
        edit = case.edit

        def aimed(doc: dict) -> None:  # OUTSIDE in any string of the edit becomes the real folder
            if edit is not None:
                edit(doc)
            _replace_strings(doc, OUTSIDE, str(self.outside))

        return hostile_bundle(where, case.packs, key=key, edit=aimed)

    def run(self, case: Case, mode: str, bundle: Path):
        args = [a.replace("{bundle}", str(bundle)) for a in case.command]
        return self.cli(*args, *(["--allow-unsigned"] if mode == "unsigned" and args[0] == "sideload" else []), "--progress", "none")


def _replace_strings(value, old: str, new: str):
    if isinstance(value, dict):
        for k, v in value.items():
            value[k] = _replace_strings(v, old, new)
    elif isinstance(value, list):
        value[:] = [_replace_strings(v, old, new) for v in value]
    elif isinstance(value, str):
        return value.replace(old, new)
    return value


@pytest.fixture
def stick(cli, isolated_env, tmp_path) -> Stick:
    return Stick(cli, isolated_env, tmp_path)


MATRIX = [pytest.param(case, mode, id=f"{case.name}-{mode}") for case in CASES for mode in case.modes]


@pytest.mark.parametrize(("case", "mode"), MATRIX)
def test_a_hostile_bundle_is_refused_and_nothing_changes(stick, isolated_env, case, mode):
    if case.hosted:
        (isolated_env.catalog / "hosted.toml").write_text(HOSTED)
    if case.config:
        isolated_env.write_config(case.config.replace("{sample}", str(isolated_env.sample_dir())))
    bundle = stick.build(case, mode)
    untouched = Untouched(isolated_env.home.parent, stick.tmp)  # HOME, the catalog beside it, the stick, the user's folder
    result = stick.run(case, mode, bundle)
    assert result.exit_code == case.exit_code, (result.exit_code, result.stderr)
    assert case.needle in result.stderr, result.stderr
    assert untouched.changes() == []
    assert not (stick.outside / "pwned").exists()


def test_the_honest_bundle_of_a_pack_the_host_defines_runs_its_step(stick, isolated_env):
    """The control for the rule-3 cases: the same pack, with the host's own step and pinned wheel, installs and runs it."""
    (isolated_env.catalog / "hosted.toml").write_text(HOSTED)
    bundle = stick.build(Case("honest", 0, "", _set("packs.0.offline_steps", [_host_step()]), packs=[HOSTED_PACK]), "trusted")
    result = stick.run(Case("honest", 0, ""), "trusted", bundle)
    assert result.exit_code == 0, result.stderr
    assert (isolated_env.sample_dir() / "w.whl.ran").read_text() == "ran"


def test_allow_commands_runs_a_signed_packs_steps_and_prints_each_first(stick, isolated_env):
    bundle = stick.build(Case("allowed", 0, "", _set("packs.0.offline_steps", [{"type": "tool_command", "command": ["sh", "-c", f"touch {OUTSIDE}/allowed"]}])), "trusted")
    result = stick.cli("sideload", str(bundle), "--allow-commands", "pack", "--progress", "none")
    assert result.exit_code == 0, result.stderr
    assert f"--allow-commands): sh -c touch {stick.outside}/allowed" in result.stderr
    assert (stick.outside / "allowed").exists()


def test_two_packs_side_by_side_in_one_folder_install(stick, isolated_env):
    """The control for the rule-4 cases: two packs' archives unpack into one folder, and a third pack's
    file sits beside them; no path is claimed twice, so all install."""
    packs = [
        PackSpec("pack", {}, archives=_archive_into_db(("x.bin", b"1" * 100))),
        PackSpec("other", {"db/z.bin": b"z"}, archives=_archive_into_db(("y.bin", b"2" * 100))),
    ]
    bundle = stick.build(Case("side-by-side", 0, "", packs=packs), "trusted")
    result = stick.run(Case("side-by-side", 0, ""), "trusted", bundle)
    assert result.exit_code == 0, result.stderr
    db = isolated_env.sample_dir() / "db"
    assert sorted(p.name for p in db.iterdir()) == ["x.bin", "y.bin", "z.bin"]
    assert [f["path"] for f in isolated_env.record("other")["files"]] == ["db/y.bin", "db/z.bin"]


def test_install_source_bundle_with_its_right_checksum_installs(stick):
    bundle = stick.build(Case("right", 0, ""), "trusted")
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    result = stick.cli("install", "pack", "--source", str(bundle), "--checksum", f"sha256:{digest}", "--progress", "none")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("loose", ["file", "folder"])
def test_a_recipe_others_may_change_does_not_vouch_for_steps(stick, isolated_env, loose):
    """Rules 3 and 7: the catalog decides which code runs, so the recipe that vouches passes StrictModes."""
    recipe = isolated_env.catalog / "hosted.toml"
    recipe.write_text(HOSTED)
    os.chmod(recipe if loose == "file" else isolated_env.catalog, 0o666 if loose == "file" else 0o777)
    bundle = stick.build(Case("honest", 0, "", _set("packs.0.offline_steps", [_host_step()]), packs=[HOSTED_PACK]), "trusted")
    untouched = Untouched(isolated_env.home.parent, stick.tmp)
    result = stick.run(Case("honest", 0, ""), "trusted", bundle)
    assert result.exit_code == 4, result.stderr
    fix = recipe if loose == "file" else isolated_env.catalog
    assert f"recipe {recipe}" in result.stderr and f"chmod go-w {fix}" in result.stderr
    assert untouched.changes() == []
