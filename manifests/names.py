"""Names that come from recipes and bundles: identifiers, relative paths, record file names.

One rule each, used by every layer that takes such a name from outside: recipes (exit 2),
manifests at verify time (exit 3), archive members while unpacking (exit 3), the web routes.
Pure: the callers turn a problem into their own error.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "IDENTIFIER_RULE",
    "OPTION_VALUE_RULE",
    "STAGING_NAME",
    "archive_member_path",
    "identifier_problem",
    "is_identifier",
    "is_option_value",
    "is_pack_key",
    "is_relative_path",
    "pack_key",
    "record_file_name",
    "relative_path_problem",
    "shared_path",
]

# Pack ids and data types (DECISIONS "Second round"): a data type names a folder, a pack id a
# record; neither may be a path, an option (a leading '-') or a hidden name.
_IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
IDENTIFIER_RULE = "lowercase letters, digits, '_' and '-', starting with a letter or digit (at most 64)"

# An option's value (`base.en`, `GeoLite2-City`): it goes into record names and the steps'
# placeholders, so it is a name, never a path, an option or a separator of the pack key.
_OPTION_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
OPTION_VALUE_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit (at most 64)"

# Inside each data dir: the tool's staging area (same filesystem, so renames are atomic). No pack
# path may name it; compared case-folded, for data dirs on case-insensitive filesystems.
STAGING_NAME = ".devops-cp-staging"
_RESERVED_TOP = ".devops-cp"

# A canonical relative path in one match: non-empty parts between single slashes, none of them
# '.' or '..', no backslash, no control character.
_PART = r"(?!\.\.?(?:/|\Z))[^/\\\x00-\x1f\x7f]+"
_CANONICAL = re.compile(f"{_PART}(?:/{_PART})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_identifier(text: object) -> bool:
    return isinstance(text, str) and _IDENTIFIER.fullmatch(text) is not None


def is_option_value(text: object) -> bool:
    return isinstance(text, str) and _OPTION_VALUE.fullmatch(text) is not None


def pack_key(pack_id: str, choices: dict[str, str]) -> str:
    """The install record's key: the pack and its options (whisper tiny and base live side by side)."""
    if not choices:
        return pack_id
    return pack_id + "@" + ",".join(f"{k}={v}" for k, v in sorted(choices.items()))


def is_pack_key(text: object) -> bool:
    """A pack id, or a pack key as pack_key() writes it (`whisper-model@model_size=base.en`)."""
    if not isinstance(text, str):
        return False
    pack_id, at, rest = text.partition("@")
    if not at:
        return is_identifier(pack_id)
    pairs = [pair.partition("=") for pair in rest.split(",")]
    return is_identifier(pack_id) and all(eq and is_identifier(k) and is_option_value(v) for k, eq, v in pairs)


def identifier_problem(text: str) -> str | None:
    """Why `text` is not an identifier, or None."""
    if is_identifier(text):
        return None
    return f"{text!r} is not an identifier: use {IDENTIFIER_RULE}"


def relative_path_problem(path: str) -> str | None:
    """Why `path` is not a safe place below a data directory, or None.

    Safe: relative, canonical (single '/' between parts, no '.' or '..', no backslash), no
    control character, and not inside the tool's own staging area.
    """
    if _CANONICAL.fullmatch(path):
        return _reserved_problem(path)
    if not path:
        return "must not be empty"
    if _CONTROL.search(path):
        return f"{path!r}: must not contain NUL or control characters"
    if "\\" in path:
        return f"{path!r}: backslashes are not allowed"
    if path.startswith("/"):
        return f"{path!r}: absolute paths are not allowed"
    if ".." in path.split("/"):
        return f"{path!r}: '..' is not allowed"
    return f"{path!r}: empty or '.' path components are not allowed"


def is_relative_path(path: str) -> bool:
    return relative_path_problem(path) is None


def _reserved_problem(path: str) -> str | None:
    top = path.partition("/")[0].casefold()
    if top.startswith(_RESERVED_TOP):
        return f"{path!r}: names the tool's own staging area ({STAGING_NAME})"
    return None


def archive_member_path(name: str, strip: int) -> str | None:
    """An archive member's path below its folder after stripping `strip` leading folders, None
    when nothing is left (a top folder); ValueError saying why for one that could land elsewhere.

    Archives are read as published: './a', 'a//b' and Windows' 'a\\b' are the same as 'a/b'.
    After that, the member must pass the same rule as every other path.
    """
    if not _CANONICAL.fullmatch(name):  # nearly every member is canonical already
        if _CONTROL.search(name):
            raise ValueError(f"member {name!r} has NUL or control characters in its name")
        text = name.replace("\\", "/")
        if text.startswith("/") or ".." in text.split("/"):
            raise ValueError(f"member {name!r} would land outside its directory")
        name = "/".join(p for p in text.split("/") if p not in ("", "."))
        if not name:
            return None
    parts = name.split("/")
    return "/".join(parts[strip:]) if len(parts) > strip else None


def record_file_name(key: str) -> str:
    """The install record's file name for a pack key: distinct keys never share a file.

    A key of identifiers and option values (`whisper-model@model_size=base.en`) is its own name,
    as before; any other byte, and '%' itself, is written %XX, so no two keys meet.
    """
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-@=,") else "".join(f"%{b:02X}" for b in c.encode()) for c in key)
    if safe.startswith("."):  # never a hidden file, never '.' or '..'
        safe = "%2E" + safe[1:]
    return safe + ".json"


def shared_path(files: Mapping[str, Iterable[str]], folders: Mapping[str, Iterable[str]] | None = None) -> str | None:
    """Why two owners (packs) claim one path, or None. `files`: each owner's files, `folders`: folders
    each owner has whole (an archive unpacks there), all as absolute paths (data dir joined).

    A clash: one file of two owners; a file of one that is a folder of another (above its file or
    folder, or its whole folder). Clashes inside one owner are the manifest's and archive walk's rules.
    """
    owner: dict[str, str] = {}
    for key, paths in files.items():
        for path in paths:
            other = owner.setdefault(path, key)
            if other != key:
                return f"{path} is a file of both {other!r} and {key!r}"
    seen: set[str] = set()  # folders checked already, with every folder above them
    for key, paths in [*files.items(), *(folders or {}).items()]:
        for path in paths:
            folder = posixpath.dirname(path)
            while folder not in seen and folder != posixpath.dirname(folder):
                other = owner.get(folder)
                if other is not None and other != key:
                    return f"{folder} is a file of {other!r} and a folder of {key!r}"
                seen.add(folder)
                folder = posixpath.dirname(folder)
    for key, paths in (folders or {}).items():
        for path in paths:
            other = owner.get(path)
            if other is not None and other != key:
                return f"{path} is a file of {other!r} and the folder {key!r} unpacks an archive into"
    return None
