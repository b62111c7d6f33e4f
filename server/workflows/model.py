"""Workflow definitions: the pydantic model, its limits, the DAG's order and ancestry, and the Mermaid diagram.
Parsing and validation are in :mod:`server.workflows.validation`, the ``inputs`` JSON Schema in
:mod:`server.workflows.inputs`.

A definition is JSON (or YAML) of this shape::

    {"name": "review", "inputs": {"type": "object", "properties": {"diff": {"type": "string"}}},
     "steps": [
       {"id": "analyze", "kind": "orchestrate", "with": {"prompt": "Review: {{ inputs.diff }}"}},
       {"id": "gate", "kind": "approval", "depends_on": ["analyze"],
        "with": {"timeout_s": 3600, "approvers": ["admin"], "not_starter": true}},
       {"id": "publish", "kind": "tool", "depends_on": ["gate"],
        "when": {"path": "steps.gate.output.decision", "op": "eq", "value": "approved"},
        "with": {"server": "github", "tool": "comment", "arguments": {"body": "{{ steps.analyze.output.text }}"}}}
     ],
     "outputs": {"review": "{{ steps.analyze.output.text }}"}, "max_parallel": 4}

Nothing in a definition is code: templates are the placeholders of :mod:`knowledge.template` (a path, no
expressions), conditions are comparisons on a path combined with ``all`` / ``any`` / ``not``.

Every algorithm here is linear in the definition's size (steps plus dependency edges); the limits below are
checked on the raw data before any of it runs (:func:`server.workflows.validation.validate`).
"""

import re
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from server.errors import OrchestrationError

MAX_STEPS = 1_000
MAX_DEFINITION_CHARS = 1_000_000
"""Longest definition accepted, as compact JSON."""
MAX_DEPENDENCIES = 256
"""Most ``depends_on`` entries of one step (its fan-in)."""
MAX_EDGES = 10_000
"""Most dependency edges in one definition (every step's ``depends_on``, added up)."""
MAX_DATA_DEPTH = 64
"""Deepest nesting of objects and lists anywhere in a definition (or in a run's inputs)."""
MAX_CONDITION_DEPTH = 16
MAX_APPROVAL_TIMEOUT_S = 30 * 86_400.0
STEP_KINDS: tuple[str, ...] = ("orchestrate", "consensus", "pattern", "tool", "workflow", "approval", "agent", "team")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
STEP_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
MAX_SCHEDULES = 16
TRANSIENT_ERRORS: tuple[str, ...] = ("timeout", "rate_limited", "server_error", "connection", "malformed_reply",
                                     "step_timeout", "all_providers_failed", "no_provider_available")
"""The error classes retried when a step's ``retry.retry_on`` is not given."""


class WorkflowError(OrchestrationError):
    """Root of the workflow errors."""


class InvalidWorkflow(WorkflowError):
    """A definition (or the inputs given to it) does not validate; nothing ran and nothing was stored.

    Attributes:
        problems: every problem found, each naming where (``steps[2].depends_on``) and what.
    """

    def __init__(self, problems: Sequence[str], *, what: str = "workflow definition") -> None:
        self.problems = list(problems)
        listed = "; ".join(self.problems[:50])
        more = f"; and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"invalid {what} ({len(self.problems)} problem(s)): {listed}{more}")


class WorkflowNotFound(WorkflowError):
    """No saved workflow of that name."""


class RunNotFound(WorkflowError):
    """No run with that id (or another principal's)."""


class RunConflict(WorkflowError):
    """The run id exists with other arguments, or the action does not fit the run's state."""


class ToolStepsForbidden(WorkflowError):
    """An inline definition with ``tool`` steps, started by a caller who may not run them."""


