"""A small declarative schema for YAML documents loaded with line numbers.

Each spec checks one node, converts it to plain Python, and reports problems with the file, the
1-based line, the dotted key path and what was expected. Unknown keys get the closest known key as a
suggestion. Specs are plain objects so a provider can declare its own settings with the same tools.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import Problem

MISSING = object()


@dataclass
class Where:
    """Where a node sits: the key path and the 1-based line."""

    path: str
    line: int | None

    def child(self, key: str | int, line: int | None) -> Where:
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
        else:
            path = f"{self.path}.{key}" if self.path else str(key)
        return Where(path, line if line is not None else self.line)


@dataclass
class Report:
    """Collects every problem of one document."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, where: Where, message: str, hint: str | None = None, code: str = "stack.invalid") -> None:
        location = f"{self.file}:{where.line}" if where.line else self.file
        key = where.path or "(top level)"
        self.problems.append(
            Problem(code=code, message=f"{location}: {key}: {message}", hint=hint,
                    file=self.file, line=where.line, key=where.path or None)
        )


def describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    text = str(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f'"{text}"'


def key_line(mapping: Any, key: Any) -> int | None:
    try:
        return mapping.lc.key(key)[0] + 1
    except Exception:
        return None


def value_line(mapping: Any, key: Any) -> int | None:
    try:
        return mapping.lc.value(key)[0] + 1
    except Exception:
        return key_line(mapping, key)


def item_line(seq: Any, index: int) -> int | None:
    try:
        return seq.lc.item(index)[0] + 1
    except Exception:
        return None


def closest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return found[0] if found else None


class Spec:
    """Base: check ``value`` found at ``where``; return the converted value or MISSING on error."""

    expected = "a value"

    def check(self, value: Any, where: Where, report: Report) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Str(Spec):
    def __init__(self, *, pattern: str | None = None, expected: str | None = None, choices: list[str] | None = None,
                 max_len: int = 1024, allow_empty: bool = False):
        self.pattern = re.compile(pattern) if pattern else None
        self.choices = choices
        self.max_len = max_len
        self.allow_empty = allow_empty
        if expected:
            self.expected = expected
        elif choices:
            self.expected = "one of " + ", ".join(choices)
        else:
            self.expected = "a string"

    def check(self, value, where, report):
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        text = str(value)
        if not text and not self.allow_empty:
            report.add(where, f"expected {self.expected}, got an empty string.")
            return MISSING
        if len(text) > self.max_len:
            report.add(where, f"expected at most {self.max_len} characters, got {len(text)}.")
            return MISSING
        if self.choices is not None and text not in self.choices:
            near = closest(text, self.choices)
            hint = f'did you mean "{near}"?' if near else None
            report.add(where, f"expected {self.expected}, got {describe(value)}.", hint)
            return MISSING
        if self.pattern and not self.pattern.fullmatch(text):
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        return text


class Int(Spec):
    def __init__(self, *, min: int | None = None, max: int | None = None, expected: str | None = None):
        self.min, self.max = min, max
        if expected:
            self.expected = expected
        elif min is not None and max is not None:
            self.expected = f"a whole number from {min} to {max}"
        else:
            self.expected = "a whole number"

    def check(self, value, where, report):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
                value = int(value)
            else:
                report.add(where, f"expected {self.expected}, got {describe(value)}.")
                return MISSING
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            report.add(where, f"expected {self.expected}, got {value}.")
            return MISSING
        return int(value)


class Bool(Spec):
    expected = "true or false"

    def check(self, value, where, report):
        if not isinstance(value, bool):
            report.add(where, f"expected true or false, got {describe(value)}.")
            return MISSING
        return value


class Duration(Spec):
    """'90s', '15m', '6h', '7d' -> seconds."""

    expected = 'a duration such as "90s", "15m", "6h" or "7d"'
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def __init__(self, *, min_seconds: int = 1):
        self.min_seconds = min_seconds

    def check(self, value, where, report):
        match = re.fullmatch(r"(\d+)\s*([smhd])", str(value).strip()) if isinstance(value, str) else None
        if not match:
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        seconds = int(match.group(1)) * self.UNITS[match.group(2)]
        if seconds < self.min_seconds:
            report.add(where, f"expected at least {self.min_seconds} seconds, got {describe(value)}.")
            return MISSING
        return seconds


class ListOf(Spec):
    def __init__(self, item: Spec, *, min_items: int = 0, unique: bool = False, allow_scalar: bool = False):
        self.item = item
        self.min_items = min_items
        self.unique = unique
        self.allow_scalar = allow_scalar
        self.expected = f"a list, each {item.expected}"

    def check(self, value, where, report):
        if self.allow_scalar and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        if len(value) < self.min_items:
            report.add(where, f"expected at least {self.min_items} item(s), got {len(value)}.")
            return MISSING
        out, seen, ok = [], set(), True
        for index, element in enumerate(value):
            child = where.child(index, item_line(value, index))
            checked = self.item.check(element, child, report)
            if checked is MISSING:
                ok = False
                continue
            if self.unique:
                marker = repr(checked)
                if marker in seen:
                    report.add(child, f"duplicate entry {describe(checked)}.")
                    ok = False
                    continue
                seen.add(marker)
            out.append(checked)
        return out if ok else MISSING


@dataclass
class Field:
    spec: Spec
    required: bool = False
    default: Any = None
    doc: str = ""


class Map(Spec):
    """A mapping with known keys. ``forbidden`` maps a key to the reason it may never appear."""

    def __init__(self, fields: dict[str, Field], *, expected: str = "a mapping",
                 forbidden: dict[str, str] | None = None,
                 validate: Callable[[dict, Where, Report, Any], None] | None = None):
        self.fields = fields
        self.expected = expected
        self.forbidden = forbidden or {}
        self.validate = validate

    def check(self, value, where, report):
        if not isinstance(value, dict):
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        out: dict[str, Any] = {}
        ok = True
        known = list(self.fields)
        suggested: set[str] = set()
        for key in value:
            line = key_line(value, key)
            if not isinstance(key, str):
                report.add(where.child(str(key), line), f"keys must be strings, got {describe(key)}.")
                ok = False
                continue
            if key in self.forbidden:
                report.add(where.child(key, line), self.forbidden[key], code="stack.forbidden_key")
                ok = False
                continue
            if key not in self.fields:
                near = closest(key, [k for k in known if k not in value])
                if near:
                    suggested.add(near)
                hint = f'did you mean "{near}"?' if near else f"known keys: {', '.join(known)}."
                report.add(where.child(key, line), "unknown key.", hint)
                ok = False
        for name, spec in self.fields.items():
            if name not in value:
                if spec.required and name in suggested:
                    ok = False  # already reported as the likely typo
                elif spec.required:
                    report.add(where, f'missing required key "{name}" ({spec.spec.expected}).')
                    ok = False
                else:
                    out[name] = spec.default() if callable(spec.default) else spec.default
                continue
            checked = spec.spec.check(value[name], where.child(name, value_line(value, name)), report)
            if checked is MISSING:
                ok = False
            else:
                out[name] = checked
        if ok and self.validate:
            before = len(report.problems)
            self.validate(out, where, report, value)
            ok = len(report.problems) == before
        return out if ok else MISSING


class DictOf(Spec):
    """A mapping of user-chosen names (checked against ``name``) to values of one spec."""

    def __init__(self, item: Spec, *, name: Str | None = None, min_items: int = 0, expected: str | None = None):
        self.item = item
        self.name = name or Str()
        self.min_items = min_items
        self.expected = expected or f"a mapping of names to {item.expected}"

    def check(self, value, where, report):
        if not isinstance(value, dict):
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        if len(value) < self.min_items:
            report.add(where, f"expected at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}.")
            return MISSING
        out, ok = {}, True
        for key in value:
            kwhere = where.child(str(key), key_line(value, key))
            name = self.name.check(key, kwhere, report)
            if name is MISSING:
                ok = False
                continue
            checked = self.item.check(value[key], where.child(str(key), value_line(value, key)), report)
            if checked is MISSING:
                ok = False
            else:
                out[name] = checked
        return out if ok else MISSING


class AnyOf(Spec):
    """The first spec whose shape fits (decided by ``fits``) checks the value."""

    def __init__(self, *options: tuple[Callable[[Any], bool], Spec], expected: str):
        self.options = options
        self.expected = expected

    def check(self, value, where, report):
        for fits, spec in self.options:
            if fits(value):
                return spec.check(value, where, report)
        report.add(where, f"expected {self.expected}, got {describe(value)}.")
        return MISSING


class Scalar(Spec):
    """A string, number or boolean, kept as its string form (environment values)."""

    expected = "a string, number or boolean"

    def check(self, value, where, report):
        if value is None or isinstance(value, dict | list):
            report.add(where, f"expected {self.expected}, got {describe(value)}.")
            return MISSING
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
