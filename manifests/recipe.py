"""Recipes: one TOML file per pack -> typed, validated `Recipe` objects.

A bad field gets a `RecipeError` naming the file, the field and the problem.
The schema is documented in docs/recipes.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from manifests.errors import RecipeError
from manifests.names import IDENTIFIER_RULE, OPTION_VALUE_RULE, is_identifier, is_option_value
from manifests.steps import EXTRACT_FORMATS, STEP_TYPES, Step, ToolCommand, parse_step

__all__ = ["EXTRACT_FORMATS", "STEP_TYPES", "Choice", "Option", "Recipe", "load_recipe", "parse_recipe"]

SCHEDULES = {"daily": 86400, "weekly": 7 * 86400, "monthly": 30 * 86400, "manual": None}
DEFAULT_KEY = "_default"


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    default: bool = False
    description: str = ""
    gpu_vendor: str | None = None  # requires = { hardware = { gpu_vendor = "nvidia" } }
    min_vram_mb: int | None = None


@dataclass(frozen=True)
class Choice:
    id: str
    label: str
    options: tuple[Option, ...]

    @property
    def default(self) -> Option:
        return next((o for o in self.options if o.default), self.options[0])

    def option(self, value: str) -> Option | None:
        return next((o for o in self.options if o.value == value), None)


@dataclass(frozen=True)
class CredentialSpec:
    name: str
    username_env: str
    password_env: str


@dataclass(frozen=True)
class Requires:
    tools: tuple[str, ...] = ()
    packages_pip: tuple[str, ...] = ()
    network: tuple[str, ...] | Literal[False] = ()


@dataclass(frozen=True)
class Recipe:
    id: str
    label: str
    category: str
    data_type: str
    source: str  # the file it came from, for messages
    description: str = ""
    choices: tuple[Choice, ...] = ()
    install: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    bundle: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    offline: dict[str, tuple[Step, ...]] = field(default_factory=dict)
    requires: Requires = Requires()
    update_schedule: str = "manual"
    size_estimate_mb: float | None = None
    size_warning_mb: float = 500
    credentials: dict[str, CredentialSpec] = field(default_factory=dict)
    tool_hint: str = ""  # e.g. "trivy will not work without its DB"

    @property
    def schedule_seconds(self) -> int | None:
        return SCHEDULES[self.update_schedule]


class _Fields:
    """Reads typed fields from one TOML table, naming `where` in every error."""

    def __init__(self, source: str, where: str, table: Any):
        if not isinstance(table, dict):
            raise RecipeError(source, where, f"must be a table, got {type(table).__name__}")
        self.source, self.where, self.table = source, where, table
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str) -> RecipeError:
        return RecipeError(self.source, self._name(key), problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be {names}, got {value!r}")
        return value

    def text(self, key: str, default: str = "", required: bool = False) -> str:
        return self.get(key, str, default, required)

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise self.fail(key, "must be a list of strings")
        return tuple(values)

    def sub(self, key: str, value: Any) -> "_Fields":
        return _Fields(self.source, self._name(key), value)

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "is not a known field")


def _parse_option(f: _Fields) -> Option:
    req = f.sub("requires", f.get("requires", dict, {}))
    hw = req.sub("hardware", req.get("hardware", dict, {}))
    gpu_vendor = hw.text("gpu_vendor") or None
    # A misspelt gate (`gpu = "nvidia"`) must not silently drop the GPU requirement.
    hw.reject_unknown()
    req.reject_unknown()
    if gpu_vendor not in (None, "nvidia"):
        raise f.fail("requires.hardware.gpu_vendor", f"only 'nvidia' is supported, got {gpu_vendor!r}")
    value = f.text("value", required=True)
    if not is_option_value(value):
        raise f.fail("value", f"{value!r}: must be {OPTION_VALUE_RULE}")
    option = Option(
        value=value,
        label=f.text("label", required=True),
        default=f.get("default", bool, False),
        description=f.text("description"),
        gpu_vendor=gpu_vendor,
        min_vram_mb=f.get("min_vram_mb", int),
    )
    f.reject_unknown()
    return option


def _parse_choice(f: _Fields) -> Choice:
    kind = f.text("type", "select_one")
    if kind != "select_one":
        raise f.fail("type", f"only 'select_one' is supported, got {kind!r}")
    raw_options = f.get("options", list, required=True)
    if not raw_options:
        raise f.fail("options", "needs at least one option")
    options = tuple(_parse_option(f.sub(f"options[{i}]", o)) for i, o in enumerate(raw_options))
    values = [o.value for o in options]
    if len(set(values)) != len(values):
        raise f.fail("options", f"duplicate option values in {values}")
    if sum(o.default for o in options) > 1:
        raise f.fail("options", "more than one option has default = true")
    choice_id = f.text("id", required=True)
    if not is_identifier(choice_id):
        raise f.fail("id", f"{choice_id!r}: must be {IDENTIFIER_RULE}")
    choice = Choice(id=choice_id, label=f.text("label", required=True), options=options)
    f.reject_unknown()
    return choice


def _parse_step(f: _Fields, key: str, value: Any) -> Step:
    return parse_step(value, f._name(key), lambda field, problem: RecipeError(f.source, field, problem))


def _parse_steps(f: _Fields, key: str, value: Any) -> tuple[Step, ...]:
    """A step table, a list of step tables, or the seed's bare command list."""
    if isinstance(value, dict):
        if "type" not in value and set(value) == {DEFAULT_KEY}:
            # The seed's spaCy form: {"sm": {"_default": [...command...]}}
            return _parse_steps(f.sub(key, value), DEFAULT_KEY, value[DEFAULT_KEY])
        return (_parse_step(f, key, value),)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return (_parse_step(f, key, {"type": "tool_command", "command": value}),)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return tuple(_parse_step(f, f"{key}[{i}]", v) for i, v in enumerate(value))
    raise f.fail(key, "must be a step table, a list of step tables, or a command list")


