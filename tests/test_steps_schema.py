"""One strict parser for steps (manifests/steps.py): recipes fail with exit 2, manifests with exit 3."""

from __future__ import annotations

import json
import tomllib
import typing

import pytest

from devops_cp.cli import _describe_step
from executor.steps import step_label
from manifests.codec import parse_manifest
from manifests.errors import BundleStructureError, RecipeError
from manifests.recipe import parse_recipe
from manifests.steps import Download, LocalCopy, OciArtifact, Step, ToolCommand, parse_step, sizes, step_doc

RECIPE = """
id = "p"
label = "P"
data_type = "sample"
[install._default]
type = "download"
url = "https://x.invalid/a"
dest = "a"
checksum = "sha256:%s"
""" % ("0" * 64)

EVERY_KIND = [
    Download(url="https://x.invalid/a", dest="a", checksum="sha256:" + "1" * 64, size_bytes=3, size_exact=True, extract="tar.gz", strip_components=1, unpacked_size_bytes=9),
    LocalCopy(dest="b", source="/media/x.bin"),
    ToolCommand(command=("{python}", "-m", "pip", "install", "{data_dir}/w.whl"), produces=("w.whl",)),
    OciArtifact(ref="ghcr.io/a/b:2", layer_media_type="application/x", dest="db", fallback_refs=("mirror/a/b:2",), size_bytes=5),
]


def test_every_step_type_has_a_class_in_the_union():
    assert {cls.type for cls in typing.get_args(Step)} == {"download", "local_copy", "tool_command", "oci_artifact"}
    assert {type(s) for s in EVERY_KIND} == set(typing.get_args(Step))


@pytest.mark.parametrize("step", EVERY_KIND, ids=lambda s: s.type)
def test_every_step_type_round_trips_and_every_match_handles_it(step):
    """step_doc -> parse_step gives the same frozen step; the matches that branch on types all answer."""
    assert parse_step(json.loads(json.dumps(step_doc(step))), "s", lambda f, p: AssertionError(f"{f}: {p}")) == step
    assert step_label(step) and _describe_step(step) and sizes(step) is not None


def _recipe_error(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse_recipe(tomllib.loads(text), "site/p.toml")
    assert info.value.exit_code == 2
    return info.value


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ('colour = "red"', "install._default.colour", "not a known field of a download step"),
        ("command = ['rm', '-rf', '/']", "install._default.command", "not a known field of a download step"),
        ("size_bytes = '3'", "install._default.size_bytes", "must be an integer"),
        ("size_bytes = true", "install._default.size_bytes", "must be an integer"),
        ("size_bytes = -1", "install._default.size_bytes", "not be negative"),
        ("extract = 'rar'", "install._default.extract", "must be one of"),
    ],
)
def test_a_recipe_step_field_is_checked_and_named(extra, field, words):
    error = _recipe_error(RECIPE + extra + "\n")
    assert error.field == field and words in error.problem and "site/p.toml" in str(error)


@pytest.mark.parametrize(
    ("step", "field", "words"),
    [
        ({"type": "tool_command", "command": []}, "command", "non-empty first argument"),
        ({"type": "tool_command", "command": [""]}, "command", "non-empty first argument"),
        ({"type": "tool_command"}, "command", "is required"),
        ({"type": "tool_command", "command": "pip install x"}, "command", "a list of strings"),
        ({"type": "tool_command", "command": ["a", 3]}, "command", "a list of strings"),
        ({"type": "shell", "command": ["a"]}, "type", "must be one of"),
    ],
)
def test_a_recipe_tool_command_is_checked(step, field, words):
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in step.items())
    error = _recipe_error(RECIPE.split("[install._default]")[0] + "[install._default]\n" + body + "\n")
    assert error.field == f"install._default.{field}" and words in error.problem


def _manifest(step) -> bytes:
    pack = {
        "key": "p", "id": "p", "label": "", "data_type": "sample", "choices": {}, "update_schedule": "manual",
        "fetched_at": "2030-01-01T00:00:00Z", "offline_steps": [step], "source": "", "checksum_verified": True,
        "tool_hint": "", "hardware": {"gpu_vendor": "", "min_vram_mb": 0},
    }  # fmt: skip
    doc = {"format_version": 2, "bundle_id": "b", "created": "2030-01-01T00:00:00Z", "expires": None, "tool_version": "t", "signer_key_id": None, "packs": [pack], "files": []}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("step", "field", "words"),
    [
        ({"type": "tool_command", "command": ["true"], "shell": True}, "offline_steps[0].shell", "not a known field"),
        ({"type": "tool_command", "command": []}, "offline_steps[0].command", "non-empty first argument"),
        ({"type": "tool_command", "command": [1]}, "offline_steps[0].command", "a list of strings"),
        ({"type": "tool_command", "command": ["true"], "produces": ["../x"]}, "offline_steps[0].produces", "'..'"),
        ({"type": "download", "url": "https://x.invalid/a", "dest": "a"}, "offline_steps[0].type", "only tool_command"),
        ("pip install x", "offline_steps[0]", "JSON object"),
    ],
)
def test_a_manifest_step_is_checked_by_the_same_parser_and_is_exit_3(step, field, words):
    with pytest.raises(BundleStructureError) as info:
        parse_manifest(_manifest(step))
    assert info.value.exit_code == 3
    assert f"manifest.json: field 'packs[0].{field}'" in str(info.value) and words in str(info.value)


def test_a_manifest_step_parses_to_its_frozen_class():
    manifest = parse_manifest(_manifest({"type": "tool_command", "command": ["docker", "load", "-i", "{data_dir}/x.tar"]}))
    assert manifest.packs[0].offline_steps == (ToolCommand(command=("docker", "load", "-i", "{data_dir}/x.tar")),)
