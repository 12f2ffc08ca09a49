"""The built-in catalog (manifests/packs/*.toml), user catalog directories, choice and
dest validation, and the nvidia-smi parsers against real H100 output.

Pure: no network, no subprocess; files only under tmp_path.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest

from manifests.catalog import builtin_dir, load_catalog
from manifests.datatypes import DEFAULT_DATA_DIRS
from manifests.errors import ChoiceError, HardwareRequirementError, RecipeError
from manifests.hardware import Gpu, Hardware, parse_nvidia_smi_csv, parse_nvidia_smi_xml
from manifests.plan import expand, parse_choice_args, resolve
from manifests.recipe import DEFAULT_KEY, SCHEDULES, load_recipe, parse_recipe

NVIDIA = Hardware(gpus=(Gpu("nvidia", "NVIDIA H100 80GB HBM3", 81559, 81079, "580.159.04"),), source="test")
NO_GPU = Hardware()
SMALL_NVIDIA = Hardware(gpus=(Gpu("nvidia", "NVIDIA T4", 2048),), source="test")

EXPECTED_PACKS = {
    "whisper-model",
    "spacy-en",
    "trivy-db",
    "trivy-java-db",
    "geolite2",
    "nerd-font-firacode",
    "grype-db",
    "nltk-data",
}

CATALOG = load_catalog()
BUILTIN = {pack_id: r for pack_id, r in CATALOG.recipes.items() if Path(r.source).parent == builtin_dir()}


def _options(recipe):
    """(recipe, choices) for every value of every choice; defaults fill the rest."""
    if not recipe.choices:
        return [{}]
    return [{c.id: o.value} for c in recipe.choices for o in c.options]


ALL_OPTIONS = [(pack_id, choices) for pack_id, r in sorted(BUILTIN.items()) for choices in _options(r)]
GPU_GATED = [
    (pack_id, {c.id: o.value})
    for pack_id, r in sorted(BUILTIN.items())
    for c in r.choices
    for o in c.options
    if o.gpu_vendor
]


def _option_id(param):
    pack_id, choices = param
    return pack_id + "".join(f"[{k}={v}]" for k, v in choices.items())


def _all_step_specs(recipe):
    for table in (recipe.install, recipe.bundle, recipe.offline):
        for steps in table.values():
            yield from steps


# --- the built-in catalog ---------------------------------------------------------------


def test_builtin_catalog_loads_without_errors():
    assert [str(e) for e in CATALOG.errors] == []
    assert EXPECTED_PACKS <= set(BUILTIN)


def test_one_recipe_per_file_named_after_its_id():
    for path in sorted(builtin_dir().glob("*.toml")):
        assert load_recipe(path).id == path.stem


@pytest.mark.parametrize("pack_id", sorted(EXPECTED_PACKS))
def test_every_pack_has_its_metadata(pack_id):
    recipe = BUILTIN[pack_id]
    assert recipe.label and recipe.description
    assert recipe.category == "data"
    assert recipe.data_type in DEFAULT_DATA_DIRS, "a built-in pack installs where its tool looks"
    assert recipe.update_schedule in SCHEDULES
    assert recipe.size_estimate_mb and recipe.size_estimate_mb > 0
    assert recipe.size_warning_mb > 0
    assert recipe.requires.network, "every built-in pack names the hosts it downloads from"


def test_every_source_value_is_cited():
    """A comment above every URL, size and checksum line says where it comes from."""
    cited = re.compile(r"^(url|checksum|checksum_url|size_bytes|unpacked_size_bytes|ref)\s*=")
    for path in sorted(builtin_dir().glob("*.toml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if cited.match(line):
                above = [text for text in lines[max(0, number - 4) : number] if text.startswith("#")]
                assert above, f"{path.name}:{number + 1}: {line.split('=')[0].strip()} has no source comment above it"


def test_every_download_step_has_a_checksum_or_a_checksum_url():
    for recipe in BUILTIN.values():
        for step in _all_step_specs(recipe):
            if step.type == "download":
                assert step.checksum or step.checksum_url, f"{recipe.id}: {step.url} is not verified"


def test_every_exact_size_is_positive_and_estimates_are_marked():
    for recipe in BUILTIN.values():
        for step in _all_step_specs(recipe):
            if getattr(step, "size_exact", False):
                assert step.size_bytes and step.size_bytes > 0
            if step.type in ("download", "oci_artifact"):
                assert step.size_bytes, f"{recipe.id}: {getattr(step, 'url', '') or step.ref} has no size for the space check"
            if getattr(step, "extract", None):
                assert step.unpacked_size_bytes, f"{recipe.id}: an extracted step needs unpacked_size_bytes"


def test_whisper_checksums_are_the_sha256_in_the_url():
    """openai/whisper's _download() checks sha256(file) == url.split('/')[-2]; so do we."""
    recipe = BUILTIN["whisper-model"]
    assert recipe.choices[0].default.value == "tiny"
    for value, steps in recipe.install.items():
        (step,) = steps
        segments = step.url.split("/")
        assert step.url.startswith("https://openaipublic.azureedge.net/main/whisper/models/")
        assert step.checksum == "sha256:" + segments[-2], value
        assert PurePosixPath(step.dest).name == segments[-1], value


