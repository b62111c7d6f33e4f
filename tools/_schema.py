"""Compact, portable JSON Schemas for tool listings (JSON Schema 2020-12).

Every tool schema costs the client's context window, and clients map schemas onto narrower dialects (Gemini's
function declarations take one ``type`` per schema; the MCP Inspector's ``--strict`` lint reports type lists
and schemas that constrain nothing). pydantic's schemas carry a ``title`` on every property, ``"default":
null`` on every optional argument, ``anyOf`` with a ``null`` branch for it, and models repeated wherever they
appear. The rewrite here keeps what validates and what a model needs to call a tool:

- input schemas (:func:`input_schema`): an optional argument is written as its non-null type and simply left
  out of ``required`` (absent means "use the default"; no ``null`` default that a validating client would
  refuse); every object with properties says ``additionalProperties: false`` (the tools refuse unknown
  arguments, see :mod:`tools._arguments`); free-form JSON objects are ``{"type": "object"}``;
- output schemas (:func:`output_schema`): every top-level field of the result typed, nested records typed as
  objects (their fields spelled out only for the records a tool is about, such as ``orchestrate``'s attempts:
  a complete nested schema of every tool would take more than the whole ``tools/list`` budget of issue 17);
  descriptions and defaults dropped (results are read by programs); a field that may be null is optional
  (results leave ``None`` fields out: :meth:`tools._tool.SurfaceTool.convert`);
- both: titles dropped; a definition used once inlined, one used more than once kept in ``$defs`` (shared
  definitions instead of repeated text).

Free-form values (``JsonValue``: a pattern's variable values, workflow inputs and outputs, a step's output)
stay ``{}``, the JSON Schema for "any JSON value"; the tool descriptions say so.
"""

from collections import Counter
from collections.abc import Collection, Iterator
from typing import Any, get_args

from mcp.server.mcpserver.utilities.func_metadata import StrictJsonSchema
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

_DEFS = "#/$defs/"
_NULL = {"type": "null"}
_DROPPED_OUTPUT_KEYS = frozenset({"title", "description", "default", "examples"})
_UNPUBLISHED_BOUNDS = frozenset({"maxLength", "minLength", "maxItems", "maxProperties"})
"""Size caps that guard the server (1,000,000 characters of prompt, 32 providers …): enforced on every call and
named in its error (:mod:`tools._arguments`), but not what a model needs to write a call, so not published."""


def input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The compact form of a tool's argument schema (see the module docstring)."""
    return _compact(schema, output=False)


def output_schema(schema: dict[str, Any], detail: Collection[str] = ()) -> dict[str, Any]:
    """The compact form of a tool's result schema (see the module docstring): every top-level field typed;
    nested records (objects, and lists of them) typed as such, their own fields spelled out only for the
    top-level fields named in ``detail``."""
    body = _compact(schema, output=True)
    definitions = body.pop("$defs", {})
    properties = body.get("properties", {})
    for name, sub in properties.items():
        if name not in detail:
            properties[name] = _outline(sub, definitions)
    used = _closure(body, definitions)
    if used:
        body["$defs"] = {name: definitions[name] for name in definitions if name in used}
    return body


def result_schema(model: type[BaseModel], detail: Collection[str] = ()) -> dict[str, Any]:
    """:func:`output_schema` of ``model``'s JSON Schema, generated without what it would outline: pydantic writes
    the models that the ``detail`` fields reach in full, and any other nested model as ``{"type": "object"}``.
    Generating every result's complete schema only to outline it took about 40% of building the tools at
    start-up (issue 17); the result is the same (``tests/unit/test_schema.py`` compares the two).

    Raises:
        ValueError: a type pydantic cannot write a JSON Schema for (it would warn; a result must be JSON).
    """
    kept = {model, *_models_in(model.model_fields[name].annotation for name in detail)}

    class Outlined(StrictJsonSchema):  # the SDK's generator: a warning raises (a result must be JSON)
        def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
            return super().model_schema(schema) if schema["cls"] in kept else {"type": "object"}

    return output_schema(model.model_json_schema(schema_generator=Outlined), detail)


def _models_in(annotations: Iterator[Any]) -> set[type[BaseModel]]:
    """Every pydantic model the annotations name, and those their fields name, through ``list[…]``, ``X | None``,
    ``Annotated[…]`` and the like."""
    found: set[type[BaseModel]] = set()
    pending = list(annotations)
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.add(annotation)
                pending.extend(field.annotation for field in annotation.model_fields.values())
        else:
            pending.extend(get_args(annotation))
    return found


