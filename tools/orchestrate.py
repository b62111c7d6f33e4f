"""The ``orchestrate`` tool."""

import json
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field, JsonValue

from server.config import Strategy
from server.pool.orchestration import OrchestrateRequest, OrchestrateResult, orchestrate
from server.security import caller
from tools._arguments import Guard
from tools._context import call_started, core_errors, dependencies, make_tool

MAX_PROMPT_CHARS = 1_000_000

DESCRIPTION = """Ask one LLM through the provider pool; if a provider fails, the next answers. Give `prompt`,
or `pattern` (see search_patterns) and `variables`. Returns the answer with provider, model, attempts, usage,
cost, latency and a `continuation_id` to continue the conversation."""


Name = Annotated[str, Field(max_length=64)]
MAX_VARIABLES_CHARS = 1_000_000
PatternName = Annotated[str, Field(max_length=64)]
Variables = Annotated[dict[str, JsonValue], Field(max_length=64)]
"""A pattern's variables: free-form JSON values (the tool descriptions say how to pass them)."""


def check_variables_size(variables: dict[str, JsonValue] | None) -> None:
    """Refuse variables whose JSON passes :data:`MAX_VARIABLES_CHARS` (the prompt ceiling) before any work.

    Raises:
        ToolError: too large.
    """
    if variables and len(json.dumps(variables, ensure_ascii=False)) > MAX_VARIABLES_CHARS:
        raise ToolError(f"variables are over {MAX_VARIABLES_CHARS:,} characters of JSON: shorten them")


async def orchestrate_tool(
    ctx: Context,
    prompt: Annotated[str | None, Field(max_length=MAX_PROMPT_CHARS)] = None,
    system: Annotated[str | None, Field(max_length=MAX_PROMPT_CHARS)] = None,
    providers: Annotated[list[Name] | None, Field(description="Tried in this order.", max_length=32)] = None,
    strategy: Strategy | None = None,
    capabilities: Annotated[list[Name] | None, Field(description="Providers must have all.", max_length=16)] = None,
    model: Annotated[str | None, Field(description="Only providers of this model.", max_length=200)] = None,
    max_tokens: Annotated[int, Guard(ge=1, le=200_000)] = 1024,
    temperature: Annotated[float | None, Field(ge=0, le=2, allow_inf_nan=False)] = None,
    timeout_s: Annotated[float | None, Guard(gt=0, le=600)] = None,
    max_fallbacks: Annotated[int | None, Guard(ge=0, le=100)] = None,
    response_format: Literal["text", "json"] = "text",
    user_id: Annotated[str | None, Field(description="For A/B buckets.", max_length=200)] = None,
    continuation_id: Annotated[str | None, Field(max_length=64)] = None,
    cache: Annotated[bool | None, Field(description="Reuse a cached temperature-0 answer.")] = None,
    pattern: PatternName | None = None,
    variables: Variables | None = None,
    agent: Annotated[str | None, Field(description='Agent name or "auto".', max_length=64)] = None,
) -> OrchestrateResult:
    started = call_started()  # waits before the body ran (warm-up, argument checks) count as overhead
    deps = dependencies(ctx)
    check_variables_size(variables)
    ask = OrchestrateRequest(
        prompt=prompt, system=system, providers=providers, strategy=strategy, capabilities=capabilities or (),
        model=model, max_tokens=max_tokens, temperature=temperature, timeout_s=timeout_s,
        max_fallbacks=max_fallbacks, user_id=user_id, continuation_id=continuation_id,
        response_format=response_format, cache=cache, pattern=pattern, variables=variables,
    )
    with core_errors():
        if agent is not None:
            if deps.agents is None:
                raise ToolError("agents are not available in this server")
            return await deps.agents.orchestrate(ask, agent, principal=caller(ctx), started=started,
                                                 progress=ctx.report_progress)
        return await orchestrate(deps.pool, deps.store, deps.config, ask, principal=caller(ctx), started=started,
                                 clock=deps.clock, patterns=deps.patterns, progress=ctx.report_progress)


def tool() -> Tool:
    """The ``orchestrate`` tool."""
    return make_tool(
        orchestrate_tool,
        name="orchestrate",
        description=DESCRIPTION,
        annotations=ToolAnnotations(title="Ask a model", read_only_hint=False, destructive_hint=False,
                                    idempotent_hint=False, open_world_hint=True),
        render=render, detail=("attempts", "usage"),
    )


def render(result: OrchestrateResult) -> str:
    """The text content of a result: the answer, then one line of key facts (the structured content has all)."""
    failed = [f"{a.provider}: {a.error_class or a.status}" for a in result.attempts if a.status == "error"]
    facts = [f"{result.provider} ({result.model})"] if result.agent is None else [
        f"agent {result.agent.name} ({result.agent.via})", f"{result.provider} ({result.model})"]
    if failed:
        facts.append(f"after {', '.join(failed)}")
    if result.cached:
        facts.append("cached")
    facts += [f"{result.usage.input_tokens}+{result.usage.output_tokens} tokens", f"${result.cost_usd:.6f}",
              f"{result.latency_ms:.0f} ms", f"continuation_id {result.continuation_id}"]
    return f"{result.text}\n\n[{' · '.join(facts)}]"
