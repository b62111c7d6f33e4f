"""Workflow definitions: validation lists every problem, conditions, templating, topological order, Mermaid."""

from __future__ import annotations

import json

import pytest

from server.workflows.evaluation import evaluate, render_value
from server.workflows.inputs import check_inputs
from server.workflows.model import Condition, InvalidWorkflow, mermaid, topological_order
from server.workflows.validation import parse_definition, validate


def step(id: str, *deps: str, kind: str = "pattern", **extra) -> dict:
    return {"id": id, "kind": kind, "depends_on": list(deps), "with": extra.pop("with", {"pattern": "p"}), **extra}


def problems(data) -> list[str]:
    with pytest.raises(InvalidWorkflow) as caught:
        validate(data)
    return caught.value.problems


def test_a_valid_definition_parses_and_orders_dependencies_first() -> None:
    d = validate({"name": "fan", "steps": [step("join", "a", "b"), step("a"), step("b", "a")]})
    assert topological_order(d) == ["a", "b", "join"]


def test_every_problem_is_listed_at_once() -> None:
    found = problems({"name": "bad", "steps": [
        step("a", "ghost"), step("a"), step("b", kind="teleport"), step("c", "d"), step("d", "c"),
        step("e", with_={}, **{"with": {"pattern": "{{ steps.z.output }}"}}) if False else
        {"id": "e", "kind": "pattern", "with": {"pattern": "{{ steps.b.output.text }}"}},
    ]})
    text = " | ".join(found)
    assert "unknown step 'ghost'" in text
    assert "duplicate step id 'a'" in text
    assert "unknown kind 'teleport'" in text
    assert "cycle: " in text
    assert len(found) >= 4


def test_references_must_be_upstream() -> None:
    found = problems({"name": "refs", "steps": [
        step("a"), step("b"),
        {"id": "c", "kind": "pattern", "depends_on": ["a"],
         "with": {"pattern": "p", "variables": {"x": "{{ steps.b.output.text }}", "y": "{{ env.HOME }}"}},
         "when": {"path": "steps.b.status", "op": "eq", "value": "completed"}}]})
    text = " | ".join(found)
    assert "reads step 'b', which is not upstream of 'c'" in text
    assert "starts with 'env'" in text
    assert sum("not upstream" in p for p in found) == 2


def test_transitive_dependencies_count_as_upstream() -> None:
    validate({"name": "chain", "steps": [step("a"), step("b", "a"),
                                         {"id": "c", "kind": "pattern", "depends_on": ["b"],
                                          "with": {"pattern": "p", "variables": {"x": "{{ steps.a.output }}"}}}]})


def test_size_and_step_limits() -> None:
    assert "the limit is 1,000" in problems({"name": "big", "steps": [step(f"s{i}") for i in range(1001)]})[0]
    huge = {"name": "huge", "description": "x" * 10, "steps": [step("a", **{"with": {"pattern": "p",
                                                                                     "variables": {"v": "y" * 1_100_000}}})]}
    assert any("characters of JSON" in p for p in problems(huge))


def test_template_syntax_and_code_are_rejected() -> None:
    found = problems({"name": "code", "steps": [
        {"id": "a", "kind": "pattern", "with": {"pattern": "{{ inputs.__class__ }}"}},
        {"id": "b", "kind": "pattern", "with": {"pattern": "{{ inputs.x | upper }}"}}]})
    assert len(found) == 2 and all("invalid placeholder" in p for p in found)


def test_kind_parameters_are_checked() -> None:
    found = problems({"name": "kinds", "steps": [
        {"id": "a", "kind": "tool", "with": {"server": "s"}},
        {"id": "b", "kind": "orchestrate", "with": {}},
        {"id": "c", "kind": "workflow", "with": {}}]})
    assert any("needs `tool`" in p for p in found)
    assert any("needs `prompt` or `pattern`" in p for p in found)
    assert any("needs `workflow`" in p for p in found)


def test_bad_shapes_name_their_location() -> None:
    found = problems({"name": "Bad Name", "steps": [{"id": "a", "kind": "pattern", "on_error": "explode",
                                                     "retry": {"max_attempts": 0}, "with": {"pattern": "p"}}]})
    text = " | ".join(found)
    assert "name:" in text and "steps[0].on_error" in text and "steps[0].retry.max_attempts" in text