def test_whisper_gates_and_vram():
    options = {o.value: o for o in BUILTIN["whisper-model"].choices[0].options}
    assert options["large"].gpu_vendor == "nvidia" and options["large"].min_vram_mb == 10000
    assert options["medium"].min_vram_mb == 5000 and "5 GB" in options["medium"].description
    assert options["turbo"].min_vram_mb == 6000
    assert options["tiny"].gpu_vendor is None and options["tiny"].default
    # large is large-v3, whose file whisper names large-v3.pt
    (large,) = BUILTIN["whisper-model"].install["large"]
    assert large.url.endswith("/large-v3.pt")


def test_whisper_small_gpu_warns_about_memory_but_installs():
    plan = resolve(BUILTIN["whisper-model"], {"model_size": "medium"}, SMALL_NVIDIA)
    assert plan.steps and any("5000 MiB" in w for w in plan.warnings)


def _paths(step) -> list[str]:
    """Where a step writes, relative to the pack's data dir: its dest, or what a tool produces."""
    return [step.dest] if getattr(step, "dest", "") else list(getattr(step, "produces", ()))


@pytest.mark.parametrize("param", ALL_OPTIONS, ids=_option_id)
def test_every_option_resolves_with_an_nvidia_gpu(param):
    pack_id, choices = param
    recipe = BUILTIN[pack_id]
    for mode in ("install", "bundle", "sideload"):
        plan = resolve(recipe, choices, NVIDIA, mode=mode)
        assert plan.steps, f"{pack_id} {choices} has nothing to do in {mode} mode"
        assert dict(plan.choices).items() >= choices.items()
        for step in (*plan.steps, *plan.offline_steps):
            for path in _paths(step):
                pure = PurePosixPath(path)
                assert not pure.is_absolute() and ".." not in pure.parts and not path.startswith("~"), path
            # plan-time placeholders are gone; only the executor's own remain
            for text in (*(getattr(step, f, "") or "" for f in ("url", "checksum_url", "ref", "dest", "source")), *getattr(step, "command", ()), *getattr(step, "fallback_refs", ())):
                leftover = set(re.findall(r"\{([A-Za-z_]\w*)\}", text))
                assert leftover <= {"data_dir", "python", "file"}, (pack_id, text)


@pytest.mark.parametrize("param", [p for p in ALL_OPTIONS if p not in GPU_GATED], ids=_option_id)
def test_ungated_options_install_without_a_gpu(param):
    pack_id, choices = param
    plan = resolve(BUILTIN[pack_id], choices, NO_GPU, mode="install")
    assert plan.steps


@pytest.mark.parametrize("param", GPU_GATED, ids=_option_id)
def test_gpu_gated_options_refuse_install_without_a_gpu_but_bundle_with_a_warning(param):
    pack_id, choices = param
    recipe = BUILTIN[pack_id]
    with pytest.raises(HardwareRequirementError) as info:
        resolve(recipe, choices, NO_GPU, mode="install")
    assert "NVIDIA" in str(info.value) and "--force" in str(info.value)
    with pytest.raises(HardwareRequirementError):
        resolve(recipe, choices, NO_GPU, mode="sideload")
    plan = resolve(recipe, choices, NO_GPU, mode="bundle")
    assert plan.steps
    assert any("bundling it anyway" in w for w in plan.warnings)
    forced = resolve(recipe, choices, NO_GPU, mode="install", force=True)
    assert any("--force" in w for w in forced.warnings)


