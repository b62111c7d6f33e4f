"""Agents in workflows: the ``agent`` step (one agent answers a prompt, with its tools) and the ``team`` step
(several agents, ``sequential``, ``parallel`` or ``consensus``).

::

    {"id": "draft", "kind": "agent", "with": {"agent": "writer", "prompt": "Draft notes for {{ inputs.tag }}"}}
    {"id": "review", "kind": "team", "with": {"agents": ["coder", "tester"], "mode": "sequential",
                                              "prompt": "Review {{ steps.draft.output.text }}"}}

**Tools.** An agent whose ``tools`` list downstream MCP tools gets them described in its system prompt, with the
call contract below; its reply ``{"tool": "server.tool", "arguments": {…}}`` is a tool call, whose result goes back
to it as the next turn of the same conversation, at most :data:`MAX_TOOL_CALLS` times. A tool the agent may not
use is never called: the step fails with error class ``tool_not_allowed``. Every model call is an ``orchestrate``
call (policy, recording, the conversation store).

Outputs: ``agent``: the orchestrate result plus ``agent`` and ``tool_calls``; ``team``: ``text`` (the last answer,
or the consensus answer), ``answers`` (agent, text, provider, model per agent) and, for ``consensus``, ``status``
and ``agreement``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from server.agents.registry import Agent, AgentError
from server.agents.service import AgentService
from server.errors import OrchestrationError
from server.pool.orchestration import OrchestrateRequest, OrchestrateResult, orchestrate
from server.security import Principal
from server.workflows.validation import agent_step_problems

ToolCaller = Callable[[str, str, Mapping[str, Any], float | None], Awaitable[dict[str, Any]]]
MAX_TOOL_CALLS = 8
MAX_TOOL_RESULT_CHARS = 20_000
TOOL_CONTRACT = ("You may call these tools (server.tool): {tools}. To call one, reply with JSON only: "
                 '{{"tool": "<server.tool>", "arguments": {{...}}}}. You will get its result and may call again; '
                 "when you are done, answer in plain text.")
_TOOL_CALL = re.compile(r"^\s*(```(?:json)?\s*)?\{.*\}\s*(```)?\s*$", re.DOTALL)


class AgentStepFailed(AgentError):
    """An agent or team step's own failure, with its error class (``tool_not_allowed``, ``invalid_parameters`` …).

    The workflow interpreter reads ``error_class`` for ``retry.retry_on`` and the run's report."""

    def __init__(self, message: str, *, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


def agents_named(kind: str, params: Mapping[str, Any]) -> list[str]:
    """The agent names an ``agent`` or ``team`` step's parameters name (for the planner's checks)."""
    named = [params.get("agent")] if kind == "agent" else list(params.get("agents") or ())
    return [n for n in named if isinstance(n, str)]


def _check(kind: str, params: Mapping[str, Any]) -> None:
    problems = agent_step_problems(kind, params)
    if problems:
        raise AgentStepFailed(f"{kind} step: {'; '.join(problems)}", error_class="invalid_parameters")


def _tool_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """``(server.tool, arguments)`` when ``text`` is a tool call, else ``None``."""
    if not _TOOL_CALL.match(text or ""):
        return None
    body = re.sub(r"^\s*```(?:json)?|```\s*$", "", text.strip())
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return None
    arguments = data.get("arguments") or {}
    return data["tool"], arguments if isinstance(arguments, dict) else {}


async def answer_as(service: AgentService, agent: Agent, prompt: str, principal: Principal,
                    tool_caller: ToolCaller | None, *, max_tokens: int = 1024, temperature: float | None = None,
                    max_tool_calls: int = MAX_TOOL_CALLS, tools_withheld: bool = False) -> dict[str, Any]:
    """One agent's answer to ``prompt``, calling its allowed tools as it asks (see the module docstring).

    Args:
        tools_withheld: the run may call no downstream tool (an inline definition a non-admin started): an agent
            with tools is refused before any model call.

    Raises:
        AgentStepFailed: a tool the agent may not use, or an agent with tools where they are withheld
            (``tool_not_allowed``), a tool call with no downstream servers configured (``unknown_server``), or
            more tool calls than allowed (``too_many_tool_calls``).
        everything ``orchestrate`` raises.
    """
    if agent.spec.tools and tools_withheld:
        raise AgentStepFailed(f"agent {agent.name!r} uses downstream tools ({', '.join(agent.spec.tools)}), which a "
                              "run of an inline definition may use only when role admin starts it (as `tool` "
                              "steps); run a saved workflow instead", error_class="tool_not_allowed")
    system = None
    if agent.spec.tools:
        system = TOOL_CONTRACT.format(tools=", ".join(agent.spec.tools))
    ask = service.as_agent(OrchestrateRequest(prompt=prompt, system=system, max_tokens=max_tokens,
                                              temperature=temperature), agent)
    calls: list[dict[str, Any]] = []
    while True:
        result = await _orchestrate(service, ask, principal)
        call = _tool_call(result.text) if agent.spec.tools else None
        if call is None:
            return {**result.model_dump(mode="json", exclude_none=True), "agent": agent.name,
                    "agent_version": agent.version, "tool_calls": calls}
        name, arguments = call
        server, _, tool = name.partition(".")
        if not tool or not agent.may_use(server, tool):
            raise AgentStepFailed(f"agent {agent.name!r} asked for tool {name[:130]!r}, which it may not use "
                                  f"(its tools: {', '.join(agent.spec.tools)}); the tool was not called",
                                  error_class="tool_not_allowed")
        if len(calls) >= max_tool_calls:
            raise AgentStepFailed(f"agent {agent.name!r} asked for more than {max_tool_calls} tool calls",
                                  error_class="too_many_tool_calls")
        if tool_caller is None:
            raise AgentStepFailed("agent tools need downstream MCP servers in the configuration ([mcp_servers.NAME])",
                                  error_class="unknown_server")
        try:
            output = await tool_caller(server, tool, arguments, None)
            reply, ok = json.dumps(output, ensure_ascii=False, default=str)[:MAX_TOOL_RESULT_CHARS], True
        except OrchestrationError as exc:  # the agent hears of the failure and may answer anyway
            reply, ok = f"the tool failed: {exc}"[:MAX_TOOL_RESULT_CHARS], False
        calls.append({"tool": name, "ok": ok})
        ask = dataclasses.replace(ask, prompt=f"Result of {name}:\n{reply}", continuation_id=result.continuation_id)


async def _orchestrate(service: AgentService, ask: OrchestrateRequest, principal: Principal) -> OrchestrateResult:
    return await orchestrate(service.pool, service.store, service.config, ask, principal=principal,
                             clock=service.clock, patterns=service.patterns)


async def run_agent(service: AgentService, params: Mapping[str, Any], principal: Principal,
                    tool_caller: ToolCaller | None, *, tools_withheld: bool = False) -> dict[str, Any]:
    """The ``agent`` step."""
    _check("agent", params)
    agent = await service.registry.get(str(params["agent"]))
    return await answer_as(service, agent, str(params["prompt"]), principal, tool_caller,
                           max_tokens=int(params.get("max_tokens") or 1024), temperature=params.get("temperature"),
                           max_tool_calls=min(int(params.get("max_tool_calls") or MAX_TOOL_CALLS), MAX_TOOL_CALLS),
                           tools_withheld=tools_withheld)


async def run_team(service: AgentService, params: Mapping[str, Any], principal: Principal,
                   tool_caller: ToolCaller | None, *, tools_withheld: bool = False) -> dict[str, Any]:
    """The ``team`` step: ``sequential`` (each agent sees the previous answer), ``parallel`` (every answer
    collected) or ``consensus`` (the answers aggregated as :mod:`server.consensus` does)."""
    _check("team", params)
    agents = [await service.registry.get(name) for name in params["agents"]]
    prompt, mode = str(params["prompt"]), params.get("mode", "sequential")
    options = {"max_tokens": int(params.get("max_tokens") or 1024), "temperature": params.get("temperature"),
               "tools_withheld": tools_withheld}
    answers: list[dict[str, Any] | None] = [None] * len(agents)
    if mode == "sequential":
        previous: dict[str, Any] | None = None
        for index, agent in enumerate(agents):
            text = prompt if previous is None else (f"{prompt}\n\nThe previous answer (from agent "
                                                    f"{previous['agent']}):\n{previous['text']}")
            previous = answers[index] = await answer_as(service, agent, text, principal, tool_caller, **options)
    else:
        async def one(index: int, agent: Agent) -> None:
            answers[index] = await answer_as(service, agent, prompt, principal, tool_caller, **options)

        async with anyio.create_task_group() as group:
            for index, agent in enumerate(agents):
                group.start_soon(one, index, agent)
    listed = [{"agent": a["agent"], "text": a["text"], "provider": a["provider"], "model": a["model"]}
              for a in answers if a is not None]
    output: dict[str, Any] = {"mode": mode, "answers": listed, "text": listed[-1]["text"]}
    if mode == "consensus":
        output.update(agree(listed, params))
    return output


def agree(answers: list[dict[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    """Aggregate the agents' answers with :mod:`server.consensus.aggregation`: a vote over normalised answers
    (``method: vote``, with ``choices`` when given) or lexical similarity clusters (default). ``status`` is
    ``consensus`` when the agreement reaches ``threshold`` (default 0.5)."""
    from server.consensus.aggregation import Ballot, answer_label, normalise, similarity, vote

    method = params.get("method") or ("vote" if params.get("choices") else "similarity")
    if method not in ("vote", "similarity"):
        raise AgentStepFailed("team `method` is vote or similarity", error_class="invalid_parameters")
    choices = tuple(params.get("choices") or ())
    ballots = []
    for index, answer in enumerate(answers):
        label = answer_label(answer["text"], choices=choices, answer_path=None)
        key = None if label is None else (normalise(label) if method == "vote" else label)
        if key:
            ballots.append(Ballot(index, answer["agent"], key, label or ""))
    if len(ballots) < 2:
        return {"status": "no_consensus", "agreement": 0.0, "text": None, "method": method}
    outcome = vote(ballots) if method == "vote" else similarity(ballots)
    threshold = float(params.get("threshold") or 0.5)
    reached = outcome.answer is not None and not outcome.tie and outcome.agreement >= threshold
    return {"status": "consensus" if reached else "no_consensus", "agreement": round(outcome.agreement, 4),
            "text": outcome.answer if reached else None, "method": method,
            "dissent": [answers[b.index]["agent"] for b in ballots if b.index not in outcome.winners]}
