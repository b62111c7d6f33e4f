"""Bounded validation of workflow definitions and inputs: YAML aliases refused before anything expands them, no
NaN or infinity anywhere, dependency ceilings counted on the raw data, the DAG algorithms linear (and the
topological order unchanged, since DBOS step ids rely on it), and the inputs schema's linear subset with
``pattern`` on RE2."""

from __future__ import annotations

import itertools
import json
import math
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.workflows.inputs import check_inputs, schema_problems
from server.workflows.model import MAX_DEPENDENCIES, MAX_EDGES, Definition, InvalidWorkflow, topological_order, upstream_test
from server.workflows.validation import parse_definition, validate


def step(id: str, *deps: str, **extra) -> dict:
    return {"id": id, "kind": "pattern", "depends_on": list(deps), "with": {"pattern": "p"}, **extra}


def problems(source) -> list[str]:
    with pytest.raises(InvalidWorkflow) as caught:
        parse_definition(source)
    return caught.value.problems


def billion_laughs(levels: int = 9) -> str:
    """A few hundred bytes of YAML standing for 10 ** levels strings once its aliases are expanded."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return "name: lol\nsteps:\n  - id: a\n    kind: pattern\n    with: {pattern: p, variables: {x: *a%d}}\n%s\n" % (
        levels, "\n".join(lines))


def test_yaml_aliases_are_refused_before_anything_expands_them() -> None:
    text = billion_laughs()
    assert len(text) < 1_000
    found = problems(text)
    assert len(found) == 1 and "YAML aliases" in found[0] and "are not accepted" in found[0]
    merge = "base: &b {kind: pattern}\nname: m\nsteps:\n  - <<: *b\n    id: a\n"
    assert "YAML aliases" in problems(merge)[0]


def test_plain_yaml_still_parses() -> None:
    assert parse_definition("name: y\nsteps:\n  - id: a\n    kind: pattern\n    with: {pattern: p}\n").name == "y"


@pytest.mark.parametrize("source, where", [
    ('{"name": "n", "steps": [{"id": "g", "kind": "approval", "with": {"timeout_s": NaN}}]}', "NaN"),
    ('{"name": "n", "steps": [{"id": "g", "kind": "approval", "with": {"timeout_s": Infinity}}]}', "Infinity"),
    ("name: n\nsteps:\n  - {id: g, kind: approval, with: {timeout_s: .nan}}\n", "steps[0].with.timeout_s"),
    ({"name": "n", "steps": [{"id": "g", "kind": "approval", "with": {"timeout_s": math.inf}}]},
     "steps[0].with.timeout_s"),
    ({"name": "n", "steps": [step("a", timeout_s=math.nan)]}, "steps[0].timeout_s"),
    ({"name": "n", "steps": [step("a", **{"with": {"pattern": "p", "variables": {"x": [1.0, -math.inf]}}})]},
     "steps[0].with.variables.x[1]"),
])
def test_nan_and_infinity_are_refused_anywhere_with_their_place(source, where: str) -> None:
    found = problems(source)
    assert any(where in p and ("NaN" in p or "nan" in p or "inf" in p.lower()) for p in found), found


def test_approval_parameters_are_checked_whole() -> None:
    found = problems({"name": "n", "steps": [
        {"id": "a", "kind": "approval", "with": {"timeout_s": -1}},
        {"id": "b", "kind": "approval", "with": {"timeout_s": "{{ inputs.t }}"}},
        {"id": "c", "kind": "approval", "with": {"approvers": "admin", "not_starter": "yes", "by": "me"}},
        {"id": "d", "kind": "approval", "with": {"approvers": ["{{ inputs.who }}"]}}]})
    text = " | ".join(found)
    assert sum("`timeout_s` is a number of seconds" in p for p in found) == 2
    assert "unknown parameter `by`" in text and "`not_starter` is true or false" in text
    assert sum("`approvers` is a list" in p for p in found) == 2
    ok = validate({"name": "n", "steps": [{"id": "a", "kind": "approval", "with": {
        "message": "ship?", "timeout_s": 60, "approvers": ["admin", "key:abc"], "not_starter": True}}]})
    assert ok.steps[0].with_["approvers"] == ["admin", "key:abc"]


def dense_definition() -> dict:
    """1,000 steps each depending on the 200 before it: 179,900 edges in under 1,000,000 characters (before
    the edge ceiling, validating it took ~4 s and every status of its run ~5 s more)."""
    ids = ["".join(pair) for pair in itertools.product(string.ascii_letters, repeat=2)][:1_000]
    return {"name": "dense", "steps": [{"id": sid, "kind": "pattern", "depends_on": ids[max(0, i - 200):i],
                                        "with": {"pattern": "p"}} for i, sid in enumerate(ids)]}


def test_a_dense_graph_is_refused_by_the_edge_ceiling_before_it_is_built() -> None:
    dense = dense_definition()
    assert len(json.dumps(dense, separators=(",", ":"))) < 1_000_000
    assert problems(dense) == [f"steps: more than {MAX_EDGES:,} dependency edges (by steps[141]); the limit is "
                               f"{MAX_EDGES:,} a definition"]
    ids = [f"s{i}" for i in range(300)]
    fan_in = {"name": "fan", "steps": [*(step(sid) for sid in ids), step("join", *ids)]}
    assert problems(fan_in) == [f"steps[300].depends_on: 300 dependencies; the limit is {MAX_DEPENDENCIES} a step"]


def test_a_graph_at_the_edge_ceiling_validates() -> None:
    ids = [f"s{i}" for i in range(200)]
    steps = [step(sid, *ids[max(0, i - 50):i]) for i, sid in enumerate(ids)]
    definition = validate({"name": "busy", "steps": steps,
                           "outputs": {"last": "{{ steps.s199.output.text }}", "first": "{{ steps.s0.output }}"}})
    assert sum(len(s.depends_on) for s in definition.steps) == 8_725
    assert topological_order(definition) == ids


def test_deep_nesting_is_refused_without_recursion() -> None:
    deep: object = "x"
    for _ in range(10_000):
        deep = [deep]
    found = problems({"name": "deep", "steps": [step("a", **{"with": {"pattern": "p", "variables": {"v": deep}}})]})
    assert len(found) == 1 and "nested deeper than 64" in found[0]
    assert "nested deeper than 64" in problems("[" * 100_000 + "]" * 100_000)[0]


def test_data_that_is_not_json_is_refused() -> None:
    assert "set is not JSON data" in problems({"name": "n", "steps": [step("a", **{"with": {"x": {1, 2}}})]})[0]


def _layered_order(definition: Definition) -> list[str]:
    """The topological order as the server computed it before (the reference: DBOS step ids rely on it)."""
    remaining = {s.id: set(s.depends_on) for s in definition.steps}
    order: list[str] = []
    while remaining:
        ready = [s.id for s in definition.steps if s.id in remaining and not remaining[s.id]]
        for step_id in ready:
            del remaining[step_id]
            order.append(step_id)
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


@st.composite
def dags(draw) -> Definition:
    count = draw(st.integers(1, 30))
    names = [f"n{i}" for i in draw(st.permutations(range(count)))]  # definition order differs from the DAG's
    steps = []
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), max_size=5, unique=True)) if i else []
        steps.append(step(name, *deps))
    return Definition.model_validate({"name": "g", "steps": draw(st.permutations(steps))})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(definition=dags())
def test_topological_order_and_ancestry_match_the_reference(definition: Definition) -> None:
    assert topological_order(definition) == _layered_order(definition)
    is_upstream = upstream_test(definition)
    for s in definition.steps:
        closure, frontier = set(), list(s.depends_on)
        while frontier:
            dep = frontier.pop()
            if dep not in closure:
                closure.add(dep)
                frontier.extend(definition.step(dep).depends_on)
        assert {o.id for o in definition.steps if is_upstream(s.id, o.id)} == closure


def inputs_definition(schema: dict) -> Definition:
    return Definition.model_validate({"name": "in", "inputs": schema, "steps": [step("a")]})


def test_patterns_run_on_re2_in_linear_time() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}
    assert schema_problems(schema) == []
    definition = inputs_definition(schema)
    assert check_inputs(definition, {"x": "aaaa"}) == {"x": "aaaa"}
    with pytest.raises(InvalidWorkflow) as caught:  # 2 ** 100,000 steps for a backtracking engine
        check_inputs(definition, {"x": "a" * 100_000 + "!"})
    assert caught.value.problems == ['inputs.x: pattern (expected "^(a+)+$")']
    names = {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}
    with pytest.raises(InvalidWorkflow, match=r"inputs: pattern \(expected"):  # a property name
        check_inputs(inputs_definition(names), {"Bad Key": 1})


@pytest.mark.parametrize("schema, expected", [
    ({"properties": {"x": {"pattern": "(a)\\1"}}}, "inputs.properties.x.pattern: RE2 cannot run this pattern"),
    ({"properties": {"x": {"pattern": "(?=a)b"}}}, "RE2 cannot run this pattern"),
    ({"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}},
     "inputs.properties.x.$ref: references are not supported"),
    ({"patternProperties": {"^(a+)+$": {}}}, "inputs.patternProperties: not supported"),
    ({"allOf": [{"unevaluatedProperties": False}]}, "inputs.allOf[0].unevaluatedProperties: not supported"),
    ({"properties": {"x": {"type": "strin"}}}, "inputs: not a valid JSON Schema"),
])
def test_schemas_outside_the_linear_subset_are_refused(schema: dict, expected: str) -> None:
    found = schema_problems(schema)
    assert any(expected in p for p in found), found


def test_a_property_named_like_a_keyword_is_not_a_keyword() -> None:
    assert schema_problems({"type": "object", "properties": {"$ref": {"type": "string"},
                                                             "pattern": {"type": "string"}}}) == []


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    definition = inputs_definition({"type": "object", "properties": {"xs": {"type": "array", "uniqueItems": True}}})
    many = [{"n": i} for i in range(50_000)]  # pairwise comparison: 1.25 billion comparisons
    assert check_inputs(definition, {"xs": many})["xs"] is many
    for duplicated in ([{"n": 1}, {"n": 1.0}], [[1, {"a": True}], [1, {"a": True}]], [1, 2, 1]):
        with pytest.raises(InvalidWorkflow, match="uniqueItems"):
            check_inputs(definition, {"xs": duplicated})
    assert check_inputs(definition, {"xs": [True, 1, {"a": 1}, {"a": True}]})


def test_inputs_with_nan_or_too_deep_are_refused() -> None:
    definition = inputs_definition({"type": "object"})
    with pytest.raises(InvalidWorkflow, match=r"inputs\.x: nan is not a number JSON allows"):
        check_inputs(definition, {"x": math.nan})
    nested: object = 1
    for _ in range(100):
        nested = {"k": nested}
    with pytest.raises(InvalidWorkflow, match="nested deeper than 64"):
        check_inputs(definition, {"x": nested})
