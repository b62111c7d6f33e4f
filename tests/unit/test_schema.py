"""Compact tool schemas accept and refuse exactly what the originals do."""

from __future__ import annotations

import jsonschema
import pytest

from server.pool.orchestration import OrchestrateResult
from tools._schema import compact_schema

GOOD = {"text": "t", "provider": "p", "model": "m", "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        "attempts": [{"provider": "p", "model": "m", "status": "ok", "error_class": None, "error": None,
                      "latency_ms": 1.0}], "cost_usd": 0.0, "latency_ms": 1.0, "overhead_ms": 0.1,
        "continuation_id": "c1"}
BAD = [
    {**GOOD, "text": None},
    {**GOOD, "attempts": [{**GOOD["attempts"][0], "error_class": 3}]},
    {**GOOD, "usage": {"input_tokens": "1", "output_tokens": 2, "total_tokens": 3}},
    {k: v for k, v in GOOD.items() if k != "provider"},
]


def test_compact_output_schema_has_no_refs_titles_or_nullable_any_of() -> None:
    compact = compact_schema(OrchestrateResult.model_json_schema())
    text = str(compact)
    assert "$ref" not in text and "$defs" not in text and "'title'" not in text and "anyOf" not in text
    assert compact["properties"]["ab_bucket"]["type"] == ["string", "null"]


@pytest.mark.parametrize("instance", [GOOD, *BAD])
def test_compact_schema_validates_like_the_original(instance: dict) -> None:
    original = OrchestrateResult.model_json_schema()
    verdicts = []
    for schema in (original, compact_schema(original)):
        verdicts.append(jsonschema.Draft202012Validator(schema).is_valid(instance))
    assert verdicts[0] == verdicts[1]
    assert verdicts[0] is (instance is GOOD)


def test_a_property_named_title_survives() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}}
    assert compact_schema(schema) == {"type": "object", "properties": {"title": {"type": "string"}}}


def test_conflicting_branches_keep_any_of() -> None:
    schema = {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "array", "maxLength": 4}]}
    assert compact_schema(schema) == schema


def test_recursive_schema_is_left_alone() -> None:
    schema = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
              "$ref": "#/$defs/Node"}
    assert compact_schema(schema) == schema
