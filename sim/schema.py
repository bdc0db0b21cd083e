"""Typed option tables: what a scenario key may hold, checked with a message that says
where the key is and what was expected.

    OPTIONS = {"clients": Field.int(8, 1, 10_000, "simulated clients")}
    values = validate(table, OPTIONS, Source(path, text), ("systems", "counter"))
"""
from __future__ import annotations

import builtins

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

REQUIRED: Any = object()  # a Field default meaning: the key must be given


class ScenarioError(Exception):
    """A bad scenario: the message names the file, the line when known, and the key."""

    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.file, self.line, self.key, self.detail = file, line, key, message


def key_path(path: tuple) -> str:
    """("phases", 1, "duration") -> "phases[1].duration"."""
    out = ""
    for part in path:
        out += f"[{part}]" if type(part) is int else (f".{part}" if out else str(part))
    return out


class Source:
    """A scenario's file name and text, and the line each key or table was written on."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = _key_lines(text)

    def error(self, path: tuple, message: str) -> ScenarioError:
        line = None
        for n in range(len(path), -1, -1):  # the key, else the nearest enclosing table
            line = self.lines.get(tuple(path[:n]))
            if line is not None:
                break
        return ScenarioError(self.file, line, key_path(path), message)


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r"\"[^\"]*\"|'[^']*'|[^.]+", text)]


def _key_lines(text: str) -> dict[tuple, int]:
    """Best effort (tomllib keeps no positions): the line of each `key =` and header."""
    lines: dict[tuple, int] = {}
    table: tuple = ()
    counts: dict[tuple, int] = {}
    in_string = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.count('"""') % 2 or line.count("'''") % 2:
            in_string = not in_string
            if in_string:
                match = _KEY.match(line)
                if match:
                    lines.setdefault(table + tuple(_split_key(match.group(1))), number)
            continue
        if in_string:
            continue
        header = _HEADER.match(line)
        if header:
            path: tuple = tuple(_split_key(header.group(2)))
            if header.group(1) == "[[":
                index = counts.get(path, 0)
                counts[path] = index + 1
                lines.setdefault(path, number)
                path = path + (index,)
            table = path
            lines.setdefault(table, number)
            continue
        match = _KEY.match(line)
        if match:
            lines.setdefault(table + tuple(_split_key(match.group(1))), number)
    return lines


def parse_seconds(value: Any) -> float:
    """A duration: a number of seconds, or a string "250ms", "30s", "2m"."""
    if type(value) in (int, float):
        return float(value)
    if type(value) is str:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m)\s*", value)
        if match:
            return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]
    raise ValueError


