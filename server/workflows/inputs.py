"""A definition's ``inputs`` JSON Schema (draft 2020-12): the subset whose validation is linear, and checking a
run's inputs against it.

JSON Schema validation by ``jsonschema`` is linear in schema size times instance size except for a few
keywords, which this module refuses or replaces:

- ``pattern`` runs on RE2 (``google-re2``: linear time, no backtracking), never on Python's ``re``: a
  pattern such as ``^(a+)+$`` takes exponential time there. Patterns RE2 cannot compile (backreferences,
  look-around) are refused. Without ``google-re2`` (simple mode), ``pattern`` is refused.
- ``patternProperties`` is refused: ``jsonschema`` also matches its patterns with ``re`` inside
  ``additionalProperties`` and ``unevaluatedProperties`` (use ``propertyNames`` with a ``pattern``).
- ``$ref`` / ``$dynamicRef`` / ``$recursiveRef`` are refused: a few references can make a schema that
  evaluates a subschema exponentially often (write subschemas out).
- ``unevaluatedProperties`` / ``unevaluatedItems`` are refused: ``jsonschema`` evaluates the schema again for
  each of them, exponentially in their nesting.
- ``uniqueItems`` is checked by hashing each item's canonical JSON (linear) instead of comparing every pair.
- ``format`` is an annotation only (not checked), as draft 2020-12 says by default.

Sources: JSON Schema 2020-12 Core and Validation (https://json-schema.org/draft/2020-12); RE2 syntax
(https://github.com/google/re2/wiki/Syntax).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from server.workflows.model import MAX_DATA_DEPTH, Definition, InvalidWorkflow

MAX_INPUT_CHARS = 1_000_000
"""Largest inputs accepted for a run, as compact JSON."""
_REFUSED = {
    "$ref": "references are not supported in workflow inputs: write the subschema out",
    "$dynamicRef": "references are not supported in workflow inputs: write the subschema out",
    "$recursiveRef": "references are not supported in workflow inputs: write the subschema out",
    "patternProperties": "not supported in workflow inputs: use propertyNames with a pattern",
    "unevaluatedProperties": "not supported in workflow inputs: use additionalProperties",
    "unevaluatedItems": "not supported in workflow inputs: use items",
}
_ONE_SCHEMA = ("additionalProperties", "propertyNames", "items", "contains", "not", "if", "then", "else",
               "additionalItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")


def _subschemas(schema: Mapping[str, Any], where: str) -> Iterator[tuple[Any, str]]:
    for key in _ONE_SCHEMA:
        if isinstance(schema.get(key), (Mapping, bool)):
            yield schema[key], f"{where}.{key}"
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), Mapping):
            yield from ((sub, f"{where}.{key}.{name}") for name, sub in schema[key].items())
    for key in _SCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            yield from ((sub, f"{where}.{key}[{i}]") for i, sub in enumerate(schema[key]))


def schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """Problems of an ``inputs`` schema: keywords outside the linear subset (see the module docstring),
    patterns RE2 refuses, nesting deeper than :data:`MAX_DATA_DEPTH`, and anything the draft 2020-12
    meta-schema refuses."""
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(schema, "inputs", 0)]
    while stack:
        node, where, depth = stack.pop()
        if not isinstance(node, Mapping):
            continue
        if depth > MAX_DATA_DEPTH:
            return [*problems, f"{where}: schemas nested deeper than {MAX_DATA_DEPTH}"]
        problems.extend(f"{where}.{key}: {why}" for key, why in _REFUSED.items() if key in node)
        if isinstance(node.get("pattern"), str):
            problems.extend(f"{where}.pattern: {p}" for p in _pattern_problems(node["pattern"]))
        stack.extend((sub, at, depth + 1) for sub, at in _subschemas(node, where))
    if problems:
        return problems
    import jsonschema

    try:  # the meta-schema's own `format: regex` checks would compile patterns with `re`: RE2 did that above
        jsonschema.Draft202012Validator.check_schema(schema, format_checker=None)
    except jsonschema.SchemaError as exc:
        return [f"inputs: not a valid JSON Schema: {exc.message[:300]}"]
    return []


def _pattern_problems(pattern: str) -> list[str]:
    try:
        _re2_compile(pattern)
    except ImportError:
        return ["`pattern` needs google-re2 (a linear-time regular expression engine), which is not installed "
                "(simple mode): remove the pattern, or run the server in full mode"]
    except Exception as exc:  # noqa: BLE001 - re2.error: the message says what RE2 refused
        text = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return [f"RE2 cannot run this pattern ({text[:200]}); backreferences and look-around are not supported"]
    return []


def _re2_compile(pattern: str) -> Any:
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print refused patterns to stderr, past the redacting log formatter
    return re2.compile(pattern, options)


def check_inputs(definition: Definition, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` validated against the definition's schema, with the schema's top-level defaults applied.

    Raises:
        InvalidWorkflow: every schema violation (path and message; never the offending value), inputs over
            :data:`MAX_INPUT_CHARS`, nested deeper than :data:`MAX_DATA_DEPTH` or holding NaN or infinity.
    """
    from server.workflows.validation import data_problems

    values = dict(inputs)
    problems = data_problems(values, "inputs", MAX_INPUT_CHARS)
    if problems:
        raise InvalidWorkflow(problems, what="inputs")
    for key, prop in (definition.inputs.get("properties") or {}).items():
        if isinstance(prop, dict) and "default" in prop and key not in values:
            values[key] = prop["default"]
    validator = _linear_validator()(definition.inputs)
    errors = sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidWorkflow([f"inputs{''.join(f'.{p}' for p in e.absolute_path)}: {e.validator} "
                               f"{_schema_message(e)}" for e in errors], what="inputs")
    return values


@cache
def _linear_validator() -> Any:
    """The draft 2020-12 validator class with ``pattern`` on RE2 and a linear ``uniqueItems`` (built once; a
    class, not a registration: ``jsonschema.validators.extend`` without a version registers nothing)."""
    import jsonschema
    from jsonschema import validators

    def pattern(validator: Any, regex: str, instance: Any, schema: Any) -> Iterator[Any]:
        if validator.is_type(instance, "string") and not _re2_compile(regex).search(instance):
            yield jsonschema.ValidationError("does not match the pattern")

    def unique_items(validator: Any, wanted: bool, instance: Any, schema: Any) -> Iterator[Any]:
        if wanted and validator.is_type(instance, "array"):
            keys = {json.dumps(_canonical(item), sort_keys=True, separators=(",", ":")) for item in instance}
            if len(keys) < len(instance):
                yield jsonschema.ValidationError("has non-unique elements")

    return validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern, "uniqueItems": unique_items})


def _canonical(value: Any) -> Any:
    """Equal JSON values map to equal canonical forms (JSON Schema equality: 1 == 1.0, true != 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _schema_message(error: Any) -> str:
    if error.validator == "required":
        return error.message.split(" is ")[0] + " is required"
    return f"(expected {json.dumps(error.validator_value)[:200]})"
