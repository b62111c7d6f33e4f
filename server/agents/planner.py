"""``plan_workflow``: a planning model drafts a workflow for a goal, in the existing definition format; the workflow
validator and the caller's constraints check the draft, and their problems go back to the model for at most
``[planner] max_repairs`` repairs.

**The planner's output contract** (the system prompt below says the same): a JSON object ::

    {"rationale": "<why these steps, briefly>", "definition": {<a workflow definition>}}

or just the definition object (``{"name": …, "steps": […]}``), which is accepted as a plan without a rationale. A
reply wrapped in prose or a code fence is accepted when it holds one such object. The definition is the format
of :mod:`server.workflows.model`.

**Constraints** (each optional): ``max_steps``; ``max_cost_usd``, against an estimate (every model call of the
plan at its ``max_tokens``, 1024 by default, plus its prompt, priced at the dearest configured provider: an upper
bound more than a forecast); ``agents`` and ``tools`` the plan may use (``server.tool``); ``deadline_s`` for the
whole planning, repairs included. Whatever the constraints say, a plan has ``tool`` steps only when the caller's
role could run them by hand (``admin``: inline definitions with tool steps need it), and only tools of configured
downstream servers; for the same reason, a plan names agents with downstream tools only for an admin. Every
planning call goes through the pool like any other (policy, recording; tool ``plan_workflow``).
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.agents.registry import Agent, AgentError, AgentRegistry
from server.agents.routing import json_object
from server.agents.settings import PlannerSettings
from server.errors import AllProvidersFailed, InvalidRequest
from server.pool.pool import CallOptions, ProviderPool
from server.pool.providers import CompletionRequest, Message
from server.pool.text import estimate_tokens
from server.security import Principal
from server.workflows.model import MAX_DEFINITION_CHARS, Definition, InvalidWorkflow, mermaid
from server.workflows.validation import validate

if TYPE_CHECKING:
    from server.config import Config

MAX_GOAL_CHARS = 20_000
DEFAULT_STEP_TOKENS = 1024
PLANNER_SYSTEM = """You plan workflows: DAGs of steps that reach a goal. Reply with JSON only:
{"rationale": "<why these steps, briefly>", "definition": {"name": "<a-z0-9_- slug>", "description": "...",
"steps": [{"id": "<letters, digits, _ or ->", "kind": "<kind>", "depends_on": ["<earlier step id>"],
"with": {...}}], "outputs": {"<name>": "{{ steps.<id>.output.text }}"}}}.
Kinds and their `with`: agent {"agent": "<agent name>", "prompt": "..."}; team {"agents": ["<name>", "<name>"],
"mode": "sequential"|"parallel"|"consensus", "prompt": "..."}; orchestrate {"prompt": "..."}{tools}.
A prompt may read an earlier step's answer as {{ steps.<id>.output.text }} only if that step is in its
depends_on (directly or through another step). Use only the agents listed. Keep the plan as small as the goal
allows."""
NOT_JSON = ("the reply was not valid JSON (perhaps cut off at the token limit): reply with the plan as one JSON "
            "object only, as short as the goal allows")
TOOL_KIND = '; tool {"server": "<server>", "tool": "<tool>", "arguments": {...}} (only the tools listed)'


class PlanFailed(AgentError):
    """No valid plan within the repairs (or the deadline) allowed.

    Attributes:
        problems: the last draft's problems.
        attempts: how many drafts the model made.
    """

    error_class = "plan_failed"

    def __init__(self, message: str, problems: Sequence[str], attempts: int) -> None:
        self.problems = list(problems)
        self.attempts = attempts
        listed = "; ".join(self.problems[:20]) or "none recorded"
        super().__init__(f"{message}; the last draft's problems: {listed}")


@dataclass(frozen=True, slots=True)
class PlanConstraints:
    """What a plan must respect (see the module docstring); ``None``: no limit."""

    max_steps: int | None = None
    max_cost_usd: float | None = None
    agents: Sequence[str] | None = None
    tools: Sequence[str] | None = None
    deadline_s: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A valid plan.

    Attributes:
        definition: the workflow definition (JSON data, the existing format).
        parsed: the same, validated.
        rationale: the planner's reason for it (empty when the model returned just a definition).
        attempts: drafts made (1: valid at once).
        estimated_cost_usd: the cost estimate the ``max_cost_usd`` constraint was checked against.
        planning_cost_usd: what the planning calls cost.
        latency_ms: the whole planning, milliseconds.
    """

    definition: dict[str, Any]
    parsed: Definition
    rationale: str
    attempts: int
    estimated_cost_usd: float
    planning_cost_usd: float
    latency_ms: float

    @property
    def mermaid(self) -> str:
        return mermaid(self.parsed)


