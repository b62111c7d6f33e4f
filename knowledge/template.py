"""Pattern templates: ``{{ variable }}`` and ``{{ variable.key.key }}`` placeholders, nothing else.

Rules (no logic and no code execution, by construction):

- A placeholder is ``{{``, optional spaces, a path, optional spaces, ``}}``. A path is a variable name
  (a letter, then letters, digits or ``_``) followed by up to seven ``.key`` segments (a letter or digit, then
  letters, digits, ``_`` or ``-``). No segment may start with ``_``, so ``{{ __class__ }}``-style probes are
  syntax errors; filters, calls, indexing and expressions are syntax errors too.
- ``\\{{`` is a literal ``{{``. An unterminated ``{{`` is an error; a ``}}`` on its own is text (JSON in a
  template stays legal).
- Rendering walks dotted paths through ``dict`` values only (built from JSON), never through attributes; a
  text value met on a dotted path is decoded as a JSON object when the caller allows it (MCP prompt
  arguments are always text). Values are inserted once, as text: strings as they are, numbers and booleans
  as JSON, ``null`` as nothing, objects and arrays as compact JSON. Output is never scanned again, so a value
  containing ``{{ x }}`` stays that text.
- Parsing and rendering are linear in the template's length; rendered output is capped.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knowledge.errors import InvalidPattern, RenderError, TemplateSyntaxError

MAX_TEMPLATE_CHARS = 100_000
"""Longest template accepted. A prompt template is a page or a few, not a document store."""
MAX_RENDERED_CHARS = 1_000_000
"""Longest rendered text (the same ceiling as ``orchestrate``'s prompt)."""
MAX_PATH_SEGMENTS = 8

_OPEN = re.compile(r"\\?\{\{")
_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}(?:\.[A-Za-z0-9][A-Za-z0-9_-]{0,63}){0,%d}" % (MAX_PATH_SEGMENTS - 1))
_INNER_SHOWN = 40


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One ``{{ path }}``: ``path`` split on dots (``("user", "name")``)."""

    path: tuple[str, ...]

    @property
    def variable(self) -> str:
        """The variable the path starts from."""
        return self.path[0]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholders, in order."""

    segments: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(s for s in self.segments if isinstance(s, Placeholder))

    @property
    def variables(self) -> tuple[str, ...]:
        """Variable names in order of first use."""
        return tuple(dict.fromkeys(p.variable for p in self.placeholders))

    def keys_used(self) -> dict[str, tuple[str, ...]]:
        """Per variable, the dotted keys used under it (``{"user": ("name", "email")}`` for
        ``{{ user.name }} {{ user.email }}``); variables used only whole are absent."""
        keys: dict[str, dict[str, None]] = {}
        for segment in self.segments:
            if isinstance(segment, Placeholder) and len(segment.path) > 1:
                keys.setdefault(segment.path[0], {})[".".join(segment.path[1:])] = None
        return {variable: tuple(found) for variable, found in keys.items()}


def _syntax_error(message: str, text: str, index: int) -> TemplateSyntaxError:
    line = text.count("\n", 0, index) + 1
    return TemplateSyntaxError(message, line=line, column=index - (text.rfind("\n", 0, index) + 1) + 1)


