"""Workflow definitions: the pydantic model, validation that lists every problem, structured conditions,
templating of ``with`` parameters, and the Mermaid diagram of the DAG.

A definition is JSON (or YAML, see :func:`parse_definition`) of this shape::

    {"name": "review", "inputs": {"type": "object", "properties": {"diff": {"type": "string"}}},
     "steps": [
       {"id": "analyze", "kind": "orchestrate", "with": {"prompt": "Review: {{ inputs.diff }}"}},
       {"id": "gate", "kind": "approval", "depends_on": ["analyze"], "with": {"timeout_s": 3600}},
       {"id": "publish", "kind": "tool", "depends_on": ["gate"],
        "when": {"path": "steps.gate.output.decision", "op": "eq", "value": "approved"},
        "with": {"server": "github", "tool": "comment", "arguments": {"body": "{{ steps.analyze.output.text }}"}}}
     ],
     "outputs": {"review": "{{ steps.analyze.output.text }}"}, "max_parallel": 4}

Nothing in a definition is code: templates are the placeholders of :mod:`knowledge.template` (a path, no
expressions), conditions are comparisons on a path combined with ``all`` / ``any`` / ``not``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from knowledge.errors import PatternError
from knowledge.template import parse
from server.errors import OrchestrationError

MAX_STEPS = 1_000
MAX_DEFINITION_CHARS = 1_000_000
"""Longest definition accepted, as compact JSON."""
MAX_CONDITION_DEPTH = 16
STEP_KINDS: tuple[str, ...] = ("orchestrate", "consensus", "pattern", "tool", "workflow", "approval")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
STEP_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
TRANSIENT_ERRORS: tuple[str, ...] = ("timeout", "rate_limited", "server_error", "connection", "malformed_reply",
                                     "step_timeout", "all_providers_failed", "no_provider_available")
"""The error classes retried when a step's ``retry.retry_on`` is not given."""
_ROOTS = ("inputs", "steps")


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
    all: list[Condition] | None = Field(default=None, max_length=100)
    any: list[Condition] | None = Field(default=None, max_length=100)
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
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
    depends_on: tuple[str, ...] = Field(default=(), max_length=MAX_STEPS)
    with_: dict[str, JsonValue] = Field(default_factory=dict, alias="with")
    when: Condition | None = None
    retry: RetryPolicy = RetryPolicy()
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 86_400)
    on_error: Literal["fail", "skip", "continue"] = "fail"
    description: str = Field(default="", max_length=2_000)