class ApprovalRefused(WorkflowError):
    """The caller may not decide this approval step (its ``approvers`` or ``not_starter`` say so)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)  # built at first use


class Condition(_Strict):
    """A comparison on a path (``path`` + ``op`` + ``value``), or ``all`` / ``any`` / ``not`` of conditions.

    Ops: ``eq``, ``ne``, ``gt``, ``ge``, ``lt``, ``le`` (numbers or texts of the same type), ``in`` / ``not_in``
    (``value`` is a list), ``contains`` (text contains text, list contains item, object has key), ``exists`` /
    ``not_exists`` (the path leads somewhere non-null), ``truthy`` / ``falsy``. A path that leads nowhere gives
    ``null``; comparisons of mismatched types are false, never errors.
    """

    path: str | None = Field(default=None, max_length=300)
    op: Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "exists", "not_exists",
                "truthy", "falsy"] | None = None
    value: JsonValue = None
    all: "list[Condition] | None" = Field(default=None, max_length=100)
    any: "list[Condition] | None" = Field(default=None, max_length=100)
    not_: "Condition | None" = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _one_form(self) -> "Condition":
        forms = [name for name, v in (("path", self.path), ("all", self.all), ("any", self.any),
                                      ("not", self.not_)) if v is not None]
        if len(forms) != 1:
            raise ValueError("a condition is exactly one of {path, op, value}, {all: [...]}, {any: [...]}, "
                             f"{{not: {{...}}}}; got {', '.join(forms) or 'none'}")
        if self.path is not None and self.op is None:
            raise ValueError("a path condition needs `op`")
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs `value` to be a list")
        return self

    def paths(self) -> list[str]:
        """Every path the condition reads."""
        if self.path is not None:
            return [self.path]
        children = self.all or self.any or ([self.not_] if self.not_ is not None else [])
        return [p for child in children for p in child.paths()]

    def depth(self) -> int:
        children = self.all or self.any or ([self.not_] if self.not_ is not None else [])
        return 1 + max((c.depth() for c in children), default=0)


class Backoff(_Strict):
    """Wait before retry ``n`` (1-based): ``min(initial_s * factor ** (n - 1), max_s)`` seconds."""

    initial_s: float = Field(default=1.0, ge=0, le=3600)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_s: float = Field(default=60.0, ge=0, le=3600)

    def delay_s(self, retry: int) -> float:
        return min(self.initial_s * self.factor ** max(retry - 1, 0), self.max_s)


class RetryPolicy(_Strict):
    """How often a failing step is tried, and on which error classes (default :data:`TRANSIENT_ERRORS`;
    ``["*"]`` retries every error)."""

    max_attempts: int = Field(default=1, ge=1, le=20)
    backoff: Backoff = Backoff()
    retry_on: tuple[str, ...] = TRANSIENT_ERRORS

    @field_validator("backoff", mode="before")
    @classmethod
    def _number_is_initial(cls, value: Any) -> Any:
        return {"initial_s": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def retries(self, error_class: str) -> bool:
        return "*" in self.retry_on or error_class in self.retry_on


class Step(_Strict):
    """One step of the DAG. ``with`` holds the kind's parameters; strings in it are templates."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    kind: str
    depends_on: tuple[str, ...] = Field(default=(), max_length=MAX_DEPENDENCIES)
    with_: dict[str, JsonValue] = Field(default_factory=dict, alias="with")
    when: "Condition | None" = None
    retry: RetryPolicy = RetryPolicy()
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 86_400)
    on_error: Literal["fail", "skip", "continue"] = "fail"
    description: str = Field(default="", max_length=2_000)


class Schedule(_Strict):
    """A cron schedule of a saved workflow: each tick of ``cron`` starts a run with ``inputs``
    (:mod:`server.workflows.schedules`). ``cron`` has five fields (minute first) or six (seconds first), the
    syntax of croniter (which DBOS's scheduler uses), evaluated in UTC; ``paused`` keeps it without firing."""

    cron: str = Field(min_length=9, max_length=120)
    inputs: dict[str, JsonValue] = Field(default_factory=dict)
    paused: bool = False