def test_the_gated_options_are_the_expected_ones():
    assert set(map(_option_id, GPU_GATED)) == {"whisper-model[model_size=large]", "spacy-en[model_size=trf]"}


def test_options_of_one_pack_never_share_a_destination():
    """whisper tiny and base, or two NLTK packages, are installed side by side without clobbering."""
    for pack_id, recipe in BUILTIN.items():
        if not recipe.choices:
            continue
        seen: dict[str, str] = {}
        for choices in _options(recipe):
            plan = resolve(recipe, choices, NVIDIA, mode="bundle")
            for step in plan.steps:
                for path in _paths(step):
                    owner = seen.setdefault(path, plan.key)
                    assert owner == plan.key, f"{pack_id}: {path} is written by {owner} and {plan.key}"


def test_spacy_installs_the_wheel_it_downloaded_and_bundles_only_the_wheel():
    recipe = BUILTIN["spacy-en"]
    for option in recipe.choices[0].options:
        wheel = f"en_core_web_{option.value}-3.8.0-py3-none-any.whl"
        direct = resolve(recipe, {"model_size": option.value}, NVIDIA, mode="install")
        download, pip = direct.steps
        assert download.type == "download" and download.dest == f"wheels/{wheel}"
        assert download.url == f"https://github.com/explosion/spacy-models/releases/download/en_core_web_{option.value}-3.8.0/{wheel}"
        assert pip.command == ("{python}", "-m", "pip", "install", "--no-index", "--no-deps", f"{{data_dir}}/wheels/{wheel}")
        bundled = resolve(recipe, {"model_size": option.value}, NVIDIA, mode="bundle")
        assert [s.type for s in bundled.steps] == ["download"]
        assert bundled.steps[0] == download
        assert bundled.offline_steps == (pip,)
    assert recipe.requires.packages_pip == ("spacy",)


def test_trivy_dbs_are_oci_artifacts():
    db = resolve(BUILTIN["trivy-db"], {}, NO_GPU).steps[0]
    assert db.type == "oci_artifact" and db.ref == "mirror.gcr.io/aquasec/trivy-db:2"
    assert db.fallback_refs == ("ghcr.io/aquasecurity/trivy-db:2", "public.ecr.aws/aquasecurity/trivy-db:2")
    assert db.layer_media_type == "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
    assert (db.dest, db.extract) == ("db", "tar.gz")
    java = resolve(BUILTIN["trivy-java-db"], {}, NO_GPU).steps[0]
    assert java.layer_media_type == "application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip"
    assert (java.dest, java.extract) == ("java-db", "tar.gz")
    assert BUILTIN["trivy-db"].update_schedule == "daily"
    assert BUILTIN["trivy-db"].tool_hint == "trivy will not work without its DB"


def test_geolite2_expands_the_edition_and_uses_named_credentials():
    recipe = BUILTIN["geolite2"]
    assert recipe.credentials["maxmind"].username_env == "MAXMIND_ACCOUNT_ID"
    assert recipe.credentials["maxmind"].password_env == "MAXMIND_LICENSE_KEY"
    (step,) = resolve(recipe, {"edition": "GeoLite2-Country"}, NO_GPU).steps
    assert step.url == "https://download.maxmind.com/geoip/databases/GeoLite2-Country/download?suffix=tar.gz"
    assert step.checksum_url == step.url + ".sha256"
    assert (step.dest, step.extract, step.strip_components, step.credentials) == ("GeoLite2-Country", "tar.gz", 1, "maxmind")
    assert resolve(recipe, {}, NO_GPU).steps[0].dest == "GeoLite2-City"


