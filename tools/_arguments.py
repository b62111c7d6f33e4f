"""Tool-argument errors in plain words: unknown arguments refused with the closest valid name, and validation
errors that name the argument, what was given and what the published schema allows.

The MCP SDK would drop unknown arguments silently and report a pydantic ``ValidationError`` as it formats it
(model names such as ``orchestrate_toolArguments``, links to errors.pydantic.dev). A model reading the error
must be able to correct its call, so the message says what to do, e.g.
``unknown argument `temprature`: did you mean `temperature`?`` or
``max_tokens: expected a whole number from 1 to 200000, got the text "many"``.
What is allowed comes from the tool's published input schema, so the message and the schema never disagree.
"""

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import AfterValidator, ValidationError

_MAX_GIVEN_CHARS = 40
_MAX_ERRORS = 5
_BOUNDS = {  # pydantic error types of size caps the published schema leaves out (see tools._schema)
    "string_too_long": "must be at most {max_length:,} characters",
    "string_too_short": "must be at least {min_length:,} characters",
    "too_long": "must have at most {max_length:,} items",
    "too_short": "must have at least {min_length:,} items",
}


def Guard(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> AfterValidator:  # noqa: N802
    """A range enforced on every call but left out of the published schema: bounds that guard the server (at most
    600 s, 200,000 tokens; a deadline above 0 …) rather than tell a model what to choose. ``None`` passes; the
    error says the bound in words (the published schema keeps the ranges that matter to a choice, such as
    ``temperature`` 0-2)."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):  # JSON parsers take NaN and Infinity
            raise ValueError("must be a finite number")
        if gt is not None and not value > gt:
            raise ValueError(f"must be above {gt:,}")
        if ge is not None and not value >= ge:
            raise ValueError(f"must be at least {ge:,}")
        if le is not None and not value <= le:
            raise ValueError(f"must be at most {le:,}")
        return value

    return AfterValidator(check)


def Matches(pattern: str, what: str) -> AfterValidator:  # noqa: N802 - a marker, like Guard
    """A regular expression enforced on every call but not published (an id the server made: a model copies it)."""
    compiled = re.compile(pattern)

    def check(value: Any) -> Any:
        if value is not None and not compiled.fullmatch(value):
            raise ValueError(f"is not {what}")
        return value

    return AfterValidator(check)


def unknown_arguments(arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> str | None:
    """A message for the first argument ``schema`` does not declare, or ``None`` when all are declared."""
    valid = list(schema.get("properties", {}))
    for name in arguments:
        if name not in valid:
            return unknown_name("argument", name, valid)
    return None


def unknown_name(what: str, name: str, valid: Sequence[str]) -> str:
    """``unknown {what} `name`: did you mean `x`?`` (or the list of valid names when none is close)."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"unknown {what} `{_clip(name)}`: did you mean `{close[0]}`?"
    listed = ", ".join(f"`{v}`" for v in valid) or "none"
    return f"unknown {what} `{_clip(name)}`; valid: {listed}"


def validation_message(error: ValidationError, arguments: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """The argument errors of ``error`` in plain words, one per argument path (at most five)."""
    messages: list[str] = []
    for item in error.errors(include_url=False):
        path, node, given = _locate(item["loc"], arguments, schema)
        if item["type"] == "missing":
            text = f"{path or 'arguments'}: required ({describe(node, schema)})"
        elif item["type"] == "value_error":  # a Guard or Matches check: its own words
            text = f"{path or 'arguments'}: {item['ctx']['error']} (got {given_text(given)})"
        elif item["type"] == "finite_number":
            text = f"{path or 'arguments'}: must be a finite number (got {given_text(given)})"
        elif item["type"] == "string_too_short" and item.get("ctx", {}).get("min_length") == 1:
            text = f"{path or 'arguments'}: must not be empty"
        elif item["type"] in _BOUNDS:
            text = f"{path or 'arguments'}: {_BOUNDS[item['type']].format(**item.get('ctx', {}))} (got {given_text(given)})"
        elif item["type"] == "extra_forbidden":
            parent = _parent(path)
            _, parent_node, _ = _locate(item["loc"][:-1], arguments, schema)
            text = (f"{parent + ': ' if parent else ''}"
                    f"{unknown_name('field', str(item['loc'][-1]), list(_properties(parent_node, schema)))}")
        else:
            text = f"{path or 'arguments'}: expected {describe(node, schema)}, got {given_text(given)}"
        if text not in messages:
            messages.append(text)
    shown = messages[:_MAX_ERRORS]
    more = f" (and {len(messages) - _MAX_ERRORS} more)" if len(messages) > _MAX_ERRORS else ""
    return "; ".join(shown) + more


def _locate(loc: Sequence[Any], arguments: Any, schema: Mapping[str, Any]) -> tuple[str, Any, Any]:
    """Walk ``loc`` through the arguments and the schema together: (dotted path, schema node, given value).

    pydantic's locations also name union branches (``str``, ``dict[str,...]``) and validator wrappers; those
    match no property or index and are skipped.
    """
    node: Any = schema
    value: Any = arguments
    parts: list[str] = []
    for step in loc:
        node = _resolve(node, schema)
        properties = _properties(node, schema)
        if isinstance(step, str) and step in properties:
            node = properties[step]
            value = value.get(step) if isinstance(value, Mapping) else None
            parts.append(step if not parts else f".{step}")
        elif isinstance(step, int) and isinstance(value, list) and 0 <= step < len(value):
            node = _items(node, schema)
            value = value[step]
            parts.append(f"[{step}]")
        elif isinstance(step, str) and isinstance(value, Mapping) and step in value and "type" in node:
            node = _values(node, schema)  # a key of a free-form object
            value = value[step]
            parts.append(f"[{json.dumps(_clip(step))}]")
    return "".join(parts), node, value


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def _resolve(node: Any, root: Mapping[str, Any]) -> Any:
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/$defs/"):
        node = root.get("$defs", {}).get(node["$ref"][8:], {})
    return node if isinstance(node, Mapping) else {}


def _branches(node: Mapping[str, Any], root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    node = _resolve(node, root)
    return [_resolve(b, root) for b in node.get("anyOf", ())] or [node]


def _properties(node: Any, root: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for branch in _branches(node, root):
        found.update(branch.get("properties", {}))
    return found


def _items(node: Any, root: Mapping[str, Any]) -> Any:
    for branch in _branches(node, root):
        if "items" in branch:
            return branch["items"]
    return {}


def _values(node: Any, root: Mapping[str, Any]) -> Any:
    for branch in _branches(node, root):
        extra = branch.get("additionalProperties")
        if isinstance(extra, Mapping):
            return extra
    return {}


def describe(node: Any, root: Mapping[str, Any]) -> str:
    """What a schema allows, in words: ``a whole number from 1 to 200000``, ``one of "text", "json"`` …"""
    branches = _branches(node, root) if isinstance(node, Mapping) else [{}]
    return " or ".join(dict.fromkeys(_describe_one(b, root) for b in branches))


def _describe_one(node: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    kind = node.get("type")
    if kind == "integer":
        return "a whole number" + _range(node)
    if kind == "number":
        return "a number" + _range(node)
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        text = "text"
        if "minLength" in node and node["minLength"] >= 1 and "maxLength" in node:
            text += f" of {node['minLength']} to {node['maxLength']} characters"
        elif "maxLength" in node:
            text += f" of at most {node['maxLength']:,} characters"
        elif node.get("minLength", 0) >= 1:
            text = "non-empty text"
        if "pattern" in node:
            text += f" matching {node['pattern']}"
        return text
    if kind == "array":
        items = node.get("items")
        text = "a list" + (f" of at most {node['maxItems']} items" if "maxItems" in node else "")
        return text + (f" (each {describe(items, root)})" if isinstance(items, Mapping) and items else "")
    if kind == "object":
        names = list(node.get("properties", {}))
        if names:
            required = node.get("required", [])
            return "an object with " + ", ".join(f"`{n}`" + ("" if n in required else "?") for n in names)
        return "a JSON object" + (f" of at most {node['maxProperties']} keys" if "maxProperties" in node else "")
    return "any JSON value"


def _range(node: Mapping[str, Any]) -> str:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    above = "above " if "exclusiveMinimum" in node else "at least "
    below = "below " if "exclusiveMaximum" in node else "at most "
    if low is not None and high is not None:
        if "exclusiveMinimum" in node or "exclusiveMaximum" in node:
            return f" {above}{low} and {below}{high}"
        return f" from {low} to {high}"
    if low is not None:
        return f" {above}{low}"
    if high is not None:
        return f" {below}{high}"
    return ""


def given_text(value: Any) -> str:
    """A short description of what was passed (values clipped: they may be long, and they are the caller's)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {_clip(repr(value))}"
    if isinstance(value, str):
        return f"the text {json.dumps(_clip(value), ensure_ascii=False)}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, Mapping):
        return f"an object with {len(value)} key{'s' if len(value) != 1 else ''}"
    return type(value).__name__


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_GIVEN_CHARS else text[:_MAX_GIVEN_CHARS - 1] + "…"
