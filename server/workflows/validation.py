"""Parsing and validating workflow definitions, each check's work bounded before it is done.

Order of checks (:func:`validate`), so that no input makes the server work for long or hold much memory:

1. **Text** (:func:`parse_definition`): at most :data:`MAX_DEFINITION_CHARS` characters; JSON, or YAML through
   PyYAML's safe loader with **aliases refused** (``&a`` / ``*a`` let a few hundred bytes stand for billions of
   values; they are refused while the text is read as events, before anything is built from it).
2. **Data** (:func:`data_problems`): one walk, stopped as soon as a limit passes: JSON types only, nesting at
   most :data:`~server.workflows.model.MAX_DATA_DEPTH`, no NaN or infinite number anywhere, the size as compact
   JSON; then the step count, each step's ``depends_on`` (fan-in) and the dependency edges added up, counted
   before the graph is built.
3. **Shape** (pydantic) and **meaning** (:func:`semantic_problems`): duplicate ids, unknown kinds and
   dependencies, cycles, templates, references to steps that are not upstream, each kind's parameters, the
   ``inputs`` schema (:mod:`server.workflows.inputs`). Each is linear in the definition's size.

Every problem found is listed (:class:`~server.workflows.model.InvalidWorkflow`), not just the first, except
that a limit stops the checks that would have to do the unbounded work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from knowledge.errors import PatternError
from knowledge.template import parse
from server.workflows.inputs import schema_problems
from server.workflows.model import (
    MAX_APPROVAL_TIMEOUT_S,
    MAX_CONDITION_DEPTH,
    MAX_DATA_DEPTH,
    MAX_DEFINITION_CHARS,
    MAX_DEPENDENCIES,
    MAX_EDGES,
    MAX_STEPS,
    STEP_KINDS,
    Definition,
    InvalidWorkflow,
    Step,
    find_cycle,
    upstream_test,
)

APPROVAL_PARAMETERS = ("message", "timeout_s", "approvers", "not_starter")
AGENT_PARAMETERS = ("agent", "prompt", "max_tokens", "temperature", "max_tool_calls")
TEAM_PARAMETERS = ("agents", "mode", "prompt", "max_tokens", "temperature", "threshold", "method", "choices")
TEAM_MODES = ("sequential", "parallel", "consensus")
MAX_TEAM = 16
MAX_APPROVERS = 50
_ROOTS = ("inputs", "steps")
_LISTED_NON_FINITE = 20


def parse_definition(source: str | Mapping[str, Any]) -> Definition:
    """A validated definition from a mapping, JSON text, or YAML text (YAML needs PyYAML, imported now).

    Raises:
        InvalidWorkflow: with every problem found (see :func:`validate`).
    """
    if isinstance(source, str):
        if len(source) > MAX_DEFINITION_CHARS:
            raise InvalidWorkflow([f"definition is {len(source):,} characters; the limit is "
                                   f"{MAX_DEFINITION_CHARS:,}"])
        data = load_text(source)
    else:
        data = source
    return validate(data)


def load_text(text: str) -> Any:
    """JSON text (``NaN`` and ``Infinity`` refused), else YAML through the safe loader with aliases refused.

    Raises:
        InvalidWorkflow: neither JSON nor acceptable YAML.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _NonFinite as exc:
        raise InvalidWorkflow([f"definition: {exc.args[0]} is not a number JSON allows (no NaN or Infinity)"]) from None
    except RecursionError:
        raise InvalidWorkflow([f"definition: nested deeper than {MAX_DATA_DEPTH}"]) from None
    except ValueError:
        pass
    try:
        import yaml
    except ImportError as exc:  # simple mode: JSON only
        raise InvalidWorkflow(["definition is not valid JSON (YAML needs PyYAML installed)"]) from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: several times faster
    try:
        for event in yaml.parse(text, Loader=loader):  # events are linear in the text: nothing expands yet
            if isinstance(event, yaml.AliasEvent):
                raise InvalidWorkflow([f"definition: YAML aliases (*{event.anchor}) are not accepted; write the "
                                       "value out (an alias can stand for more data than any limit allows)"])
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, and no alias left to expand
    except yaml.YAMLError as exc:
        raise InvalidWorkflow([f"definition is neither JSON nor YAML: {str(exc)[:300]}"]) from exc
    except RecursionError:
        raise InvalidWorkflow([f"definition: nested deeper than {MAX_DATA_DEPTH}"]) from None


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def data_problems(data: Any, root: str, max_chars: int) -> list[str]:
    """Problems of JSON-like data found in one walk that stops at the first limit passed: a type JSON does not
    have, nesting deeper than :data:`MAX_DATA_DEPTH`, a NaN or infinite number (each named by its path), or a
    size over ``max_chars`` characters of compact JSON (counted as a lower bound while walking, so shared or
    repeated objects cannot make the walk long).
    """
    problems: list[str] = []
    size = 0
    stack: list[tuple[Any, str, int]] = [(data, root, 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            return [*problems, f"{where}: nested deeper than {MAX_DATA_DEPTH}"]
        if isinstance(value, str):
            size += len(value) + 2
        elif isinstance(value, bool) or value is None:
            size += 4
        elif isinstance(value, int):
            size += 1
        elif isinstance(value, float):
            size += 1
            if not math.isfinite(value) and len(problems) < _LISTED_NON_FINITE:
                problems.append(f"{where}: {value} is not a number JSON allows (no NaN or infinity)")
        elif isinstance(value, Mapping):
            size += 2
            for key, item in value.items():
                if not isinstance(key, str):
                    return [*problems, f"{where}: object keys are text, not {type(key).__name__}"]
                size += len(key) + 4
                stack.append((item, f"{where}.{key}", depth + 1))
        elif isinstance(value, (list, tuple)):
            size += 2
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        else:
            return [*problems, f"{where}: {type(value).__name__} is not JSON data"]
        if size > max_chars:
            return [*problems, f"{root} is over {max_chars:,} characters of JSON; the limit is {max_chars:,}"]
    return problems


def validate(data: Any) -> Definition:
    """Check a definition and return it parsed (see the module docstring for the checks and their order).

    Raises:
        InvalidWorkflow: every problem found.
    """
    if not isinstance(data, Mapping):
        raise InvalidWorkflow([f"a definition is a JSON object, not {type(data).__name__}"])
    problems = data_problems(data, "definition", MAX_DEFINITION_CHARS)
    if problems:
        raise InvalidWorkflow(problems)
    size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    if size > MAX_DEFINITION_CHARS:
        raise InvalidWorkflow([f"definition is {size:,} characters of JSON; the limit is {MAX_DEFINITION_CHARS:,}"])
    problems = graph_size_problems(data.get("steps"))
    if problems:
        raise InvalidWorkflow(problems)
    try:
        definition = Definition.model_validate(data)
    except ValidationError as exc:
        raise InvalidWorkflow(_pydantic_problems(exc)) from None
    problems = semantic_problems(definition)
    if problems:
        raise InvalidWorkflow(problems)
    return definition


def graph_size_problems(steps: Any) -> list[str]:
    """The step count, each step's fan-in and the edges added up, counted on the raw data before any graph is
    built (a dense graph within the size limit would otherwise cost seconds to check)."""
    if not isinstance(steps, list):
        return []
    if len(steps) > MAX_STEPS:
        return [f"{len(steps):,} steps; the limit is {MAX_STEPS:,}"]
    edges = 0
    for index, step in enumerate(steps):
        deps = step.get("depends_on") if isinstance(step, Mapping) else None
        if not isinstance(deps, (list, tuple)):
            continue
        if len(deps) > MAX_DEPENDENCIES:
            return [f"steps[{index}].depends_on: {len(deps):,} dependencies; the limit is {MAX_DEPENDENCIES} a step"]
        edges += len(deps)
        if edges > MAX_EDGES:
            return [f"steps: more than {MAX_EDGES:,} dependency edges (by steps[{index}]); the limit is "
                    f"{MAX_EDGES:,} a definition"]
    return []


def _pydantic_problems(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors(include_url=False):
        where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                        for i, p in enumerate(error["loc"]))
        out.append(f"{where or '(definition)'}: {error['msg']}")
    return out


def semantic_problems(definition: Definition) -> list[str]:
    """Problems pydantic cannot see (see the module docstring); O(steps + edges + template text)."""
    problems: list[str] = []
    ids = {s.id for s in definition.steps}
    seen: set[str] = set()
    for index, step in enumerate(definition.steps):
        if step.id in seen:
            problems.append(f"steps[{index}].id: duplicate step id {step.id!r}")
        seen.add(step.id)
        if step.kind not in STEP_KINDS:
            problems.append(f"steps[{index}].kind: unknown kind {step.kind!r}; kinds: {', '.join(STEP_KINDS)}")
        for dep in step.depends_on:
            if dep not in ids:
                problems.append(f"steps[{index}].depends_on: unknown step {dep!r}")
            if dep == step.id:
                problems.append(f"steps[{index}].depends_on: step {step.id!r} depends on itself")
        if step.when is not None and step.when.depth() > MAX_CONDITION_DEPTH:
            problems.append(f"steps[{index}].when: nested deeper than {MAX_CONDITION_DEPTH}")
        problems.extend(f"steps[{index}].with: {p}" for p in kind_problems(step))
    structural = bool(problems)
    cycle = find_cycle(definition)
    if cycle:
        problems.append(f"cycle: {' -> '.join(cycle)}")
    is_upstream: Callable[[str, str], bool] | None = None if cycle or structural else upstream_test(definition)
    for index, step in enumerate(definition.steps):
        for where, path in _references(step):
            problems.extend(f"steps[{index}].{where}: {p}"
                            for p in _reference_problems(path, ids, step.id, is_upstream))
    for key, value in definition.outputs.items():
        for where, path in _template_paths(value, f"outputs.{key}"):
            problems.extend(f"{where}: {p}" for p in _reference_problems(path, ids, None, None))
    problems.extend(schema_problems(definition.inputs))
    return problems


def kind_problems(step: Step) -> list[str]:
    """The parameters (``with``) each kind needs; an approval's are checked whole, since they are not
    templates: ``timeout_s`` a number of seconds, ``approvers`` role or principal names, ``not_starter`` a
    boolean."""
    w = step.with_
    needs: dict[str, tuple[str, ...]] = {"tool": ("server", "tool"), "workflow": ("workflow",),
                                         "pattern": ("pattern",)}
    problems = [f"kind {step.kind!r} needs `{key}`" for key in needs.get(step.kind, ()) if key not in w]
    if step.kind in ("orchestrate", "consensus") and ("prompt" in w) == ("pattern" in w):
        problems.append(f"kind {step.kind!r} needs `prompt` or `pattern` (one of them)")
    if step.kind == "approval":
        problems.extend(_approval_problems(w))
    if step.kind in ("agent", "team"):
        problems.extend(agent_step_problems(step.kind, w))
    return problems


def agent_step_problems(kind: str, w: Mapping[str, Any]) -> list[str]:
    """An ``agent`` step needs ``agent`` and ``prompt``; a ``team`` step ``agents`` (2 to :data:`MAX_TEAM` names),
    ``prompt`` and a ``mode`` of :data:`TEAM_MODES` (default ``sequential``). Whether the agents exist is known
    when the step runs (:mod:`server.agents.steps`), or to the planner."""
    known = AGENT_PARAMETERS if kind == "agent" else TEAM_PARAMETERS
    problems = [f"{kind}: unknown parameter `{k}`; known: {', '.join(known)}" for k in sorted(set(w) - set(known))]
    if not isinstance(w.get("prompt"), str):
        problems.append(f"kind {kind!r} needs `prompt` (text)")
    if kind == "agent" and not isinstance(w.get("agent"), str):
        problems.append("kind 'agent' needs `agent` (an agent name)")
    if kind == "team":
        agents = w.get("agents")
        if not (isinstance(agents, list) and 2 <= len(agents) <= MAX_TEAM and all(isinstance(a, str) for a in agents)):
            problems.append(f"kind 'team' needs `agents`: a list of 2 to {MAX_TEAM} agent names")
        if w.get("mode", "sequential") not in TEAM_MODES:
            problems.append(f"team `mode` is one of {', '.join(TEAM_MODES)}")
    return problems


def _approval_problems(w: Mapping[str, Any]) -> list[str]:
    problems = [f"approval: unknown parameter `{key}`; known: {', '.join(APPROVAL_PARAMETERS)}"
                for key in sorted(set(w) - set(APPROVAL_PARAMETERS))]
    timeout = w.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout <= MAX_APPROVAL_TIMEOUT_S):
        problems.append(f"approval `timeout_s` is a number of seconds, more than 0 and at most "
                        f"{MAX_APPROVAL_TIMEOUT_S:,.0f} (30 days)")
    approvers = w.get("approvers")
    if approvers is not None and not (
            isinstance(approvers, list) and 0 < len(approvers) <= MAX_APPROVERS
            and all(isinstance(a, str) and 0 < len(a) <= 300 and "{{" not in a for a in approvers)):
        problems.append(f"approval `approvers` is a list of 1 to {MAX_APPROVERS} role names (user, admin) or "
                        "principal ids (key:<id>, jwt:<issuer>#<subject>), written out (no placeholders)")
    if "not_starter" in w and not isinstance(w["not_starter"], bool):
        problems.append("approval `not_starter` is true or false")
    return problems


def _references(step: Step) -> list[tuple[str, tuple[str, ...]]]:
    refs = list(_template_paths(step.with_, "with"))
    if step.when is not None:
        refs.extend(("when", tuple(p.split("."))) for p in step.when.paths())
    return refs


def _template_paths(value: Any, where: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every placeholder path in the strings of ``value``; syntax errors come back as a path ``("!", msg)``."""
    found: list[tuple[str, tuple[str, ...]]] = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if "{{" in item:
                try:
                    found.extend((at, p.path) for p in parse(item).placeholders)
                except PatternError as exc:
                    found.append((at, ("!", str(exc))))
        elif isinstance(item, list):
            stack.extend((child, f"{at}[{i}]") for i, child in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            stack.extend((child, f"{at}.{key}") for key, child in reversed(list(item.items())))
    return found


def _reference_problems(path: tuple[str, ...], ids: set[str], step_id: str | None,
                        is_upstream: Callable[[str, str], bool] | None) -> list[str]:
    if path and path[0] == "!":
        return [path[1]]
    root = path[0] if path else ""
    if root not in _ROOTS:
        return [f"'{'.'.join(path)}' starts with {root!r}; references start with inputs. or steps."]
    if root == "steps":
        if len(path) < 2:
            return ["'steps' needs a step id: steps.<id>.output"]
        if step_id is None or is_upstream is None:
            if path[1] not in ids:
                return [f"'{'.'.join(path)}' names unknown step {path[1]!r}"]
        elif not is_upstream(step_id, path[1]):
            return [f"'{'.'.join(path)}' reads step {path[1]!r}, which is not upstream of {step_id!r} "
                    "(add it to depends_on, directly or through another step)"]
    return []