def parse_reply(text: str) -> tuple[Any, str]:
    """(definition data, rationale) from the planner's reply (see the output contract).

    Raises:
        ValueError: no JSON object in the reply (said in the message).
    """
    if len(text) > MAX_DEFINITION_CHARS:
        raise ValueError(f"the reply is over {MAX_DEFINITION_CHARS:,} characters")
    data = json_object(text, "the reply")
    if isinstance(data, dict) and isinstance(data.get("definition"), dict):
        rationale = data.get("rationale")
        return data["definition"], rationale[:2_000] if isinstance(rationale, str) else ""
    return data, ""


class Planner:
    """Drafts, checks and repairs plans (see the module docstring).

    Args:
        pool: the planning model is asked through it.
        registry: the agents a plan may name.
        settings: ``[planner]``.
        config: downstream servers (``[mcp_servers]``) and provider prices.
        timer: monotonic seconds.
    """

    def __init__(self, pool: ProviderPool, registry: AgentRegistry, settings: PlannerSettings, config: Config, *,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.pool = pool
        self.registry = registry
        self.settings = settings
        self.config = config
        self._timer = timer

    async def plan(self, goal: str, constraints: PlanConstraints, principal: Principal, *,
                   name: str | None = None) -> Plan:
        """A valid plan for ``goal`` (its name ``name`` when given).

        Raises:
            InvalidRequest: an empty or overlong goal, or constraints naming unknown agents.
            PlanFailed: no valid draft within ``max_repairs`` repairs or ``deadline_s``; lists the last problems.
            server.errors.OrchestrationError: the planning model could not be reached (the pool's errors), or a
                policy refusal.
        """
        if not goal.strip() or len(goal) > MAX_GOAL_CHARS:
            raise InvalidRequest(f"goal: give the goal as 1 to {MAX_GOAL_CHARS:,} characters of text")
        started = self._timer()
        agents = await self._agents(constraints, principal)
        tools = self._tools(constraints, principal)
        messages = [Message("user", self._brief(goal, constraints, agents, tools))]
        problems: list[str] = []
        attempts = 0
        cost = 0.0
        deadline_s = constraints.deadline_s or self.settings.timeout_s * (self.settings.max_repairs + 1)
        try:
            with anyio.fail_after(deadline_s):
                while attempts <= self.settings.max_repairs:
                    attempts += 1
                    try:
                        completion = await self.pool.complete(self._request(messages), principal=principal,
                                                              tool="plan_workflow", options=CallOptions(
                                                                  providers=self.settings.providers or None,
                                                                  model=self.settings.model))
                    except AllProvidersFailed as exc:
                        if not all(e.error_class == "malformed_reply" for e in exc.errors):
                            raise
                        # A JSON-mode reply that is not JSON (often cut off at max_tokens) is a draft to repair.
                        problems = [NOT_JSON]
                        last = messages.pop()  # the same request again, told why (the roles keep alternating)
                        messages.append(Message("user", f"{last.content}\n\nYour last reply: {NOT_JSON}."))
                        continue
                    cost += completion.cost_usd
                    data, rationale, parsed, problems = await self._check(completion.text, name, constraints,
                                                                          agents, tools)
                    if parsed is not None and not problems:
                        return Plan(parsed.dump(), parsed, rationale, attempts, self.estimate_cost(parsed),
                                    round(cost, 10), round((self._timer() - started) * 1000, 3))
                    messages += [Message("assistant", completion.text[:MAX_DEFINITION_CHARS]),
                                 Message("user", "That plan has these problems:\n- " + "\n- ".join(problems[:30])
                                         + "\nReply with the corrected plan, as the same JSON.")]
        except TimeoutError:
            raise PlanFailed(f"no valid plan within the deadline of {deadline_s:g} s "
                             f"({attempts} draft(s))", problems, attempts) from None
        raise PlanFailed(f"the planner made no valid plan in {attempts} draft(s) "
                         f"({self.settings.max_repairs} repair(s) allowed)", problems, attempts)

    async def _check(self, text: str, name: str | None, constraints: PlanConstraints, agents: Sequence[Agent],
                     tools: Sequence[str] | None) -> tuple[Any, str, Definition | None, list[str]]:
        try:
            data, rationale = parse_reply(text)
        except ValueError as exc:
            return None, "", None, [str(exc)]
        if name is not None and isinstance(data, dict):
            data = {**data, "name": name}
        try:
            parsed = await anyio.to_thread.run_sync(validate, data)  # bounded, but CPU work: off the event loop
        except InvalidWorkflow as exc:
            return data, rationale, None, exc.problems
        return data, rationale, parsed, self.problems(parsed, constraints, agents, tools)

    def problems(self, plan: Definition, constraints: PlanConstraints, agents: Sequence[Agent],
                 tools: Sequence[str] | None) -> list[str]:
        """What in a valid definition breaks the constraints, names unknown agents or uses tools it may not."""
        from server.agents.steps import agents_named

        problems = []
        if constraints.max_steps is not None and len(plan.steps) > constraints.max_steps:
            problems.append(f"{len(plan.steps)} steps; the plan may have at most {constraints.max_steps}")
        names = {a.name for a in agents}
        for index, step in enumerate(plan.steps):
            for agent in agents_named(step.kind, step.with_):
                if agent not in names:
                    problems.append(f"steps[{index}]: agent {agent!r} is not one of the agents listed "
                                    f"({', '.join(sorted(names)) or 'none'})")
            if step.kind == "tool":
                tool = f"{step.with_.get('server')}.{step.with_.get('tool')}"
                if tools is None or not any(t in (tool, f"{step.with_.get('server')}.*") for t in tools):
                    problems.append(f"steps[{index}]: tool {tool!r} is not one of the tools listed "
                                    f"({', '.join(tools or ()) or 'none: use agent steps'})")
        estimate = self.estimate_cost(plan)
        if constraints.max_cost_usd is not None and estimate > constraints.max_cost_usd:
            problems.append(f"the estimated cost is ${estimate:.4f}, over the limit of ${constraints.max_cost_usd:g}: "
                            "use fewer model steps or smaller max_tokens")
        return problems

    def estimate_cost(self, plan: Definition) -> float:
        """An upper-bound estimate in USD: every model call at its ``max_tokens`` plus its prompt's tokens, at the
        dearest configured provider's prices (see the module docstring)."""
        prices = [(c.input_cost_per_mtok, c.output_cost_per_mtok) for c in self.pool.configs] or [(0.0, 0.0)]
        input_price, output_price = max(p[0] for p in prices), max(p[1] for p in prices)
        total = 0.0
        for step in plan.steps:
            fan_out, team, max_tokens = (step.with_.get(k) for k in ("max_providers", "agents", "max_tokens"))
            calls = {"orchestrate": 1, "agent": 1, "team": len(team) if isinstance(team, list) else 2,
                     "consensus": fan_out if isinstance(fan_out, int) else 3}.get(step.kind, 0)
            output = max_tokens if isinstance(max_tokens, int) else DEFAULT_STEP_TOKENS
            prompt = estimate_tokens(json.dumps(step.with_.get("prompt", ""), ensure_ascii=False))
            total += calls * (prompt * input_price + output * output_price) / 1e6
        return round(total, 8)

    async def _agents(self, constraints: PlanConstraints, principal: Principal) -> list[Agent]:
        """The agents a plan may name: those the constraints list (all by default); for a caller other than an
        admin, only agents without downstream tools (the run of an inline plan could not use them)."""
        agents = await self.registry.list()
        if constraints.agents is not None:
            unknown = sorted(set(constraints.agents) - {a.name for a in agents})
            if unknown:
                raise InvalidRequest(f"constraints.agents: unknown agent(s) {', '.join(unknown)}; agents: "
                                     f"{', '.join(a.name for a in agents) or 'none'}")
            agents = [a for a in agents if a.name in constraints.agents]
        if principal.role == "admin":
            return agents
        if constraints.agents is not None and (tooled := [a.name for a in agents if a.spec.tools]):
            raise InvalidRequest(f"constraints.agents: {', '.join(tooled)} use downstream tools, which only role "
                                 "admin may plan with")
        return [a for a in agents if not a.spec.tools]

    def _tools(self, constraints: PlanConstraints, principal: Principal) -> list[str] | None:
        """The tools a plan may use: none unless the caller could run tool steps by hand (role admin); of
        those, the configured servers' tools the constraints allow (``None`` as a constraint: any of them)."""
        if principal.role != "admin" or not self.config.mcp_servers:
            return None
        if constraints.tools is None:
            return [f"{server}.*" for server in sorted(self.config.mcp_servers)]
        return [t for t in constraints.tools if t.partition(".")[0] in self.config.mcp_servers]

    def _brief(self, goal: str, constraints: PlanConstraints, agents: Sequence[Agent],
               tools: Sequence[str] | None) -> str:
        listed = "\n".join(f"- {a.name}: {a.spec.description}"
                           + (f" (capabilities: {', '.join(a.spec.capabilities)})" if a.spec.capabilities else "")
                           for a in agents) or "(none: use orchestrate steps)"
        limits = [f"at most {constraints.max_steps} steps" if constraints.max_steps else "",
                  f"an estimated cost of at most ${constraints.max_cost_usd:g}" if constraints.max_cost_usd else ""]
        lines = [f"Goal: {goal}", f"Agents:\n{listed}"]
        if tools:
            lines.append("Tools (server.tool; server.* is every tool of that server): " + ", ".join(tools))
        if any(limits):
            lines.append("Constraints: " + "; ".join(x for x in limits if x))
        return "\n\n".join(lines)

    def _request(self, messages: Sequence[Message]) -> CompletionRequest:
        system = PLANNER_SYSTEM.replace("{tools}", TOOL_KIND if self.config.mcp_servers else "")
        return CompletionRequest(messages=tuple(messages), system=system, max_tokens=self.settings.max_tokens,
                                 temperature=0.0, response_format="json", timeout_s=self.settings.timeout_s)


class _Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int | None = Field(default=None, ge=1, le=1_000)
    max_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    agents: list[str] | None = Field(default=None, max_length=1_000)
    tools: list[str] | None = Field(default=None, max_length=1_000)
    deadline_s: float | None = Field(default=None, gt=0, le=3_600, allow_inf_nan=False)


def constraints_from(data: Mapping[str, Any] | None, agents: Sequence[str] | None) -> PlanConstraints:
    """:class:`PlanConstraints` from the tool's ``constraints`` object and ``agents`` list (both optional; a plan
    may use the agents both allow).

    Raises:
        InvalidRequest: an unknown constraint (with the closest name) or a value out of range; every problem.
    """
    try:
        given = _Constraints.model_validate(dict(data or {}))
    except ValidationError as exc:
        known = list(_Constraints.model_fields)
        problems = [f"constraints.{'.'.join(map(str, e['loc']))}: " + (
            f"unknown constraint{_closest(str(e['loc'][-1]), known)}; known: {', '.join(known)}"
            if e["type"] == "extra_forbidden" else e["msg"]) for e in exc.errors(include_url=False)]
        raise InvalidRequest("; ".join(problems[:10])) from None
    allowed = given.agents
    if agents is not None:
        allowed = [a for a in agents if allowed is None or a in allowed]
    return PlanConstraints(max_steps=given.max_steps, max_cost_usd=given.max_cost_usd, agents=allowed,
                           tools=given.tools, deadline_s=given.deadline_s)


def _closest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""
