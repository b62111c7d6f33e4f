"""A definition's sub-workflows: the saved workflows its ``workflow`` steps name, gathered for a run with the
run's size counted while expanding (bounded work: each saved workflow is read and validated once however often
it is used, and the step ceiling refuses a fan-out as soon as it is passed, before anything more is read)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from server.security.limits import CeilingExceeded, check_workflow_ceilings
from server.store import WorkflowStore
from server.workflows.model import MAX_STEPS, Definition, InvalidWorkflow
from server.workflows.status import MAX_NESTING


async def sub_workflows(definition: Definition, store: WorkflowStore, limits: Any,
                        validate: Callable[[Any], Awaitable[Definition]]) -> dict[str, Any]:
    """Every saved workflow ``definition`` uses as a sub-workflow (recursively), name -> JSON data.

    Args:
        store: the saved definitions.
        limits: ``[limits]`` (``workflow_max_steps`` and the duration ceiling), or ``None``: a ceiling of
            100 × :data:`MAX_STEPS` steps only.
        validate: a saved definition's data -> :class:`Definition` (the service runs it off the event loop).

    Raises:
        InvalidWorkflow: a sub-workflow unknown, templated, cyclic or nested deeper than 8.
        CeilingExceeded: more steps than the ceiling, sub-workflows expanded.
    """
    ceiling = limits.workflow_max_steps if limits is not None else 100 * MAX_STEPS
    found: dict[str, Definition] = {}
    sized: dict[str, tuple[int, int]] = {}  # name -> (steps expanded, nesting below)
    problems: list[str] = []

    async def visit(current: Definition, chain: tuple[str, ...]) -> tuple[int, int]:
        total, height = len(current.steps), 0
        for step in current.steps:
            if step.kind != "workflow":
                continue
            name = step.with_.get("workflow")
            if not isinstance(name, str) or "{{" in name:
                problems.append(f"step {step.id}: `workflow` is a saved workflow's name (no placeholders)")
                continue
            if name in chain:
                problems.append(f"step {step.id}: sub-workflow {name!r} would run itself (cycle)")
                continue
            if name not in sized:
                if name not in found:
                    record = await store.get_workflow(name)
                    if record is None:
                        problems.append(f"step {step.id}: no saved workflow {name!r} (save it first)")
                        continue
                    found[name] = await validate(record.definition)
                sized[name] = await visit(found[name], (*chain, name))
            steps, below = sized[name]
            if len(chain) + below >= MAX_NESTING:
                problems.append(f"step {step.id}: sub-workflows nest deeper than {MAX_NESTING}")
            total, height = total + steps, max(height, below + 1)
            if total > ceiling:
                raise CeilingExceeded(f"the workflow has at least {total} steps (sub-workflows included, counted "
                                      f"until the ceiling passed), over this server's ceiling of {ceiling}")
        return total, height

    total, _ = await visit(definition, (definition.name,))
    if problems:
        raise InvalidWorkflow(problems)
    if limits is not None:
        check_workflow_ceilings(limits, total)
    return {name: found[name].dump() for name in found}
