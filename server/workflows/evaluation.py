"""Evaluating a definition over a run's context (``{"inputs": ..., "steps": {id: {"status", "output", ...}}}``):
structured conditions (:class:`~server.workflows.model.Condition`) and the templates of ``with`` and ``outputs``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from knowledge.template import Placeholder, Template, as_text, parse, render

if TYPE_CHECKING:
    from server.workflows.model import Condition


def lookup(context: Mapping[str, Any], path: str | Sequence[str]) -> Any:
    """The value at a dotted path through dicts (list items by index), or ``None`` when it leads nowhere."""
    value: Any = context
    for key in path.split(".") if isinstance(path, str) else path:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def evaluate(condition: Condition, context: Mapping[str, Any]) -> bool:
    """Whether ``condition`` holds over ``context`` (``{"inputs": ..., "steps": {id: {"output": ...}}}``)."""
    if condition.all is not None:
        return all(evaluate(c, context) for c in condition.all)
    if condition.any is not None:
        return any(evaluate(c, context) for c in condition.any)
    if condition.not_ is not None:
        return not evaluate(condition.not_, context)
    return _compare(lookup(context, condition.path or ""), condition.op or "eq", condition.value)


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "exists":
        return left is not None
    if op == "not_exists":
        return left is None
    if op == "truthy":
        return bool(left)
    if op == "falsy":
        return not left
    if op == "eq":
        return _same(left, right)
    if op == "ne":
        return not _same(left, right)
    if op == "in":
        return any(_same(left, item) for item in right)
    if op == "not_in":
        return not any(_same(left, item) for item in right)
    if op == "contains":
        if isinstance(left, str) and isinstance(right, str):
            return right in left
        if isinstance(left, list):
            return any(_same(item, right) for item in left)
        return isinstance(left, dict) and isinstance(right, str) and right in left
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    if not numbers and not (isinstance(left, str) and isinstance(right, str)):
        return False
    return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return left == right


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` with every string rendered as a template over ``context``.

    A string that is exactly one placeholder (``"{{ steps.a.output }}"``) becomes the value at that path as
    it is (an object stays an object); other strings become text (objects as compact JSON).

    Raises:
        RenderError: a path leads nowhere (the message names the path, never a value).
    """
    if isinstance(value, str):
        if "{{" not in value:
            return value
        template = parse(value)
        parts = [s for s in template.segments if s != ""]
        if len(parts) == 1 and isinstance(parts[0], Placeholder):
            return _walk(parts[0], context)
        return render(template, context, decode_json_text=False)
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value


def _walk(placeholder: Placeholder, context: Mapping[str, Any]) -> Any:
    # render() raises a precise RenderError for a path that leads nowhere; reuse it, then read the value.
    render(Template((placeholder,)), context, decode_json_text=False)
    return lookup(context, placeholder.path)


def as_display(value: Any) -> str:
    """A JSON value as text (for Mermaid labels and messages)."""
    return as_text(value, variable="value")
