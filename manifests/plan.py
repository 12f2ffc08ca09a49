"""resolve(recipe, choices, hardware) -> Plan: pure, no network, no writes.

Everything that can be decided before the first byte is decided here: which
option applies, whether the hardware allows it, and where each step writes
(always a path relative to the pack's data directory).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from manifests.datatypes import default_dir
from manifests.errors import ChoiceError, HardwareRequirementError, RecipeError
from manifests.hardware import Hardware
from manifests.recipe import DEFAULT_KEY, Recipe, StepSpec

Mode = Literal["install", "bundle", "sideload"]


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    choices: tuple[tuple[str, str], ...]  # (choice id, value), every choice, defaults filled in
    steps: tuple[StepSpec, ...]  # how to fetch; placeholders other than {data_dir} etc. expanded
    offline_steps: tuple[StepSpec, ...]  # bundle mode: run on the air-gapped host once the files are staged
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
        sized = [s.size_bytes for s in self.steps if s.size_bytes]
        if sized:
            return sum(sized)
        return int((self.recipe.size_estimate_mb or 0) * 10**6)


def record_key(pack_id: str, choices: dict[str, str]) -> str:
    if not choices:
        return pack_id
    return pack_id + "@" + ",".join(f"{k}={v}" for k, v in sorted(choices.items()))


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
        if option.gpu_vendor and not hardware.has_vendor(option.gpu_vendor):
            why = f"{recipe.id} {choice.id}={option.value} requires an {option.gpu_vendor.upper()} GPU and none was detected"
            if mode == "bundle":
                warnings.append(f"{why}; bundling it anyway, the target host may have one")
            elif force:
                warnings.append(f"{why}; installing anyway because of --force")
            else:
                raise HardwareRequirementError(why, hint="choose another option, or pass --force to install it anyway")
        vram = hardware.max_vram_mb(option.gpu_vendor)
        if option.min_vram_mb and (vram or 0) < option.min_vram_mb and (vram or mode != "bundle"):
            have = f"{vram} MiB detected" if vram else "no GPU memory detected"
            warnings.append(
                f"{recipe.id} {choice.id}={option.value} needs about {option.min_vram_mb} MiB of GPU memory ({have}): "
                "it may run out of memory at inference time"
            )
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


def _expand_step(recipe: Recipe, step: StepSpec, values: dict[str, str]) -> StepSpec:
    changes = {
        name: expand(getattr(step, name), values)
        for name in ("url", "source", "ref", "checksum_url")
        if getattr(step, name)
    }
    if step.dest:
        changes["dest"] = normalize_dest(recipe, expand(step.dest, values))
    changes["command"] = tuple(expand(arg, values) for arg in step.command)
    changes["produces"] = tuple(normalize_dest(recipe, expand(p, values)) for p in step.produces)
    changes["fallback_refs"] = tuple(expand(r, values) for r in step.fallback_refs)
    return dataclasses.replace(step, **changes)


def _steps_for(recipe: Recipe, table: dict[str, tuple[StepSpec, ...]], selected: dict[str, str]) -> tuple[StepSpec, ...]:
    primary = selected[recipe.choices[0].id] if recipe.choices else DEFAULT_KEY
    steps = table.get(primary) or table.get(DEFAULT_KEY) or ()
    values = {**selected, "pack": recipe.id}
    return tuple(_expand_step(recipe, s, values) for s in steps)


def _runs_on_target(step: StepSpec) -> bool:
    """A tool command that captures nothing (`pip install`, `fc-cache`) belongs to the installing host."""
    return step.type == "tool_command" and not step.produces


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