class Definition(_Strict):
    """A workflow definition (see the module docstring). ``tags`` are what governance rules select workflows by
    (:mod:`server.workflows.governance`); ``schedules`` need a saved workflow and full mode."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=5_000)
    tags: tuple[str, ...] = Field(default=(), max_length=32)
    schedules: list[Schedule] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    inputs: dict[str, JsonValue] = Field(default_factory=lambda: {"type": "object"},
                                         description="JSON Schema of the inputs")
    steps: list[Step] = Field(min_length=1)
    outputs: dict[str, JsonValue] = Field(default_factory=dict)
    max_parallel: int = Field(default=8, ge=1, le=256)

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in tags if not re.fullmatch(TAG_PATTERN, t)]
        if bad:
            raise ValueError(f"tags must match {TAG_PATTERN}: {', '.join(map(repr, bad[:5]))}")
        return tags

    @cached_property
    def steps_by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}

    def step(self, step_id: str) -> Step:
        """The step with this id (``KeyError`` when there is none)."""
        return self.steps_by_id[step_id]

    def dump(self) -> dict[str, Any]:
        """The definition as JSON data (aliases: ``with``, ``not``; defaults left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


# -- the DAG ------------------------------------------------------------------------------------------

def find_cycle(definition: Definition) -> list[str]:
    """One dependency cycle as step ids (first id repeated at the end), or ``[]``. Iterative depth-first search,
    O(steps + edges); dependencies on unknown steps are ignored (they are reported on their own)."""
    deps: dict[str, list[str]] = {}
    for step in definition.steps:
        deps.setdefault(step.id, []).extend(step.depends_on)
    children = {node: [d for d in targets if d in deps] for node, targets in deps.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in deps:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                state[node] = 1
                path.append(node)
            if i < len(children[node]):
                stack.append((node, i + 1))
                child = children[node][i]
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return []


def topological_order(definition: Definition) -> list[str]:
    """Step ids, dependencies first, layer by layer (a step's layer is the longest dependency path leading to
    it), ties in definition order. Deterministic, and the order runs have always used: DBOS step ids rely on it.

    Raises:
        InvalidWorkflow: the dependencies have a cycle (or name unknown steps).
    """
    index = {s.id: i for i, s in enumerate(definition.steps)}
    waiting = {s.id: set(s.depends_on) for s in definition.steps}
    dependents: dict[str, list[str]] = {}
    for step_id, deps in waiting.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(step_id)
    layer = dict.fromkeys(index, 0)
    ready = [step_id for step_id, deps in waiting.items() if not deps]
    placed = 0
    while ready:  # Kahn's algorithm; a step's layer is settled when its last dependency is placed
        step_id = ready.pop()
        placed += 1
        for after in dependents.get(step_id, ()):
            layer[after] = max(layer[after], layer[step_id] + 1)
            waiting[after].discard(step_id)
            if not waiting[after]:
                ready.append(after)
    if placed < len(waiting):
        stuck = sorted(step_id for step_id, deps in waiting.items() if deps)
        raise InvalidWorkflow([f"cycle among {', '.join(stuck[:20])}{' …' if len(stuck) > 20 else ''}"])
    return sorted(index, key=lambda step_id: (layer[step_id], index[step_id]))


def upstream_test(definition: Definition) -> Callable[[str, str], bool]:
    """``is_upstream(step_id, other)``: whether ``other`` is upstream of ``step_id``, directly or transitively.

    Ancestor sets are bitsets (Python ints) built in one pass over the topological order: O(edges · steps / 64)
    word operations, a few milliseconds for the largest definition accepted.
    """
    bit = {s.id: 1 << i for i, s in enumerate(definition.steps)}
    above: dict[str, int] = {}
    for step_id in topological_order(definition):
        mask = 0
        for dep in definition.step(step_id).depends_on:
            mask |= bit[dep] | above[dep]
        above[step_id] = mask

    def is_upstream(step_id: str, other: str) -> bool:
        return other in bit and bool(above.get(step_id, 0) & bit[other])

    return is_upstream


# -- diagram ---------------------------------------------------------------------------------------------

def mermaid(definition: Definition) -> str:
    """A Mermaid ``flowchart TD`` of the DAG: one node per step (id and kind), one edge per dependency;
    conditional steps are drawn with a dashed edge labelled ``when``."""
    lines = ["flowchart TD"]
    node_ids = {s.id: f"s{i}" for i, s in enumerate(definition.steps)}
    for step in definition.steps:
        label = f"{step.id}<br/>{step.kind}".replace('"', "'")
        shape = ('{{"', '"}}') if step.kind == "approval" else ('["', '"]')
        lines.append(f"    {node_ids[step.id]}{shape[0]}{label}{shape[1]}")
    for step in definition.steps:
        for dep in step.depends_on:
            arrow = " -.->|when| " if step.when is not None else " --> "
            lines.append(f"    {node_ids[dep]}{arrow}{node_ids[step.id]}")
    return "\n".join(lines)
