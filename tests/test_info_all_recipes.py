"""Every built-in recipe can be bundled, and `devops-cp data info PACK` says, for each of
its options, how it is fetched online, what a bundle fetches, and how it installs offline.

"Bundleable" means: in bundle mode every option resolves to at least one step that brings
files (a download, an OCI artifact, a local copy, or a tool command whose output is
captured); no bundle step is a tool command that only acts on the online machine (a
non-capturing one is allowed only to prepare the capturing command right after it, as
`docker pull` prepares `docker save`); the offline steps are tool commands (all that a
sideload runs), and every file they name under {data_dir} is one the bundle carries.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from manifests.catalog import builtin_dir, load_catalog
from manifests.hardware import Gpu, Hardware
from manifests.plan import resolve

NVIDIA = Hardware(gpus=(Gpu("nvidia", "NVIDIA H100 80GB HBM3", 81559, 81079, "580.159.04"),), source="test")
CATALOG = load_catalog()
BUILTIN = {pack_id: r for pack_id, r in sorted(CATALOG.recipes.items()) if Path(r.source).parent == builtin_dir()}
FETCHES = ("download", "oci_artifact", "local_copy")


def _options(recipe) -> list[dict[str, str]]:
    return [{recipe.choices[0].id: o.value} for o in recipe.choices[0].options] if recipe.choices else [{}]


ALL = [(pack_id, choices) for pack_id, recipe in BUILTIN.items() for choices in _options(recipe)]


def _id(param) -> str:
    pack_id, choices = param
    return pack_id + "".join(f"[{k}={v}]" for k, v in choices.items())


def _captures(step) -> bool:
    return step.type in FETCHES or (step.type == "tool_command" and bool(step.produces))


def test_every_builtin_recipe_file_is_checked():
    assert sorted(BUILTIN) == sorted(p.stem for p in builtin_dir().glob("*.toml"))
    assert {"trivy-db", "spacy-en", "container-image", "grype-db"} <= set(BUILTIN)


@pytest.mark.parametrize("param", ALL, ids=_id)
def test_no_builtin_recipe_is_left_unbundleable(param):
    pack_id, choices = param
    plan = resolve(BUILTIN[pack_id], choices, NVIDIA, mode="bundle")
    assert any(_captures(s) for s in plan.steps), f"{_id(param)}: a bundle of it would carry nothing"
    for i, step in enumerate(plan.steps):
        if step.type == "tool_command" and not step.produces:
            following = plan.steps[i + 1] if i + 1 < len(plan.steps) else None
            assert following is not None and following.type == "tool_command" and following.produces and following.command[0] == step.command[0], (
                f"{_id(param)}: bundle step `{' '.join(step.command)}` captures nothing: it would act on the online machine only"
            )
    carried = {s.dest for s in plan.steps if getattr(s, "dest", "")} | {p for s in plan.steps for p in getattr(s, "produces", ())}
    for step in plan.offline_steps:
        assert step.type == "tool_command", f"{_id(param)}: sideload runs only tool commands offline"
        for arg in step.command:
            for rel in re.findall(r"\{data_dir\}/([^\s\"']+)", arg):
                assert rel in carried or any(rel.startswith(d + "/") for d in carried), f"{_id(param)}: offline step uses {rel}, which the bundle does not carry"


@pytest.mark.parametrize("pack_id", sorted(BUILTIN))
def test_info_shows_online_bundle_and_offline_for_every_option(cli, pack_id):
    recipe = BUILTIN[pack_id]
    result = cli("info", pack_id, "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert [v["option"] for v in document["variants"]] == [c.get(recipe.choices[0].id) if recipe.choices else None for c in _options(recipe)]
    for variant, choices in zip(document["variants"], _options(recipe)):
        direct = resolve(recipe, choices, NVIDIA, mode="install")
        bundled = resolve(recipe, choices, NVIDIA, mode="bundle")
        # What `install` would run (with --force where a GPU is missing here), step for step.
        assert len(variant["direct_install"]) == len(direct.steps) > 0
        assert len(variant["bundle_fetch"]) == len(bundled.steps) > 0
        assert variant["offline_install"][0] == "place the bundled files, verified by sha256"
        assert len(variant["offline_install"]) == 1 + len(bundled.offline_steps)
        for line, step in zip(variant["direct_install"] + variant["bundle_fetch"], direct.steps + bundled.steps):
            assert (getattr(step, "url", "") or getattr(step, "ref", "") or " ".join(step.command)) in line

    text = cli("info", pack_id)
    assert text.exit_code == 0, text.stderr
    per_variant = text.stdout.split("\n  [")[1:] if recipe.choices else [text.stdout]
    assert len(per_variant) == len(document["variants"])
    for block in per_variant:
        for title in ("online:", "bundle fetches:", "offline:"):
            assert f"      {title} " in block, (pack_id, title, block)


def test_info_of_a_gpu_option_shows_the_steps_install_would_run(cli):
    """spacy-en trf needs an NVIDIA GPU: its online line still shows the pip install that
    `install --force` runs, not the bundle's download-only steps."""
    trf = next(v for v in cli("info", "spacy-en", "--json").json()["variants"] if v["option"] == "trf")
    assert not trf["available_here"]  # the test environment has no GPU (DEVOPS_CP_NO_GPU=1)
    assert len(trf["direct_install"]) == 2 and "pip install --no-index --no-deps" in trf["direct_install"][1]
    assert len(trf["bundle_fetch"]) == 1 and "pip" in trf["offline_install"][1]


def test_the_built_in_offline_actions():
    """How each kind of built-in pack installs offline."""
    offline = {pack_id: [" ".join(s.command) for s in resolve(BUILTIN[pack_id], {}, NVIDIA, mode="bundle").offline_steps] for pack_id in BUILTIN}
    assert offline["spacy-en"] == ["{python} -m pip install --no-index --no-deps {data_dir}/wheels/en_core_web_sm-3.8.0-py3-none-any.whl"]
    assert offline["container-image"] == ["docker load -i {data_dir}/alpine-3.20.tar"]
    for pack_id in ("trivy-db", "trivy-java-db", "grype-db", "whisper-model", "geolite2", "nltk-data", "nerd-font-firacode"):
        assert offline[pack_id] == [], pack_id  # placing the verified files is the whole install