def _compact(schema: dict[str, Any], *, output: bool) -> dict[str, Any]:
    rewriter = _Rewriter(schema, output=output)
    body = rewriter.node(schema, top=True)
    definitions = dict(rewriter.kept)
    if definitions:
        body["$defs"] = definitions
    return body


def _outline(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every record in it reduced to ``{"type": "object"}`` (scalars and enums stay as they are)."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        node = definitions.get(node["$ref"][len(_DEFS):], {})
    if not isinstance(node, dict):
        return node
    if "properties" in node or node.get("type") == "object":
        return {"type": "object"}
    if "items" in node:
        return {**node, "items": _outline(node["items"], definitions)}
    if "anyOf" in node:
        return {**node, "anyOf": [_outline(branch, definitions) for branch in node["anyOf"]]}
    return node


def _closure(node: Any, definitions: dict[str, Any]) -> set[str]:
    """The definitions ``node`` refers to, directly or through other definitions."""
    found: set[str] = set()
    pending = _refs(node)
    while pending:
        name = pending.pop()
        if name not in found and name in definitions:
            found.add(name)
            pending.extend(_refs(definitions[name]))
    return found


class _Rewriter:
    def __init__(self, schema: dict[str, Any], *, output: bool) -> None:
        self.definitions: dict[str, Any] = schema.get("$defs", {})
        self.output = output
        self.uses = Counter(_refs(schema) + [name for d in self.definitions.values() for name in _refs(d)])
        self.kept: dict[str, Any] = {}

    def node(self, node: Any, *, top: bool = False) -> Any:
        if isinstance(node, list):
            return [self.node(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS):
            name = ref[len(_DEFS):]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            definition = {k: v for k, v in self.definitions[name].items() if k != "description"}  # a docstring
            if self.uses[name] <= 1 or top or not {k for k in definition if k != "title"}:  # once, or any JSON
                return self.node({**definition, **siblings}, top=top)
            if name not in self.kept:
                self.kept[name] = {}  # placeholder first: a definition may refer to itself
                self.kept[name] = self.node(definition)
            return {"$ref": ref, **self._plain(siblings)}
        return self._plain(node)

    def _plain(self, node: dict[str, Any]) -> dict[str, Any]:
        properties = node.get("properties")
        if self.output and isinstance(properties, dict) and isinstance(node.get("required"), list):
            # A result field that may be null is left out when it is (results drop None fields).
            node = {**node, "required": [n for n in node["required"] if not self.may_be_null(properties.get(n))]}
            if not node["required"]:
                del node["required"]
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$defs" or key == "title" and isinstance(value, str):
                continue
            if self.output and key in _DROPPED_OUTPUT_KEYS and not isinstance(value, dict | list):
                continue
            if not self.output and (key == "default" and value in (None, "") or key in _UNPUBLISHED_BOUNDS):
                continue
            if key == "properties" and isinstance(value, dict):  # names map to schemas: a property may be "title"
                out[key] = {name: self.node(sub) for name, sub in value.items()}
                continue
            value = self.node(value)
            if key == "additionalProperties" and (value is True or value == {}):
                continue  # the default: any value
            out[key] = value
        out = self._nullable(out)
        if not self.output and isinstance(out.get("properties"), dict):
            out["additionalProperties"] = False
        return out

    def _nullable(self, node: dict[str, Any]) -> dict[str, Any]:
        """An argument that may be null is one that may be left out, and so is a result field that may be null
        (results leave ``None`` fields out): its schema loses the ``null`` branch."""
        branches = node.get("anyOf")
        if not isinstance(branches, list) or _NULL not in branches:
            return node
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        kept = [b for b in branches if b != _NULL]
        if len(kept) == 1 and not set(rest) & set(kept[0]):
            return {**rest, **kept[0]}
        return {**rest, "anyOf": kept}

    def may_be_null(self, node: Any) -> bool:
        """Whether the (original) schema admits null: a ``null`` branch, or any JSON value at all."""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith(_DEFS):
            node = self.definitions.get(node["$ref"][len(_DEFS):], {})
        if not isinstance(node, dict):
            return False
        meaningful = {k: v for k, v in node.items() if k not in ("title", "description", "default", "examples")}
        return not meaningful or _NULL in node.get("anyOf", ())


def _refs(node: Any) -> list[str]:
    if isinstance(node, list):
        return [name for item in node for name in _refs(item)]
    if not isinstance(node, dict):
        return []
    found = [node["$ref"][len(_DEFS):]] if isinstance(node.get("$ref"), str) and node["$ref"].startswith(_DEFS) else []
    return found + [name for key, value in node.items() if key != "$defs" for name in _refs(value)]
