"""The step types, one frozen dataclass each, and the one strict parser for them.

Recipes (TOML) and bundle manifests (JSON) both carry steps; both are read by `parse_step`,
which refuses an unknown field, a wrong type or a missing one. The caller says how to fail:
a recipe's error is exit 2, a manifest's exit 3. Code that acts on a step matches on its
class, with `assert_never` for the case that cannot happen, so a new step type is a type
error wherever it is not handled yet.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, assert_never

__all__ = [
    "EXTRACT_FORMATS",
    "STEP_TYPES",
    "Download",
    "LocalCopy",
    "OciArtifact",
    "Step",
    "ToolCommand",
    "parse_step",
    "sizes",
    "step_doc",
]

EXTRACT_FORMATS = ("tar.gz", "tar.zst", "tar.xz", "tar", "zip")
_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, kw_only=True)
class Download:
    """Fetch a URL (resumable); the file becomes `dest`, or is extracted below it."""

    type: ClassVar[str] = "download"
    url: str
    dest: str
    checksum: str | None = None  # "sha256:HEX"
    checksum_url: str | None = None  # a sha256sum-format file published beside the data
    size_bytes: int | None = None
    size_exact: bool = False
    extract: str | None = None
    strip_components: int = 0
    unpacked_size_bytes: int | None = None
    credentials: str | None = None  # name of a [credentials.NAME] entry


@dataclass(frozen=True, kw_only=True)
class LocalCopy:
    """A file on this host (a USB stick): `source`, or the user's `--source FILE` when empty."""

    type: ClassVar[str] = "local_copy"
    dest: str
    source: str = ""
    checksum: str | None = None
    size_bytes: int | None = None
    size_exact: bool = False
    extract: str | None = None
    strip_components: int = 0
    unpacked_size_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class ToolCommand:
    """Run a program (no shell); `produces` lists the files it must leave in {data_dir}."""

    type: ClassVar[str] = "tool_command"
    command: tuple[str, ...]
    produces: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class OciArtifact:
    """One layer of an OCI artifact; its digest is its checksum."""

    type: ClassVar[str] = "oci_artifact"
    ref: str
    layer_media_type: str
    dest: str
    fallback_refs: tuple[str, ...] = ()
    size_bytes: int | None = None
    extract: str | None = None
    strip_components: int = 0
    unpacked_size_bytes: int | None = None


Step = Download | LocalCopy | ToolCommand | OciArtifact
_CLASSES: dict[str, type] = {cls.type: cls for cls in (Download, LocalCopy, ToolCommand, OciArtifact)}
STEP_TYPES = tuple(_CLASSES)
_STRING_LISTS = frozenset({"command", "produces", "fallback_refs"})
# What a field must hold, by its annotation (the dataclasses above use `from __future__ import annotations`).
_KINDS: dict[str, tuple[type, str]] = {
    "str": (str, "a string"),
    "str | None": (str, "a string"),
    "int | None": (int, "an integer"),
    "int": (int, "an integer"),
    "bool": (bool, "true or false"),
    "tuple[str, ...]": (list, "a list of strings"),
}


Fail = Callable[[str, str], Exception]  # (field, problem) -> the caller's error


def parse_step(data: Any, where: str, fail: Fail) -> Step:
    """A step table as a recipe or a manifest writes it -> its typed step.

    `where` names the step in errors (`install._default[0]`, `packs[0].offline_steps[1]`);
    `fail(field, problem)` builds the caller's error, which this raises.
    """
    def field_name(key: str) -> str:
        return f"{where}.{key}" if where else key

    if not isinstance(data, Mapping):
        raise fail(where, f"a step must be a table (a JSON object), got {type(data).__name__}")
    kind = data.get("type")
    if kind not in _CLASSES:
        raise fail(field_name("type"), f"must be one of {', '.join(STEP_TYPES)}, got {kind!r}")
    cls = _CLASSES[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields) - {"type"})
    if unknown:
        raise fail(field_name(unknown[0]), f"is not a known field of a {kind} step (its fields: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise fail(field_name(name), f"is required for a {kind} step")
            continue
        value = data[name]
        expected, words = _KINDS[f.type]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise fail(field_name(name), f"must be {words}, got {value!r}")
        if f.type == "str | None" and not value:  # recipes write "" for "none" too
            continue
        if name in _STRING_LISTS:
            if not all(isinstance(v, str) for v in value):
                raise fail(field_name(name), "must be a list of strings")
            value = tuple(value)
        values[name] = value
    step = cls(**values)
    _check_values(step, field_name, fail)
    return step


def _check_values(step: Step, field_name: Callable[[str], str], fail: Fail) -> None:
    match step:
        case ToolCommand(command=command):
            if not command or not command[0]:
                raise fail(field_name("command"), "must name a program to run (a non-empty first argument)")
            return
        case Download(url=url):
            if not url:
                raise fail(field_name("url"), "is required for a download step")
        case OciArtifact(ref=ref, layer_media_type=media_type):
            if not ref:
                raise fail(field_name("ref"), "is required for an oci_artifact step")
            if not media_type:
                raise fail(field_name("layer_media_type"), "is required for an oci_artifact step")
        case LocalCopy():
            pass
    if not step.dest:
        raise fail(field_name("dest"), f"is required for a {step.type} step")
    if step.extract is not None and step.extract not in EXTRACT_FORMATS:
        raise fail(field_name("extract"), f"must be one of {', '.join(EXTRACT_FORMATS)}, got {step.extract!r}")
    for name in ("size_bytes", "strip_components", "unpacked_size_bytes"):
        value = getattr(step, name)
        if value is not None and value < 0:
            raise fail(field_name(name), "must not be negative")
    checksum = getattr(step, "checksum", None)
    if checksum is not None and not _CHECKSUM.fullmatch(checksum):
        raise fail(field_name("checksum"), "must be 'sha256:' followed by 64 lowercase hex digits")
    if getattr(step, "size_exact", False) and step.size_bytes is None:
        raise fail(field_name("size_exact"), "needs size_bytes")


def sizes(step: Step) -> tuple[int, int]:
    """(bytes it fetches, bytes it unpacks to) as the recipe estimates them; 0 where it says nothing."""
    match step:
        case ToolCommand():
            return 0, 0
        case Download() | LocalCopy() | OciArtifact():
            return step.size_bytes or 0, (step.unpacked_size_bytes or 0) if step.extract else 0
        case _:
            assert_never(step)


def step_doc(step: Step) -> dict[str, Any]:
    """The step as a manifest writes it: its type and the fields that differ from their defaults."""
    doc: dict[str, Any] = {"type": step.type}
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        if f.default is dataclasses.MISSING or value != f.default:
            doc[f.name] = list(value) if isinstance(value, tuple) else value
    return doc