def test_grype_runs_grype_into_the_data_dir_and_declares_its_files():
    (step,) = resolve(BUILTIN["grype-db"], {}, NO_GPU).steps
    assert step.type == "tool_command" and "GRYPE_DB_CACHE_DIR={data_dir}" in step.command
    assert step.produces == ("6/vulnerability.db", "6/import.json")
    assert "grype" in BUILTIN["grype-db"].requires.tools


def test_nltk_packages_land_in_nltk_layout():
    recipe = BUILTIN["nltk-data"]
    dests = {o.value: resolve(recipe, {"package": o.value}, NO_GPU).steps[0] for o in recipe.choices[0].options}
    assert dests["punkt_tab"].dest == "tokenizers/punkt_tab" and dests["punkt_tab"].strip_components == 1
    assert dests["stopwords"].dest == "corpora/stopwords"
    assert dests["wordnet"].dest == "corpora/wordnet.zip" and dests["wordnet"].extract is None  # nltk reads the zip
    assert recipe.choices[0].default.value == "punkt_tab"


# --- choices ------------------------------------------------------------------------------


def test_unknown_choice_key_lists_the_valid_ones():
    with pytest.raises(ChoiceError) as info:
        resolve(BUILTIN["whisper-model"], {"size": "tiny"}, NO_GPU)
    assert "size" in str(info.value) and "model_size" in info.value.hint


def test_unknown_choice_value_lists_the_valid_ones():
    with pytest.raises(ChoiceError) as info:
        resolve(BUILTIN["whisper-model"], {"model_size": "huge"}, NO_GPU)
    assert "'huge'" in str(info.value)
    for value in ("tiny", "base", "small", "medium", "large", "turbo"):
        assert value in info.value.hint


def test_a_pack_without_choices_says_so():
    with pytest.raises(ChoiceError) as info:
        resolve(BUILTIN["trivy-db"], {"x": "y"}, NO_GPU)
    assert "no choices" in info.value.hint


def test_choice_arguments_in_both_forms():
    assert parse_choice_args("whisper-model:model_size=base") == ("whisper-model", {"model_size": "base"})
    assert parse_choice_args("nltk-data", ("package=wordnet",)) == ("nltk-data", {"package": "wordnet"})
    with pytest.raises(ChoiceError):
        parse_choice_args("whisper-model", ("model_size",))


# --- user catalog directories -------------------------------------------------------------

GOOD = """
id = "my-pack"
label = "My pack"
data_type = "sample"
[install._default]
type = "download"
url = "https://example.invalid/data.bin"
dest = "data.bin"
checksum = "sha256:{hex}"
""".replace("{hex}", "ab" * 32)


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bad_user_recipe_is_reported_and_the_good_one_next_to_it_loads(tmp_path):
    _write(tmp_path, "my-pack.toml", GOOD)
    bad = _write(tmp_path, "broken.toml", GOOD.replace('"my-pack"', '"broken"').replace("sha256:", "md5:"))
    catalog = load_catalog([tmp_path])
    assert "my-pack" in catalog.recipes and "broken" not in catalog.recipes
    assert EXPECTED_PACKS <= set(catalog.recipes), "the built-ins still load"
    (error,) = catalog.errors
    assert error.source == str(bad)
    assert error.field == "install._default.checksum"
    assert "sha256" in error.problem
    assert str(bad) in str(error) and "install._default.checksum" in str(error)
    with pytest.raises(RecipeError):
        catalog.get("broken")


def test_invalid_toml_is_reported_with_its_file(tmp_path):
    bad = _write(tmp_path, "oops.toml", "id = \n")
    (error,) = load_catalog([tmp_path]).errors
    assert error.source == str(bad) and error.field == "(file)" and "TOML" in error.problem


