"""Load a loyalty program from YAML (one document per version) with errors naming file,
line and field.

A program file holds one YAML document per program version (documents separated by
``---``), each a complete program with ``version`` and ``effective_from``. The keys are
documented in ``docs/program-config.md``. Sections named in
:data:`~loyalty_cdp.core.loyalty.program.FUTURE_SECTIONS` are kept raw in
``Program.extensions`` for the parts of the system that define them; any other unknown
key is an error. Every error is a :class:`ProgramFileError` (a ``ConfigError``) whose
message reads ``FILE:LINE: field: reason``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from loyalty_cdp.core.loyalty.book import ProgramBook, ProgramVersion
from loyalty_cdp.core.loyalty.periods import WEEKDAYS
from loyalty_cdp.core.loyalty.program import (
    FUTURE_SECTIONS,
    Program,
    VersionError,
)
from loyalty_cdp.errors import ConfigError

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_INVALID = re.compile(r"Invalid (?:enum )?value (?P<value>.+)")


class ProgramFileError(ConfigError):
    """A program file that cannot be used: ``file``, ``line`` (1-based) and ``field``."""

    def __init__(self, file: str, line: int, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.file = file
        self.line = line
        self.args = (f"{file}:{line}: {field or '(document)'}: {reason}",)


@dataclass(frozen=True)
class ProgramSource:
    """A loaded program with where each of its keys was written, for later error messages."""

    book: ProgramBook
    file: str
    lines: tuple[dict[str, int], ...]  # per document: dotted field path -> line

    def line_of(self, document: int, field: str) -> int:
        return _line_of(self.lines[document], field)

    def error(self, document: int, field: str, reason: str) -> ProgramFileError:
        """An error about ``field`` of document ``document`` (e.g. in a future section)."""
        return ProgramFileError(self.file, self.line_of(document, field), field, reason)


def _line_of(lines: dict[str, int], field: str) -> int:
    path = field
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("", 1)


def _map_lines(node: yaml.Node, path: str, lines: dict[str, int], file: str) -> None:
    """Record the line of every key and item under ``node``; reject duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            child = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ProgramFileError(file, line, path, "keys must be plain strings")
            if key in seen:
                raise ProgramFileError(file, line, child, "duplicate key")
            seen.add(key)
            lines[child] = line
            _map_lines(value_node, child, lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{path}[{index}]"
            lines[child] = item.start_mark.line + 1
            _map_lines(item, child, lines, file)


def _segments(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _SEGMENT.findall(path)]


def _join(segments: list[str | int]) -> str:
    text = ""
    for segment in segments:
        text += f"[{segment}]" if isinstance(segment, int) else (f".{segment}" if text else segment)
    return text


def _struct_at(
    info: msgspec.inspect.Type, data: Any
) -> msgspec.inspect.StructType | None:
    """The struct a value of type ``info`` is decoded as, choosing a tagged variant by ``data``."""
    if isinstance(info, msgspec.inspect.StructType):
        return info
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        if len(structs) == 1:
            return structs[0]
        for struct in structs:
            if isinstance(data, dict) and data.get(struct.tag_field) == struct.tag:
                return struct
    return None


def _type_at(data: Any, segments: list[str | int]) -> tuple[msgspec.inspect.Type | None, Any]:
    """The declared type at ``segments`` below a Program, and the data found there."""
    info: msgspec.inspect.Type | None = msgspec.inspect.type_info(Program)
    for segment in segments:
        if info is None:
            return None, None
        if isinstance(segment, int):
            item = getattr(info, "item_type", None)
            if isinstance(info, msgspec.inspect.UnionType):
                item = next((getattr(t, "item_type", None) for t in info.types), None)
            info = item
            data = data[segment] if isinstance(data, list) and segment < len(data) else None
            continue
        struct = _struct_at(info, data)
        field = (
            next((f for f in struct.fields if f.encode_name == segment), None) if struct else None
        )
        info = field.type if field else None
        data = data.get(segment) if isinstance(data, dict) else None
    return info, data


def _keys(info: msgspec.inspect.Type | None, data: Any) -> list[str]:
    struct = _struct_at(info, data) if info is not None else None
    return [field.encode_name for field in struct.fields] if struct else []


def _choices(info: msgspec.inspect.Type | None) -> list[str]:
    if isinstance(info, msgspec.inspect.LiteralType):
        values = [str(value) for value in info.values]
        if set(values) == set(WEEKDAYS):
            return list(WEEKDAYS)
        return values
    if isinstance(info, msgspec.inspect.FrozenSetType | msgspec.inspect.ListType):
        return _choices(info.item_type)
    return []


def _explain(error: msgspec.ValidationError, data: Any) -> tuple[str, str]:
    """(field path, reason) for a msgspec validation error, in the words of the docs."""
    found = _AT.match(str(error))
    message = found.group("message") if found else str(error)
    segments = _segments(found.group("path") or "") if found else []
    unknown = _UNKNOWN.match(message)
    if unknown:
        key = unknown.group("key")
        info, here = _type_at(data, segments)
        known = [name for name in _keys(info, here) if name != "extensions" or segments]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(known)}"
        return _join([*segments, key]), f"unknown key '{key}'; {hint}"
    missing = _MISSING.match(message)
    if missing:
        return _join([*segments, missing.group("key")]), "required key is missing"
    expected = _EXPECTED.match(message)
    if expected:
        return _join(segments), f"expected {expected.group('want')}, got {expected.group('got')}"
    invalid = _INVALID.match(message)
    if invalid:
        info, _ = _type_at(data, segments)
        choices = _choices(info)
        if not choices and segments and segments[-1] in ("type", "policy"):
            parent, here = _type_at(data, segments[:-1])
            variants = getattr(parent, "types", ()) or getattr(
                getattr(parent, "item_type", None), "types", ()
            )
            choices = [str(t.tag) for t in variants if getattr(t, "tag", None)]
        listed = f"; must be one of {', '.join(choices)}" if choices else ""
        return _join(segments), f"invalid value {invalid.group('value')}{listed}"
    return _join(segments), message