@dataclass(frozen=True)
class Field:
    """One key: its `expected` description, a converter that raises ValueError for a bad
    value, a default (or required) and a line of documentation."""

    expected: str
    convert: Callable[[Any], Any]
    default: Any = REQUIRED
    doc: str = ""
    lo: Any = None  # the smallest value, for numbers: how far the shrinker may take it

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @staticmethod
    def int(default: Any, lo: int, hi: int, doc: str = "") -> Field:
        def convert(v: Any) -> int:
            if type(v) is not int or not lo <= v <= hi:
                raise ValueError
            return v
        return Field(f"an integer in [{lo}, {hi}]", convert, default, doc, lo)

    @staticmethod
    def float(default: Any, lo: float, hi: float, doc: str = "") -> Field:
        def convert(v: Any) -> float:
            if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
                raise ValueError
            return float(v)
        return Field(f"a number in [{lo:g}, {hi:g}]", convert, default, doc, lo)

    @staticmethod
    def seconds(default: Any, lo: builtins.float, hi: builtins.float, doc: builtins.str = "") -> Field:
        def convert(v: Any) -> float:
            s = parse_seconds(v)
            if not lo <= s <= hi:
                raise ValueError
            return s
        return Field(f"a duration in [{lo:g}, {hi:g}] seconds (a number, or \"250ms\", \"3s\", \"2m\")",
                     convert, default, doc, lo)

    @staticmethod
    def range(default: Any, lo: builtins.float, hi: builtins.float, doc: builtins.str = "") -> Field:
        def convert(v: Any) -> tuple[float, float]:
            if type(v) is not list or len(v) != 2:
                raise ValueError
            a, b = parse_seconds(v[0]), parse_seconds(v[1])
            if not lo <= a <= b <= hi:
                raise ValueError
            return (a, b)
        return Field(f"[min, max] seconds with {lo:g} <= min <= max <= {hi:g}", convert, default, doc)

    @staticmethod
    def bool(default: Any, doc: str = "") -> Field:
        def convert(v: Any) -> bool:
            if type(v) is not bool:
                raise ValueError
            return v
        return Field("true or false", convert, default, doc)

    @staticmethod
    def str(default: Any, choices: tuple[str, ...] | None = None, doc: str = "") -> Field:
        def convert(v: Any) -> str:
            if type(v) is not str or not v or (choices is not None and v not in choices):
                raise ValueError
            return v
        expected = f"one of {', '.join(map(repr, choices))}" if choices else "a non-empty string"
        return Field(expected, convert, default, doc)

    @staticmethod
    def names(default: Any, doc: builtins.str = "") -> Field:
        def convert(v: Any) -> list[str]:
            if type(v) is not list or not all(type(x) is str and x for x in v):
                raise ValueError
            return list(v)
        return Field("a list of names (strings)", convert, default, doc)

    @staticmethod
    def tables(name: builtins.str, doc: builtins.str = "") -> Field:
        """An array of tables `[[name]]`, empty by default (each table checked by its own schema)."""
        def convert(v: Any) -> list[Any]:
            if type(v) is not list:
                raise ValueError
            return v
        return Field(f"an array of [[{name}]] tables", convert, [], doc)

    @staticmethod
    def groups(default: Any, doc: builtins.str = "") -> Field:
        def convert(v: Any) -> list[list[str]]:
            if (type(v) is not list or len(v) < 2
                    or not all(type(g) is list and g and all(type(x) is str for x in g) for g in v)):
                raise ValueError
            return [list(g) for g in v]
        return Field("a list of at least two non-empty lists of node names", convert, default, doc)


def show(value: Any) -> str:
    """A value as it would be written in TOML, shortened."""
    text = toml_value(value) if type(value) in (bool, int, float, str, list) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate(table: Any, schema: dict[str, Field], source: Source, path: tuple) -> dict[str, Any]:
    """The table's values, converted, with defaults filled in, in the schema's order."""
    if type(table) is not dict:
        raise source.error(path, f"expected a table, got {show(table)}")
    for key in table:
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise source.error(path + (key,), f"unknown key{hint}; expected one of: "
                               f"{', '.join(schema) or '(none)'}")
    out = {}
    for key, field in schema.items():
        if key not in table:
            if field.required:
                raise source.error(path + (key,), f"missing; expected {field.expected}")
            out[key] = field.default
            continue
        try:
            out[key] = field.convert(table[key])
        except (ValueError, TypeError):
            raise source.error(path + (key,), f"expected {field.expected}, got {show(table[key])}") from None
    return out


# -- writing TOML (the shrinker writes scenarios back out) ----------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE.match(key) else '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_value(value: Any) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return repr(value) if math.isfinite(value) else str(value)  # TOML spells nan, inf, -inf
    if type(value) is str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if type(value) in (list, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if type(value) is dict:
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table(value: Any) -> bool:
    return type(value) is dict or (type(value) is list and bool(value)
                                   and all(type(v) is dict for v in value))


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Write nested dicts as TOML: scalars first, then tables, then arrays of tables."""
    out = "".join(f"{_toml_key(k)} = {toml_value(v)}\n" for k, v in data.items() if not _is_table(v))
    for key, value in data.items():
        name = prefix + _toml_key(key)
        if type(value) is dict:
            if not value or not all(_is_table(v) for v in value.values()):
                out += f"\n[{name}]\n"
            out += to_toml(value, name + ".")
        elif _is_table(value):
            for item in value:
                out += f"\n[[{name}]]\n" + to_toml(item, name + ".")
    return out