def test_a_user_recipe_replaces_the_builtin_of_the_same_id(tmp_path):
    _write(tmp_path, "trivy-db.toml", GOOD.replace('"my-pack"', '"trivy-db"'))
    catalog = load_catalog([tmp_path])
    assert catalog.recipes["trivy-db"].source == str(tmp_path / "trivy-db.toml")


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (GOOD.replace('type = "download"', 'type = "ftp"'), "install._default.type", "download, local_copy"),
        (GOOD.replace('dest = "data.bin"', 'dest = "data.bin"\nsize = 3'), "install._default.size", "not a known field"),
        (GOOD.replace('label = "My pack"\n', ""), "label", "required"),
        (GOOD.replace('url = "https://example.invalid/data.bin"\n', ""), "install._default.url", "required for a download"),
        (GOOD.replace('dest = "data.bin"', 'dest = "data.bin"\nsize_exact = true'), "install._default.size_exact", "size_bytes"),
        (GOOD.replace('data_type = "sample"', 'data_type = "sample"\nupdate_schedule = "hourly"'), "update_schedule", "daily"),
    ],
)
def test_recipe_errors_name_the_field_and_the_problem(text, field, words):
    with pytest.raises(RecipeError) as info:
        parse_recipe(__import__("tomllib").loads(text), "user.toml")
    assert info.value.source == "user.toml" and info.value.field == field
    assert words in info.value.problem


def test_install_keys_must_be_option_values():
    import tomllib

    text = """
id = "p"
label = "P"
data_type = "sample"
[[choices]]
id = "size"
label = "Size"
options = [{ value = "a", label = "A" }, { value = "b", label = "B" }]
[install.a]
type = "tool_command"
command = ["true"]
"""
    with pytest.raises(RecipeError) as info:
        parse_recipe(tomllib.loads(text), "p.toml")
    assert info.value.field == "install" and "b" in info.value.problem
    with pytest.raises(RecipeError) as info:
        parse_recipe(tomllib.loads(text + '[install.c]\ntype = "tool_command"\ncommand = ["true"]\n'), "p.toml")
    assert info.value.field == "install.c" and "a, b" in info.value.problem


def test_a_misspelt_gpu_gate_is_an_error_not_a_silent_no_gate():
    import tomllib

    text = """
id = "p"
label = "P"
data_type = "sample"
[[choices]]
id = "size"
label = "Size"
options = [{ value = "a", label = "A", requires = { hardware = { gpu = "nvidia" } } }]
[install._default]
type = "tool_command"
command = ["true"]
"""
    with pytest.raises(RecipeError) as info:
        parse_recipe(tomllib.loads(text), "p.toml")
    assert info.value.field == "choices[0].options[0].requires.hardware.gpu"
    with pytest.raises(RecipeError) as info:
        parse_recipe(tomllib.loads(text.replace("hardware = { gpu", "hardwares = { gpu")), "p.toml")
    assert info.value.field == "choices[0].options[0].requires.hardwares"


def test_bundle_steps_cannot_name_undeclared_credentials():
    import tomllib

    text = GOOD + '[bundle._default]\ntype = "download"\nurl = "https://x.invalid/a"\ndest = "a"\ncredentials = "nope"\n'
    with pytest.raises(RecipeError) as info:
        parse_recipe(tomllib.loads(text), "p.toml")
    assert "nope" in info.value.problem


def test_offline_steps_only_run_programs():
    """What runs on the installing host is a tool command; anything else there is a recipe error."""
    import tomllib

    text = GOOD + '[offline._default]\ntype = "download"\nurl = "https://x.invalid/a"\ndest = "a"\n'
    with pytest.raises(RecipeError) as info:
        parse_recipe(tomllib.loads(text), "p.toml")
    assert info.value.field == "offline._default[0].type" and "only tool_command" in info.value.problem


# --- dest and placeholders --------------------------------------------------------------------


def _with_dest(dest: str, data_type: str = "ml_model"):
    import tomllib

    text = GOOD.replace('dest = "data.bin"', f"dest = {dest!r}").replace('data_type = "sample"', f'data_type = "{data_type}"')
    return parse_recipe(tomllib.loads(text.replace("'", '"')), "user.toml")


@pytest.mark.parametrize("dest", ["../x", "/etc/passwd", "~/.ssh/x", "a/../../x", "~/.cache/whisper/../../.ssh/x", "", "."])
def test_dest_outside_the_data_dir_is_refused(dest):
    with pytest.raises(RecipeError) as info:
        resolve(_with_dest(dest), {}, NO_GPU)  # an empty dest is refused already by the parser
    assert info.value.field.endswith("dest")


