"""Shared checks of configuration input: identifiers, and msgspec errors in plain words with their path."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from loyalty_cdp.errors import InvalidInput

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")


def check_id(value: Any, field: str) -> str:
    """``value`` if it is an identifier (the program file's rule), else :class:`InvalidInput`."""
    if not isinstance(value, str) or not ID.match(value):
        raise InvalidInput(field, "an id is 1-64 letters, digits, '_', '.', ':' or '-', first a letter or digit")
    return value


def explain(error: msgspec.ValidationError) -> tuple[str, str]:
    """(key path below the converted object, reason in plain words) of a msgspec error."""
    message, _, where = str(error).partition(" - at `$")
    path = where.rstrip("`").lstrip(".").replace(".[", "[")
    unknown = _UNKNOWN.match(message)
    if unknown:
        key = unknown.group("key")
        return (f"{path}.{key}" if path else key), f"unknown key {key!r}"
    missing = _MISSING.match(message)
    if missing:
        key = missing.group("key")
        return (f"{path}.{key}" if path else key), "required key is missing"
    expected = _EXPECTED.match(message)
    if expected:
        return path, f"expected {expected.group('want')}, got {expected.group('got')}"
    return path, message


def convert(raw: Any, kind: type[Any], field: str) -> Any:
    """``raw`` converted to the msgspec type ``kind``; errors name ``field`` and the key below it."""
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        key, reason = explain(exc)
        where = field if not key else (f"{field}{key}" if key.startswith("[") else f"{field}.{key}")
        raise InvalidInput(where, reason) from None