def _parse_step_map(f: _Fields, key: str, valid_keys: set[str], required: bool) -> dict[str, tuple[Step, ...]]:
    table = f.get(key, dict, None, required)
    if table is None:
        return {}
    steps = {k: _parse_steps(f.sub(key, table), k, v) for k, v in table.items()}
    for k in steps:
        if k not in valid_keys:
            raise f.fail(f"{key}.{k}", f"is neither '{DEFAULT_KEY}' nor an option value ({', '.join(sorted(valid_keys - {DEFAULT_KEY}))})")
    return steps


def parse_recipe(data: dict[str, Any], source: str) -> Recipe:
    f = _Fields(source, "", data)
    pack_id = f.text("id", required=True)
    if not is_identifier(pack_id):
        raise f.fail("id", f"{pack_id!r}: must be {IDENTIFIER_RULE}")
    data_type = f.text("data_type", required=True)
    if not is_identifier(data_type):
        raise f.fail("data_type", f"{data_type!r}: must be {IDENTIFIER_RULE} (it names a folder, never a path)")
    choices = tuple(_parse_choice(f.sub(f"choices[{i}]", c)) for i, c in enumerate(f.get("choices", list, [])))
    keys = {DEFAULT_KEY} | ({o.value for o in choices[0].options} if choices else set())
    install = _parse_step_map(f, "install", keys, required=True)
    if choices and DEFAULT_KEY not in install:
        missing = [o.value for o in choices[0].options if o.value not in install]
        if missing:
            raise f.fail("install", f"has no steps for option(s) {', '.join(missing)} and no '{DEFAULT_KEY}'")
    schedule = f.text("update_schedule", "manual")
    if schedule not in SCHEDULES:
        raise f.fail("update_schedule", f"must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    req = f.sub("requires", f.get("requires", dict, {}))
    network = req.get("network", (list, bool), [])
    if network is True:
        raise req.fail("network", "must be a list of hosts, or false")
    requires = Requires(
        tools=req.strings("tools"),
        packages_pip=req.strings("packages_pip"),
        network=False if network is False else tuple(network),
    )
    req.reject_unknown()
    credentials = {}
    for name, spec in f.get("credentials", dict, {}).items():
        cf = f.sub(f"credentials.{name}", spec)
        credentials[name] = CredentialSpec(name, cf.text("username_env", required=True), cf.text("password_env", required=True))
        cf.reject_unknown()
    recipe = Recipe(
        id=pack_id,
        label=f.text("label", required=True),
        category=f.text("category", "data"),
        data_type=data_type,
        source=source,
        description=f.text("description"),
        choices=choices,
        install=install,
        bundle=_parse_step_map(f, "bundle", keys, required=False),
        offline=_parse_step_map(f, "offline", keys, required=False),
        requires=requires,
        update_schedule=schedule,
        size_estimate_mb=f.get("size_estimate_mb", (int, float)),
        size_warning_mb=f.get("size_warning_mb", (int, float), 500),
        credentials=credentials,
        tool_hint=f.text("tool_hint"),
    )
    f.reject_unknown()
    for option, steps in recipe.offline.items():
        for i, step in enumerate(steps):
            if not isinstance(step, ToolCommand):
                raise RecipeError(source, f"offline.{option}[{i}].type", f"an offline step runs a program on the installing host: only tool_command, got {step.type!r}")
    for steps in (*recipe.install.values(), *recipe.bundle.values(), *recipe.offline.values()):
        for step in steps:
            if getattr(step, "credentials", None) and step.credentials not in credentials:
                raise RecipeError(source, "credentials", f"step names credentials {step.credentials!r}, which the recipe does not declare")
    return recipe


def load_recipe(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(str(path), "(file)", f"is not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(str(path), "(file)", f"cannot be read: {exc}") from exc
    return parse_recipe(data, str(path))
