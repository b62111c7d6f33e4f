"""The YAML front matter of Copilot Markdown files: written as JSON-style YAML, read in the forms people write.

Writing: one ``key: value`` line per field, values as JSON (a double-quoted string, a number, a boolean, or a
flow list ``["a", "b"]``), which YAML reads as the same values. Reading covers what hand-written Copilot files
use: double- and single-quoted strings, plain scalars, flow lists and block lists (``- item`` lines), and
``#`` comments. Nested maps and block scalars (``|``, ``>``) are refused with a clear error: no Copilot
front-matter key needs them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from knowledge.errors import PatternError

_KEY_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s*:(?:\s+(.*))?$")
_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?$")


class FrontMatterError(PatternError):
    """Front matter that this reader cannot take apart (the message says which line and why)."""


def dump(fields: list[tuple[str, Any]]) -> str:
    """A front-matter block (``---`` lines included) for ``fields``; an empty string when there are none."""
    if not fields:
        return ""
    lines = ["---"]
    for key, value in fields:
        if isinstance(value, list):
            rendered = "[" + ", ".join(json.dumps(item, ensure_ascii=False) for item in value) + "]"
        else:
            rendered = json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {rendered}")
    lines.append("---")
    return "\n".join(lines) + "\n"


def split(text: str) -> tuple[dict[str, Any], str]:
    """``(fields, body)`` of a Markdown file; ``({}, text)`` when it has no front matter.

    Raises:
        FrontMatterError: the block is never closed, or a line is not a ``key: value`` this reader knows.
    """
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if not lines or lines[0].rstrip("\r") != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip("\r") == "---"), None)
    if end is None:
        raise FrontMatterError("the front matter's opening '---' is never closed")
    return _fields(lines[1:end]), "\n".join(lines[end + 1:])


def _fields(lines: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    open_list: str | None = None
    for number, raw in enumerate(lines, start=2):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t" or stripped.startswith("- "):
            if open_list is not None and stripped.startswith("- "):
                fields[open_list] = (fields[open_list] or []) + [_scalar(_strip_comment(stripped[2:]), number)]
                continue
            raise FrontMatterError(f"front matter line {number}: nested values are not supported")
        match = _KEY_LINE.match(line)
        if match is None:
            raise FrontMatterError(f"front matter line {number}: expected 'key: value'")
        key, value = match.group(1), _strip_comment(match.group(2) or "")
        if value in ("|", ">", "|-", ">-", "|+", ">+"):
            raise FrontMatterError(f"front matter line {number}: block scalars are not supported; quote the value")
        # An empty value may open a block list ("- item" lines follow); with none it stays empty (None).
        open_list = key if value == "" else None
        fields[key] = None if value == "" else _flow_list(value, number) if value.startswith("[") \
            else _scalar(value, number)
    return fields


def _strip_comment(value: str) -> str:
    """The value without a trailing ``# comment`` (a ``#`` inside quotes or a flow list is content)."""
    value = value.strip()
    quote, depth = "", 0
    for index, char in enumerate(value):
        if quote:
            if char == "\\" and quote == '"':
                continue
            if char == quote and not (quote == "'" and value[index + 1:index + 2] == "'"
                                      or quote == '"' and _escaped(value, index)):
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "#" and depth == 0 and (index == 0 or value[index - 1] in " \t"):
            return value[:index].rstrip()
    return value


def _escaped(value: str, index: int) -> bool:
    backslashes = 0
    while index - backslashes - 1 >= 0 and value[index - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _scalar(value: str, number: int) -> Any:
    if value.startswith('"'):
        try:
            return json.loads(value)
        except ValueError:
            raise FrontMatterError(f"front matter line {number}: unreadable double-quoted string") from None
    if value.startswith("'"):
        if len(value) < 2 or not value.endswith("'"):
            raise FrontMatterError(f"front matter line {number}: unterminated single-quoted string")
        return value[1:-1].replace("''", "'")
    if value in ("true", "false"):
        return value == "true"
    if _NUMBER.match(value):
        return json.loads(value)
    return value


def _flow_list(value: str, number: int) -> list[Any]:
    if not value.endswith("]"):
        raise FrontMatterError(f"front matter line {number}: unterminated list")
    items, current, quote = [], [], ""
    for char in value[1:-1]:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == ",":
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if quote:
        raise FrontMatterError(f"front matter line {number}: unterminated string in a list")
    last = "".join(current).strip()
    if last or items:
        items.append(last)
    return [_scalar(item, number) for item in items if item != ""]