@functools.lru_cache(maxsize=256)
def parse(text: str) -> Template:
    """Parse ``text`` into segments.

    Raises:
        TemplateSyntaxError: an unterminated ``{{``, a ``{{`` inside a placeholder, or a placeholder that is
            not a plain (dotted) name; the message gives the line and column.
        InvalidPattern: the template is longer than :data:`MAX_TEMPLATE_CHARS`.
    """
    if len(text) > MAX_TEMPLATE_CHARS:
        raise InvalidPattern(f"template is {len(text):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}")
    segments: list[str | Placeholder] = []
    literal: list[str] = []
    cursor = 0
    for match in _OPEN.finditer(text):
        start = match.start()
        if start < cursor:  # inside a placeholder already consumed
            continue
        literal.append(text[cursor:start])
        if match.group().startswith("\\"):
            literal.append("{{")
            cursor = match.end()
            continue
        close = text.find("}}", match.end())
        if close < 0:
            raise _syntax_error("'{{' is never closed with '}}' (write \\{{ for a literal '{{')", text, start)
        inner = text[match.end():close]
        if "{{" in inner:
            raise _syntax_error("'{{' inside a placeholder: placeholders cannot nest", text, start)
        path = inner.strip()
        if not _PATH.fullmatch(path):
            shown = inner if len(inner) <= _INNER_SHOWN else inner[:_INNER_SHOWN] + "…"
            raise _syntax_error(
                f"invalid placeholder {{{{{shown}}}}}: a placeholder is a variable name or a dotted path into it "
                "({{ name }}, {{ user.email }}); names start with a letter, keys with a letter or digit; "
                "no expressions, filters, calls or underscore-led names", text, start)
        if literal:
            segments.append("".join(literal))
            literal = []
        segments.append(Placeholder(tuple(path.split("."))))
        cursor = close + 2
    literal.append(text[cursor:])
    if any(literal):
        segments.append("".join(literal))
    return Template(tuple(segments))


def as_text(value: Any, *, variable: str) -> str:
    """A JSON value as inserted text.

    Raises:
        RenderError: ``value`` is not a JSON value (never ``str()``-ed: no object code runs).
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, dict, list)):
        try:
            return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RenderError(f"variable '{variable}' holds something that is not JSON", variable=variable) from exc
    raise RenderError(f"variable '{variable}' holds a {type(value).__name__}, not a JSON value", variable=variable)


def render(template: Template, values: Mapping[str, Any], *, decode_json_text: bool = True,
           max_chars: int = MAX_RENDERED_CHARS) -> str:
    """Fill ``template``'s placeholders from ``values`` (every variable it uses must be a key).

    Args:
        values: variable name -> JSON value (the caller has applied defaults and checked names).
        decode_json_text: a text value met where a dotted path needs an object is decoded as a JSON object.
        max_chars: ceiling on the rendered length; rendering stops as soon as it is passed.

    Raises:
        RenderError: a path leads nowhere (no such key, or not an object), a value is not JSON, or the output
            would exceed ``max_chars``. The error names the variable or path.
    """
    out: list[str] = []
    size = 0
    decoded: dict[str, Any] = {}
    for segment in template.segments:
        text = segment if isinstance(segment, str) else as_text(
            _resolve(segment, values, decoded, decode_json_text), variable=segment.dotted)
        size += len(text)
        if size > max_chars:
            name = segment.dotted if isinstance(segment, Placeholder) else "(template text)"
            raise RenderError(f"the rendered text would pass {max_chars:,} characters at {name}: shorten the "
                              "values", variable=name)
        out.append(text)
    return "".join(out)


def _resolve(placeholder: Placeholder, values: Mapping[str, Any], decoded: dict[str, Any], decode: bool) -> Any:
    root = placeholder.variable
    if root not in values:
        raise RenderError(f"no value for variable '{root}'", variable=root)
    value = values[root]
    walked = root
    for key in placeholder.path[1:]:
        if isinstance(value, str) and decode:
            if walked not in decoded:
                try:
                    decoded[walked] = json.loads(value)
                except ValueError:
                    decoded[walked] = None
            value = decoded[walked]
        if not isinstance(value, dict):
            raise RenderError(f"'{{{{ {placeholder.dotted} }}}}' needs '{walked}' to be a JSON object",
                              variable=placeholder.dotted)
        if key not in value:
            raise RenderError(f"'{walked}' has no key '{key}' (needed by {{{{ {placeholder.dotted} }}}})",
                              variable=placeholder.dotted)
        value = value[key]
        walked = f"{walked}.{key}"
    return value