class Definition(_Strict):
    """A workflow definition (see the module docstring)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=5_000)
    inputs: dict[str, JsonValue] = Field(default_factory=lambda: {"type": "object"},
                                         description="JSON Schema of the inputs")
    steps: list[Step] = Field(min_length=1)
    outputs: dict[str, JsonValue] = Field(default_factory=dict)
    max_parallel: int = Field(default=8, ge=1, le=256)

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def dump(self) -> dict[str, Any]:
        """The definition as JSON data (aliases: ``with``, ``not``; defaults left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


# -- parsing and validation -------------------------------------------------------------------------------

def parse_definition(source: str | Mapping[str, Any]) -> Definition:
    """A validated definition from a mapping, JSON text, or YAML text (YAML needs PyYAML, imported now).

    Raises:
        InvalidWorkflow: with every problem found (see :func:`validate`).
    """
    if isinstance(source, str):
        if len(source) > MAX_DEFINITION_CHARS:
            raise InvalidWorkflow([f"definition is {len(source):,} characters; the limit is "
                                   f"{MAX_DEFINITION_CHARS:,}"])
        data = _load_text(source)
    else:
        data = source
    return validate(data)


def _load_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError as exc:  # simple mode: JSON only
        raise InvalidWorkflow(["definition is not valid JSON (YAML needs PyYAML installed)"]) from exc
    try:
        return yaml.safe_load(text)  # safe_load: plain data only, no object construction
    except yaml.YAMLError as exc:
        raise InvalidWorkflow([f"definition is neither JSON nor YAML: {str(exc)[:300]}"]) from exc


def validate(data: Any) -> Definition:
    """Check a definition and return it parsed.

    Checks: shape and types (pydantic), more than :data:`MAX_STEPS` steps, size over
    :data:`MAX_DEFINITION_CHARS`, duplicate step ids, unknown kinds, unknown dependencies, cycles, template
    syntax, references (in ``with``, ``when`` and ``outputs``) to steps that are not upstream or to roots other
    than ``inputs`` / ``steps``, each kind's required parameters, and the inputs schema itself.

    Raises:
        InvalidWorkflow: every problem found, not just the first.
    """
    if not isinstance(data, Mapping):
        raise InvalidWorkflow([f"a definition is a JSON object, not {type(data).__name__}"])
    problems: list[str] = []
    try:
        size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    except (TypeError, ValueError):
        raise InvalidWorkflow(["definition is not JSON data"]) from None
    if size > MAX_DEFINITION_CHARS:
        problems.append(f"definition is {size:,} characters of JSON; the limit is {MAX_DEFINITION_CHARS:,}")
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > MAX_STEPS:
        raise InvalidWorkflow([*problems, f"{len(steps):,} steps; the limit is {MAX_STEPS:,}"])
    try:
        definition = Definition.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        raise InvalidWorkflow(problems) from None
    problems.extend(_semantic_problems(definition))
    if problems:
        raise InvalidWorkflow(problems)
    return definition


def _pydantic_problems(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors(include_url=False):
        where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                        for i, p in enumerate(error["loc"]))
        out.append(f"{where or '(definition)'}: {error['msg']}")
    return out


def _semantic_problems(definition: Definition) -> list[str]:
    problems: list[str] = []
    ids = [s.id for s in definition.steps]
    seen: set[str] = set()
    for index, step in enumerate(definition.steps):
        if step.id in seen:
            problems.append(f"steps[{index}].id: duplicate step id {step.id!r}")
        seen.add(step.id)
        if step.kind not in STEP_KINDS:
            problems.append(f"steps[{index}].kind: unknown kind {step.kind!r}; kinds: {', '.join(STEP_KINDS)}")
        for dep in step.depends_on:
            if dep not in seen and dep not in ids:
                problems.append(f"steps[{index}].depends_on: unknown step {dep!r}")
            if dep == step.id:
                problems.append(f"steps[{index}].depends_on: step {step.id!r} depends on itself")
        if step.when is not None and step.when.depth() > MAX_CONDITION_DEPTH:
            problems.append(f"steps[{index}].when: nested deeper than {MAX_CONDITION_DEPTH}")
        problems.extend(f"steps[{index}].with: {p}" for p in _kind_problems(step))
    structural = bool(problems)
    cycle = find_cycle(definition)
    if cycle:
        problems.append(f"cycle: {' -> '.join(cycle)}")
    upstream = {} if cycle or structural else ancestors(definition)
    for index, step in enumerate(definition.steps):
        allowed = upstream.get(step.id, set()) if upstream else set(ids)
        for where, path in _references(step):
            problems.extend(f"steps[{index}].{where}: {p}" for p in _reference_problems(path, allowed, step.id))
    for key, value in definition.outputs.items():
        for where, path in _template_paths(value, f"outputs.{key}"):
            problems.extend(f"{where}: {p}" for p in _reference_problems(path, set(ids), None))
    problems.extend(_schema_problems(definition.inputs))
    return problems


def _kind_problems(step: Step) -> list[str]:
    w = step.with_
    needs: dict[str, tuple[str, ...]] = {"tool": ("server", "tool"), "workflow": ("workflow",),
                                         "pattern": ("pattern",)}
    problems = [f"kind {step.kind!r} needs `{key}`" for key in needs.get(step.kind, ()) if key not in w]
    if step.kind in ("orchestrate", "consensus") and ("prompt" in w) == ("pattern" in w):
        problems.append(f"kind {step.kind!r} needs `prompt` or `pattern` (one of them)")
    if step.kind == "approval" and "timeout_s" in w and not isinstance(w["timeout_s"], (int, float)):
        problems.append("approval `timeout_s` is a number of seconds")
    return problems


def _schema_problems(schema: Mapping[str, Any]) -> list[str]:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"inputs: not a valid JSON Schema: {exc.message}"]
    return []


