"""resolve(recipe, choices, hardware) -> Plan: pure, no network, no writes.

Everything that can be decided before the first byte is decided here: which
option applies, whether the hardware allows it, and where each step writes
(always a path relative to the pack's data directory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Literal, assert_never

from manifests.datatypes import default_dir
from manifests.errors import ChoiceError, HardwareRequirementError, RecipeError
from manifests.hardware import Hardware, gpu_fit
from manifests.names import pack_key
from manifests.recipe import DEFAULT_KEY, Recipe
from manifests.steps import Download, LocalCopy, OciArtifact, Step, ToolCommand, sizes

Mode = Literal["install", "bundle", "sideload"]


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    choices: tuple[tuple[str, str], ...]  # (choice id, value), every choice, defaults filled in
    steps: tuple[Step, ...]  # how to fetch; placeholders other than {data_dir} etc. expanded
    offline_steps: tuple[Step, ...]  # bundle mode: run on the air-gapped host once the files are staged
    warnings: tuple[str, ...] = ()

    @property
    def pack_id(self) -> str:
        return self.recipe.id

    @property
    def key(self) -> str:
        """Install records are keyed by pack and options: whisper tiny and base live side by side."""
        return record_key(self.recipe.id, dict(self.choices))

    @property
    def size_estimate_bytes(self) -> int:
        sized = [sizes(s)[0] for s in self.steps if sizes(s)[0]]
        if sized:
            return sum(sized)
        return int((self.recipe.size_estimate_mb or 0) * 10**6)


def record_key(pack_id: str, choices: dict[str, str]) -> str:
    return pack_key(pack_id, choices)


def parse_choice_args(pack_arg: str, choice_args: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
    """'whisper-model:model_size=base' and/or -c model_size=base -> ('whisper-model', {...})."""
    pack_id, _, inline = pack_arg.partition(":")
    pairs = [p for p in inline.split(",") if p] + list(choice_args)
    choices: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ChoiceError(f"invalid choice {pair!r}", hint="write KEY=VALUE, e.g. -c model_size=base")
        choices[key.strip()] = value.strip()
    return pack_id, choices


def _select_choices(recipe: Recipe, requested: dict[str, str]) -> dict[str, str]:
    known = {c.id: c for c in recipe.choices}
    for key in requested:
        if key not in known:
            valid = ", ".join(known) or "none: this pack has no choices"
            raise ChoiceError(f"{recipe.id} has no choice {key!r}", hint=f"valid choices: {valid}")
    selected = {}
    for choice in recipe.choices:
        value = requested.get(choice.id, choice.default.value)
        if choice.option(value) is None:
            valid = ", ".join(o.value for o in choice.options)
            raise ChoiceError(f"{recipe.id}: {value!r} is not a valid {choice.id}", hint=f"valid values: {valid}")
        selected[choice.id] = value
    return selected


def _hardware_warnings(recipe: Recipe, selected: dict[str, str], hardware: Hardware, mode: Mode, force: bool) -> list[str]:
    warnings = []
    for choice in recipe.choices:
        option = choice.option(selected[choice.id])
        fit = gpu_fit(hardware, option.gpu_vendor, option.min_vram_mb)
        name = f"{recipe.id} {choice.id}={option.value}"
        if fit.missing_gpu:
            why = f"{name} {fit.missing_gpu}"
            if mode == "bundle":
                warnings.append(f"{why}; bundling it anyway, the target host may have one")
            elif force:
                warnings.append(f"{why}; installing anyway because of --force")
            else:
                raise HardwareRequirementError(why, hint="choose another option, or pass --force to install it anyway")
        if fit.low_vram and (fit.vram_mb or mode != "bundle"):  # a bundling machine without a GPU says nothing
            warnings.append(f"{name} {fit.low_vram}: it may run out of memory at inference time")
    return warnings


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(text: str, values: dict[str, str]) -> str:
    """Fill {choice} placeholders; leave executor-time ones ({data_dir}, {file}) for later.

    Only `{name}` is a placeholder: any other brace (a shell snippet's `{ ...; }`, `${VAR:-x}`,
    a lone `}`) is left as written, as the executor's runtime expansion does.
    """
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def normalize_dest(recipe: Recipe, dest: str) -> str:
    """A relative path inside the pack's data directory, or a RecipeError.

    The seed's absolute form (`~/.cache/whisper/tiny.pt`) is accepted when it lands
    inside the data type's default directory, and is read relative to it, so that it
    still works when the directory is moved in the config file.
    """
    raw = dest.replace("\\", "/")
    if raw.startswith(("~", "/")):
        base = default_dir(recipe.data_type).rstrip("/") + "/"
        if not raw.startswith(base):
            raise RecipeError(recipe.source, "dest", f"{dest!r} is outside the {recipe.data_type} data directory {base}")
        raw = raw[len(base):]
    path = PurePosixPath(raw)
    if raw in ("", ".") or path.is_absolute() or ".." in path.parts:
        raise RecipeError(recipe.source, "dest", f"{dest!r} must name a path inside the pack's data directory")
    return str(path)


def _expand_step(recipe: Recipe, step: Step, values: dict[str, str]) -> Step:
    def text(value: str) -> str:
        return expand(value, values)

    def dest(value: str) -> str:
        return normalize_dest(recipe, expand(value, values))

    match step:
        case Download():
            return replace(step, url=text(step.url), dest=dest(step.dest), checksum_url=step.checksum_url and text(step.checksum_url))
        case LocalCopy():
            return replace(step, source=text(step.source), dest=dest(step.dest))
        case ToolCommand():
            return replace(step, command=tuple(map(text, step.command)), produces=tuple(map(dest, step.produces)))
        case OciArtifact():
            return replace(step, ref=text(step.ref), fallback_refs=tuple(map(text, step.fallback_refs)), dest=dest(step.dest))
        case _:
            assert_never(step)


def _steps_for(recipe: Recipe, table: dict[str, tuple[Step, ...]], selected: dict[str, str]) -> tuple[Step, ...]:
    primary = selected[recipe.choices[0].id] if recipe.choices else DEFAULT_KEY
    steps = table.get(primary) or table.get(DEFAULT_KEY) or ()
    values = {**selected, "pack": recipe.id}
    return tuple(_expand_step(recipe, s, values) for s in steps)


def _runs_on_target(step: Step) -> bool:
    """A tool command that captures nothing (`pip install`, `fc-cache`) belongs to the installing host."""
    return isinstance(step, ToolCommand) and not step.produces


def resolve(recipe: Recipe, requested: dict[str, str], hardware: Hardware, *, mode: Mode = "install", force: bool = False) -> Plan:
    """For `install`, steps are the recipe's install steps and nothing is deferred.

    For `bundle`, steps fetch files on the online machine: the recipe's `bundle` table,
    else its install steps minus the tool commands that capture nothing; those, or the
    recipe's `offline` table, run on the air-gapped host once the files are staged.
    """
    selected = _select_choices(recipe, requested)
    warnings = _hardware_warnings(recipe, selected, hardware, mode, force)
    install = _steps_for(recipe, recipe.install, selected)
    if mode != "bundle":
        steps, offline = install, ()
    else:
        steps = _steps_for(recipe, recipe.bundle, selected) if recipe.bundle else tuple(s for s in install if not _runs_on_target(s))
        offline = _steps_for(recipe, recipe.offline, selected) if recipe.offline else tuple(s for s in install if _runs_on_target(s))
    return Plan(recipe=recipe, choices=tuple(selected.items()), steps=steps, offline_steps=offline, warnings=tuple(warnings))
