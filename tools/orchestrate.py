"""The ``orchestrate`` tool."""

from __future__ import annotations

import json
import time
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field, JsonValue

from server.config import Strategy
from server.pool.orchestration import OrchestrateRequest, OrchestrateResult, orchestrate
from server.security import caller
from tools._context import core_errors, dependencies, make_tool

MAX_PROMPT_CHARS = 1_000_000

DESCRIPTION = """Send one prompt to an LLM through the server's provider pool and return the answer.

Pass `prompt` (the text), or `pattern` (a saved pattern's name, see search_patterns) with `variables`
(its placeholders' values, e.g. {"diff": "..."}): the pattern's current version is rendered into the prompt.

Providers are ordered by the routing strategy (or the order given in `providers`); when one fails
(timeout, rate limit, server error, dropped connection, unreadable reply) the next is tried at once.
The result says which provider and model answered, every attempt with its error class and latency,
token usage, cost in USD, total latency, the server's own overhead in milliseconds, and a
`continuation_id`: pass it back to continue the conversation (on any provider). list_providers shows
the provider names, their health and circuit state."""


Name = Annotated[str, Field(max_length=64)]
MAX_VARIABLES_CHARS = 1_000_000
PatternName = Annotated[str, Field(description="A pattern to render into the prompt (instead of `prompt`).",
                                   pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Variables = Annotated[dict[str, JsonValue], Field(
    description="Values for the pattern's variables: text, numbers, booleans, or objects for {{ a.b }} paths.",
    max_length=64)]


def check_variables_size(variables: dict[str, JsonValue] | None) -> None:
    """Refuse variables whose JSON passes :data:`MAX_VARIABLES_CHARS` (the prompt ceiling) before any work.

    Raises:
        ToolError: too large.
    """
    if variables and len(json.dumps(variables, ensure_ascii=False)) > MAX_VARIABLES_CHARS:
        raise ToolError(f"variables are over {MAX_VARIABLES_CHARS:,} characters of JSON: shorten them")


async def orchestrate_tool(
    ctx: Context,
    prompt: Annotated[str | None, Field(description="The user prompt to send (or give `pattern`).",
                                        max_length=MAX_PROMPT_CHARS)] = None,
    system: Annotated[str | None, Field(description="Optional system prompt.", max_length=MAX_PROMPT_CHARS)] = None,
    providers: Annotated[
        list[Name] | None,
        Field(description="Provider names to use, tried in this order; default: the pool, by strategy.", max_length=32),
    ] = None,
    strategy: Annotated[Strategy | None, Field(description="Routing strategy for this call.")] = None,
    capabilities: Annotated[
        list[Name] | None, Field(description='Only providers with all of these, e.g. ["code"].', max_length=16)
    ] = None,
    model: Annotated[str | None, Field(description="Only providers serving this model.", max_length=200)] = None,
    max_tokens: Annotated[int, Field(description="Completion token ceiling.", ge=1, le=200_000)] = 1024,
    temperature: Annotated[float | None, Field(description="Sampling temperature.", ge=0, le=2,
                                               allow_inf_nan=False)] = None,
    timeout_s: Annotated[float | None, Field(description="Deadline for the whole call, seconds.", gt=0, le=600,
                                             allow_inf_nan=False)] = None,
    max_fallbacks: Annotated[int | None, Field(description="Other providers to try after the first.", ge=0,
                                               le=100)] = None,
    response_format: Annotated[
        Literal["text", "json"], Field(description="json: the answer must be one valid JSON value.")
    ] = "text",
    user_id: Annotated[
        str | None, Field(description="Caller key for A/B buckets (a user stays in one bucket).", max_length=200)
    ] = None,
    continuation_id: Annotated[
        str | None, Field(description="Continue the conversation a previous result named.", max_length=64)
    ] = None,
    cache: Annotated[
        bool | None, Field(description="Answer identical temperature-0 requests from the cache (default: config).")
    ] = None,
    pattern: PatternName | None = None,
    variables: Variables | None = None,
) -> OrchestrateResult:
    started = time.perf_counter()
    deps = dependencies(ctx)
    check_variables_size(variables)
    ask = OrchestrateRequest(
        prompt=prompt, system=system, providers=providers, strategy=strategy, capabilities=capabilities or (),
        model=model, max_tokens=max_tokens, temperature=temperature, timeout_s=timeout_s,
        max_fallbacks=max_fallbacks, user_id=user_id, continuation_id=continuation_id,
        response_format=response_format, cache=cache, pattern=pattern, variables=variables,
    )
    with core_errors():
        return await orchestrate(deps.pool, deps.store, deps.config, ask, principal=caller(ctx), started=started,
                                 clock=deps.clock, patterns=deps.patterns, progress=ctx.report_progress)


def tool() -> Tool:
    """The ``orchestrate`` tool."""
    return make_tool(
        orchestrate_tool,
        name="orchestrate",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Ask a model (with fallback)",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