def _program(data: Any, lines: dict[str, int], file: str) -> Program:
    if not isinstance(data, dict):
        raise ProgramFileError(file, lines.get("", 1), "", "a program document must be a mapping")
    if "extensions" in data:
        raise ProgramFileError(
            file, _line_of(lines, "extensions"), "extensions", "unknown key 'extensions'"
        )
    extensions = {key: data.pop(key) for key in list(data) if key in FUTURE_SECTIONS}
    try:
        program = msgspec.convert(data, Program)
    except msgspec.ValidationError as exc:
        field, reason = _explain(exc, data)
        raise ProgramFileError(file, _line_of(lines, field), field, reason) from None
    try:
        ProgramVersion(program)
    except ConfigError as exc:
        raise ProgramFileError(file, _line_of(lines, exc.field), exc.field, exc.reason) from None
    return msgspec.structs.replace(program, extensions=extensions)


def parse_program(text: str, file: str = "<string>") -> ProgramSource:
    """Parse program YAML ``text`` (``file`` names it in errors)."""
    loader = yaml.SafeLoader(text)
    programs: list[Program] = []
    maps: list[dict[str, int]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            lines = {"": node.start_mark.line + 1}
            _map_lines(node, "", lines, file)
            data = loader.construct_document(node)
            programs.append(_program(data, lines, file))
            maps.append(lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ProgramFileError(file, line, "", f"invalid YAML: {exc.problem or exc}") from None
    finally:
        loader.dispose()
    try:
        book = ProgramBook(programs)
    except VersionError as exc:
        lines = maps[exc.document] if maps else {"": 1}
        raise ProgramFileError(file, _line_of(lines, exc.field), exc.field, exc.reason) from None
    return ProgramSource(book=book, file=file, lines=tuple(maps))


def load_program_source(path: str | Path) -> ProgramSource:
    """Read and parse the program file at ``path``."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramFileError(file, 1, "", f"cannot read the file: {exc}") from None
    return parse_program(text, file)


def load_program(path: str | Path) -> ProgramBook:
    """The program at ``path`` as a ProgramBook (every version), or a ProgramFileError."""
    return load_program_source(path).book