def find_cycle(definition: Definition) -> list[str]:
    """One dependency cycle as step ids (first id repeated at the end), or ``[]``."""
    deps = {s.id: [d for d in s.depends_on] for s in definition.steps}
    state: dict[str, int] = {}  # 1 visiting, 2 done
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
            children = [d for d in deps.get(node, ()) if d in deps]
            if i < len(children):
                stack.append((node, i + 1))
                child = children[i]
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return []


def topological_order(definition: Definition) -> list[str]:
    """Step ids, dependencies first; ties kept in definition order (deterministic: DBOS step ids rely on it)."""
    remaining = {s.id: set(s.depends_on) for s in definition.steps}
    order: list[str] = []
    while remaining:
        ready = [s.id for s in definition.steps if s.id in remaining and not remaining[s.id]]
        if not ready:
            raise InvalidWorkflow([f"cycle among {', '.join(sorted(remaining))}"])
        for step_id in ready:
            del remaining[step_id]
            order.append(step_id)
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def ancestors(definition: Definition) -> dict[str, set[str]]:
    """Step id -> every step upstream of it (transitively)."""
    result: dict[str, set[str]] = {}
    by_id = {s.id: s for s in definition.steps}
    for step_id in topological_order(definition):
        up: set[str] = set()
        for dep in by_id[step_id].depends_on:
            up.add(dep)
            up |= result.get(dep, set())
        result[step_id] = up
    return result


def _references(step: Step) -> list[tuple[str, tuple[str, ...]]]:
    refs = list(_template_paths(step.with_, "with"))
    if step.when is not None:
        refs.extend(("when", tuple(p.split("."))) for p in step.when.paths())
    return refs


def _template_paths(value: Any, where: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every placeholder path in the strings of ``value``; syntax errors come back as a path ``("!", msg)``."""
    found: list[tuple[str, tuple[str, ...]]] = []
    if isinstance(value, str):
        if "{{" in value:
            try:
                found.extend((where, p.path) for p in parse(value).placeholders)
            except PatternError as exc:
                found.append((where, ("!", str(exc))))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(_template_paths(item, f"{where}[{i}]"))
    elif isinstance(value, dict):
        for key, item in value.items():
            found.extend(_template_paths(item, f"{where}.{key}"))
    return found


def _reference_problems(path: tuple[str, ...], allowed: set[str], step_id: str | None) -> list[str]:
    if path and path[0] == "!":
        return [path[1]]
    root = path[0] if path else ""
    if root not in _ROOTS:
        return [f"'{'.'.join(path)}' starts with {root!r}; references start with inputs. or steps."]
    if root == "steps":
        if len(path) < 2:
            return ["'steps' needs a step id: steps.<id>.output"]
        if path[1] not in allowed:
            if step_id is None:
                return [f"'{'.'.join(path)}' names unknown step {path[1]!r}"]
            return [f"'{'.'.join(path)}' reads step {path[1]!r}, which is not upstream of {step_id!r} "
                    "(add it to depends_on, directly or through another step)"]
    return []


def check_inputs(definition: Definition, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``inputs`` validated against the definition's schema, with the schema's top-level defaults applied.

    Raises:
        InvalidWorkflow: every schema violation (path and message; never the offending value).
    """
    import jsonschema

    values = dict(inputs)
    for key, prop in (definition.inputs.get("properties") or {}).items():
        if isinstance(prop, dict) and "default" in prop and key not in values:
            values[key] = prop["default"]
    validator = jsonschema.Draft202012Validator(definition.inputs)
    errors = sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    if errors:
        raise InvalidWorkflow([f"inputs{''.join(f'.{p}' for p in e.absolute_path)}: {e.validator} "
                               f"{_schema_message(e)}" for e in errors], what="inputs")
    return values


def _schema_message(error: Any) -> str:
    if error.validator == "required":
        return error.message.split(" is ")[0] + " is required"
    return f"(expected {json.dumps(error.validator_value)[:200]})"


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
