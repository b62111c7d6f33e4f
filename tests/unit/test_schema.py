"""Compact tool schemas (tools._schema): what they drop, and that they accept what the tools send and take."""

from __future__ import annotations

from typing import Annotated

import jsonschema
import pytest
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from pydantic import BaseModel, Field, TypeAdapter

from server.pool.orchestration import OrchestrateResult
from tools import all_tools
from tools._schema import input_schema, output_schema, result_schema
from tools._tool import result_model

GOOD = {"text": "t", "provider": "p", "model": "m", "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        "attempts": [{"provider": "p", "model": "m", "status": "ok", "error_class": None, "error": None,
                      "latency_ms": 1.0}], "cost_usd": 0.0, "latency_ms": 1.0, "overhead_ms": 0.1,
        "continuation_id": "c1"}
BAD = [
    {**GOOD, "text": 3},
    {**GOOD, "attempts": [{**GOOD["attempts"][0], "error_class": 3}]},
    {**GOOD, "usage": {"input_tokens": "1", "output_tokens": 2, "total_tokens": 3}},
    {k: v for k, v in GOOD.items() if k != "provider"},
]


def published(instance: dict) -> dict:
    """What the tool sends: the model's fields, ``None`` fields left out."""
    return OrchestrateResult.model_validate(instance).model_dump(mode="json", exclude_none=True)


def test_a_compact_output_schema_has_no_titles_descriptions_or_type_lists() -> None:
    compact = output_schema(OrchestrateResult.model_json_schema(), detail=("attempts", "usage"))
    text = str(compact)
    assert "'title'" not in text and "'description'" not in text and "'default'" not in text
    assert "'type': [" not in text and "'null'" not in text  # a field that may be null is simply optional
    assert "ab_bucket" not in compact["required"] and compact["properties"]["ab_bucket"] == {"type": "string"}
    assert compact["properties"]["attempts"]["items"]["properties"]["error_class"] == {"type": "string"}


def test_an_output_schema_outlines_the_records_not_named_in_detail() -> None:
    compact = output_schema(OrchestrateResult.model_json_schema())
    assert compact["properties"]["attempts"] == {"items": {"type": "object"}, "type": "array"}
    assert compact["properties"]["usage"] == {"type": "object"}


@pytest.mark.parametrize("detail", [(), ("attempts", "usage")])
def test_what_a_tool_sends_validates_and_what_it_never_sends_does_not(detail: tuple[str, ...]) -> None:
    schema = output_schema(OrchestrateResult.model_json_schema(), detail)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(published(GOOD))
    assert not validator.is_valid({k: v for k, v in GOOD.items() if k != "provider"})
    assert not validator.is_valid({**GOOD, "text": 3})
    if detail:  # nested fields are checked only where the schema spells them out
        assert not validator.is_valid({**published(GOOD), "attempts": [{**GOOD["attempts"][0], "error_class": 3}]})


class Variable(BaseModel):
    name: str = Field(pattern="^[a-z]+$", title="Name")
    title: str | None = None  # a field may be called "title"


def arguments_schema() -> dict:
    def fn(prompt: Annotated[str | None, Field(max_length=10)] = None, mode: str = "text",
           kinds: list[Variable] | None = None, more: list[Variable] | None = None, n: int = 3) -> None: ...

    from mcp.server.mcpserver.tools import Tool

    return Tool.from_function(fn, name="fn").parameters


def test_a_compact_input_schema_states_no_null_and_forbids_unknown_properties() -> None:
    compact = input_schema(arguments_schema())
    assert compact["additionalProperties"] is False
    assert compact["properties"]["prompt"] == {"type": "string"}  # no null branch, no null default, no size cap
    assert compact["properties"]["n"] == {"default": 3, "type": "integer"}
    assert "default" not in compact["properties"]["mode"] or compact["properties"]["mode"]["default"] == "text"
    shared = compact["$defs"]["Variable"]  # used twice: one definition, two references
    assert compact["properties"]["kinds"]["items"] == {"$ref": "#/$defs/Variable"}
    assert shared["additionalProperties"] is False and set(shared["properties"]) == {"name", "title"}
    assert "'title': 'Name'" not in str(compact)
    jsonschema.Draft202012Validator.check_schema(compact)
    validator = jsonschema.Draft202012Validator(compact)
    assert validator.is_valid({"prompt": "hi", "kinds": [{"name": "a"}]})
    assert not validator.is_valid({"promt": "hi"}) and not validator.is_valid({"kinds": [{"name": "a", "x": 1}]})


def test_a_recursive_model_keeps_its_definition() -> None:
    class Node(BaseModel):
        value: int
        next: "Node | None" = None

    compact = output_schema(TypeAdapter(Node).json_schema(), detail=("next",))
    jsonschema.Draft202012Validator.check_schema(compact)
    validator = jsonschema.Draft202012Validator(compact)
    assert validator.is_valid({"value": 1, "next": {"value": 2}})
    assert not validator.is_valid({"value": 1, "next": {"value": "two"}})


def test_each_tool_publishes_the_outline_of_the_schema_the_sdk_would_derive() -> None:
    # result_schema skips generating the nested records it outlines; what it publishes must not change for it
    for tool in all_tools():
        full = FuncMetadata(arg_model=tool.fn_metadata.arg_model,
                            output_model=tool.fn_metadata.output_model).output_schema  # the SDK's derivation
        assert full is not None
        assert tool.fn_metadata.output_schema == output_schema(full, tool.detail), tool.name


def test_a_detail_field_spells_out_every_model_it_reaches_and_nothing_else() -> None:
    class Leaf(BaseModel):
        size: int

    class Branch(BaseModel):
        leaves: list[Leaf]

    class Tree(BaseModel):
        branch: Branch | None = None
        other: Branch

    spelled = result_schema(Tree, detail=("branch",))
    assert spelled == output_schema(Tree.model_json_schema(), detail=("branch",))
    validator = jsonschema.Draft202012Validator(spelled)
    assert not validator.is_valid({"branch": {"leaves": [{"size": "big"}]}, "other": {}})
    assert validator.is_valid({"branch": {"leaves": [{"size": 1}]}, "other": {"anything": 1}})


def test_a_tool_must_return_a_model() -> None:
    async def loose() -> dict:
        return {}

    with pytest.raises(TypeError, match="loose returns .*a tool returns a pydantic model"):
        result_model(loose)