def test_dest_escaping_through_a_choice_value_is_refused():
    import tomllib

    text = """
id = "p"
label = "P"
data_type = "sample"
[[choices]]
id = "name"
label = "Name"
options = [{ value = "ok", label = "ok" }, { value = "..", label = "up" }]
[install._default]
type = "tool_command"
command = ["true"]
produces = ["{name}/x"]
"""
    with pytest.raises(RecipeError) as info:  # an option value is a name: refused where it is written
        parse_recipe(tomllib.loads(text), "p.toml")
    assert info.value.field == "choices[0].options[1].value"
    recipe = parse_recipe(tomllib.loads(text.replace('value = ".."', 'value = "up"')), "p.toml")
    assert resolve(recipe, {"name": "ok"}, NO_GPU).steps[0].produces == ("ok/x",)


def test_the_seed_home_form_is_read_relative_to_the_data_dir():
    assert resolve(_with_dest("~/.cache/whisper/tiny.pt"), {}, NO_GPU).steps[0].dest == "tiny.pt"
    assert resolve(_with_dest("models//tiny.pt"), {}, NO_GPU).steps[0].dest == "models/tiny.pt"


def test_expand_fills_names_and_leaves_every_other_brace_alone():
    values = {"edition": "GeoLite2-ASN", "pack": "geolite2"}
    assert expand("{edition}/{pack}/{data_dir}", values) == "GeoLite2-ASN/geolite2/{data_dir}"
    for text in ("sh -c 'f() { echo hi; }; f'", "${HOME:-/root}", "a}b", "{0}", "{a.b}", "{", "}"):
        assert expand(text, values) == text


def test_default_key_is_used_when_no_option_table_exists():
    recipe = BUILTIN["geolite2"]
    assert set(recipe.install) == {DEFAULT_KEY}


# --- nvidia-smi parsers against real output --------------------------------------------------

# Taken on a real H100 with `python tools/gpu_check.py --save` (serial and UUID zeroed).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gpu"

H100 = "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("name", ["nvidia-smi-query.csv", "nvidia-smi-query-header.csv"])
def test_parse_nvidia_smi_csv_fixture(name):
    (gpu,) = parse_nvidia_smi_csv((FIXTURES / name).read_text(encoding="utf-8"))
    assert gpu == Gpu("nvidia", H100, 81559, 81079, "580.159.04")


def test_parse_nvidia_smi_xml_fixture():
    (gpu,) = parse_nvidia_smi_xml((FIXTURES / "nvidia-smi-q.xml").read_text(encoding="utf-8"))
    assert (gpu.vendor, gpu.name, gpu.memory_total_mb, gpu.driver_version) == ("nvidia", H100, 81559, "580.159.04")
    assert gpu.memory_free_mb == 81079


def test_the_real_h100_unlocks_every_option_without_warnings():
    gpus = parse_nvidia_smi_xml((FIXTURES / "nvidia-smi-q.xml").read_text(encoding="utf-8"))
    hardware = Hardware(gpus=gpus, source="nvidia-smi")
    assert hardware.has_vendor("nvidia") and hardware.max_vram_mb() == 81559
    for pack_id, choices in GPU_GATED + [("whisper-model", {"model_size": "medium"})]:
        plan = resolve(BUILTIN[pack_id], choices, hardware, mode="install")
        assert plan.warnings == ()


def test_parsers_tolerate_empty_and_odd_output():
    assert parse_nvidia_smi_csv("") == ()
    assert parse_nvidia_smi_csv("No devices were found\n") == ()
    (gpu,) = parse_nvidia_smi_csv("0, Tesla T4, [N/A], [N/A], 535.1\n")
    assert gpu.memory_total_mb is None and gpu.name == "Tesla T4"
    assert parse_nvidia_smi_xml("<nvidia_smi_log><driver_version>1</driver_version></nvidia_smi_log>") == ()


def test_the_example_in_docs_recipes_md_is_a_valid_recipe():
    import tomllib

    doc = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
    example = doc.read_text(encoding="utf-8").split("## A short example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    recipe = parse_recipe(tomllib.loads(example), str(doc))
    (step,) = resolve(recipe, {"flavour": "lite"}, NO_GPU).steps
    assert step.url == "https://downloads.acme.example/sigs/lite/latest.tar.gz" and step.dest == "lite"