def test_yaml_and_json_text_are_accepted() -> None:
    yaml_text = "name: y\nsteps:\n  - id: a\n    kind: pattern\n    with: {pattern: p}\n"
    assert parse_definition(yaml_text).name == "y"
    assert parse_definition(json.dumps({"name": "j", "steps": [step("a")]})).name == "j"
    with pytest.raises(InvalidWorkflow):
        parse_definition("name: [unclosed")


def test_conditions_compare_paths_without_code() -> None:
    context = {"inputs": {"n": 3, "tags": ["x"], "s": "approved"}, "steps": {"a": {"output": {"ok": True}}}}
    holds = lambda c: evaluate(Condition.model_validate(c), context)  # noqa: E731
    assert holds({"path": "inputs.n", "op": "gt", "value": 2})
    assert not holds({"path": "inputs.n", "op": "gt", "value": "2"})  # mismatched types: false, no error
    assert holds({"all": [{"path": "inputs.s", "op": "eq", "value": "approved"},
                          {"not": {"path": "inputs.missing", "op": "exists"}}]})
    assert holds({"any": [{"path": "inputs.tags", "op": "contains", "value": "x"},
                          {"path": "inputs.n", "op": "lt", "value": 0}]})
    assert holds({"path": "steps.a.output.ok", "op": "eq", "value": True})
    assert holds({"path": "inputs.n", "op": "in", "value": [1, 3]})
    with pytest.raises(ValueError):
        Condition.model_validate({"path": "inputs.n", "op": "eq", "all": []})


def test_templating_keeps_whole_values_and_renders_text() -> None:
    context = {"inputs": {"topic": "cats"}, "steps": {"a": {"output": {"text": "hi", "n": 2}}}}
    out = render_value({"whole": "{{ steps.a.output }}", "text": "About {{ inputs.topic }}: {{ steps.a.output.n }}",
                        "list": ["{{ inputs.topic }}", 1]}, context)
    assert out == {"whole": {"text": "hi", "n": 2}, "text": "About cats: 2", "list": ["cats", 1]}


def test_inputs_are_checked_against_the_schema_with_defaults() -> None:
    d = validate({"name": "in", "inputs": {"type": "object", "required": ["topic"], "properties": {
        "topic": {"type": "string"}, "n": {"type": "integer", "default": 3}}}, "steps": [step("a")]})
    assert check_inputs(d, {"topic": "x"}) == {"topic": "x", "n": 3}
    with pytest.raises(InvalidWorkflow) as caught:
        check_inputs(d, {"n": "three"})
    assert len(caught.value.problems) == 2


def test_mermaid_draws_every_step_and_edge() -> None:
    d = validate({"name": "m", "steps": [step("a"), step("b", "a", when={"path": "inputs.x", "op": "exists"}),
                                         {"id": "ok", "kind": "approval", "depends_on": ["b"]}]})
    diagram = mermaid(d)
    assert diagram.startswith("flowchart TD")
    assert 's0["a<br/>pattern"]' in diagram and "s0 -.->|when| s1" in diagram and "s1 --> s2" in diagram
    assert 's2{{"ok<br/>approval"}}' in diagram


def test_status_comes_from_records_alone_when_the_run_executes_elsewhere() -> None:
    from server.workflows.runtime import RunRecord
    from server.workflows.status import build_status
    from server.workflows.tracker import RunTracker

    definition = {"name": "g", "steps": [step("a"), {"id": "ok", "kind": "approval", "depends_on": ["a"]},
                                         step("b", "ok"), step("c", "a", when={"path": "inputs.x", "op": "exists"})]}
    record = RunRecord("r1", "g", {"definition": definition, "library": {}, "inputs": {}}, "f", "running")
    recorded = {"a": {"status": "completed", "output": {"text": "x"}, "attempts": 1, "started_at": 1.0,
                      "ended_at": 1.5},
                "ok#opened": {"opened_at": 2.0},
                "c": {"status": "skipped", "output": None, "reason": "condition is false", "attempts": 0}}
    status = build_status(record, recorded, RunTracker(), "dbos")
    by_id = {s.id: s for s in status.steps}
    assert status.status == "waiting"
    assert (by_id["a"].status, by_id["a"].duration_ms) == ("completed", 500.0)
    assert (by_id["ok"].status, by_id["ok"].started_at) == ("waiting", 2.0)
    assert (by_id["b"].status, by_id["c"].reason) == ("pending", "condition is false")
    assert (status.progress.done, status.progress.total) == (2, 4)
