"""Typed reads from one object of an untrusted JSON document: one reader for every document we parse.

The bundle manifest and parts index (manifests/codec.py, exit 3) and the host export
(manifests/hoststate.py, exit 2) differ only in the error they raise, so the reader takes it.
Every error names the document and the field, as `doc: field 'packs[0].id': problem`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from manifests.names import IDENTIFIER_RULE, is_identifier, is_relative_path

SHA256 = re.compile(r"[0-9a-f]{64}")  # used with fullmatch: "$" would let a trailing newline through
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

ErrorFactory = Callable[[str], Exception]


class Fields:
    def __init__(self, doc: str, where: str, value: Any, error: ErrorFactory):
        self.doc, self.where, self.error = doc, where, error
        if not isinstance(value, dict):
            raise self.fail(None, f"must be a JSON object, got {json_type(value)}")
        self.value = value

    def name(self, key: str | None) -> str:
        if key is None:
            return self.where or "(top level)"
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str | None, problem: str) -> Exception:
        return self.error(f"{self.doc}: field '{self.name(key)}': {problem}")

    def only(self, *allowed: str) -> None:
        """Exactly these keys: a missing one or one we do not know is an error, never ignored."""
        missing = [k for k in allowed if k not in self.value]
        if missing:
            raise self.fail(missing[0], "missing")
        extra = sorted(set(self.value) - set(allowed))
        if extra:
            raise self.fail(extra[0], "unknown field")

    def get(self, key: str, *types: type, what: str) -> Any:
        value = self.value[key]
        # bool is an int in Python, never in our documents.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise self.fail(key, f"must be {what}, got {json_type(value)}")
        return value

    def text(self, key: str, *, empty: bool = False, max_length: int | None = None) -> str:
        value = self.get(key, str, what="a string")
        if not empty and not value:
            raise self.fail(key, "must not be empty")
        if CONTROL.search(value):
            raise self.fail(key, "must not contain NUL or control characters")
        if max_length is not None and len(value) > max_length:
            raise self.fail(key, f"must be at most {max_length} characters, got {len(value)}")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.value[key] is None else self.text(key)

    def integer(self, key: str, *, minimum: int = 0) -> int:
        value = self.get(key, int, what="an integer")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str) -> bool:
        return self.get(key, bool, what="true or false")

    def sha256(self, key: str) -> str:
        value = self.get(key, str, what="a string")
        if not SHA256.fullmatch(value):
            raise self.fail(key, "must be 64 lowercase hex digits (a sha256)")
        return value

    def identifier(self, key: str) -> str:
        value = self.get(key, str, what="a string")
        if not is_identifier(value):
            raise self.fail(key, f"must be {IDENTIFIER_RULE}, got {value!r}")
        return value

    def relative_path(self, key: str, *, max_length: int | None = None) -> str:
        value = self.text(key, max_length=max_length)
        if not is_relative_path(value):
            raise self.fail(key, f"{value!r} is not a relative path inside the pack")
        return value

    def string_map(self, key: str) -> dict[str, str]:
        value = self.get(key, dict, what="a JSON object")
        if not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()):
            raise self.fail(key, "must map names to non-empty strings")
        return dict(value)

    def timestamp(self, key: str, parse: Callable[[str], datetime]) -> datetime:
        text = self.text(key)
        try:
            return parse(text)
        except ValueError as exc:
            raise self.fail(key, f"must be an ISO 8601 UTC time such as 2024-05-01T12:00:00Z: {exc}") from None

    def array(self, key: str, *, max_items: int | None = None) -> list[Any]:
        value = self.get(key, list, what="an array")
        if max_items is not None and len(value) > max_items:
            raise self.fail(key, f"has {len(value)} entries, more than the {max_items} allowed")
        return value

    def child(self, key: str, index: int | None = None) -> Fields:
        value = self.value[key] if index is None else self.value[key][index]
        return Fields(self.doc, self.name(key) + ("" if index is None else f"[{index}]"), value, self.error)


def json_type(value: Any) -> str:
    names = {
        dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a number",
    }  # fmt: skip
    return "null" if value is None else names.get(type(value), type(value).__name__)
