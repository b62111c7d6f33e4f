"""The ``orchestrate`` tool."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field

from server.config import Strategy
from server.orchestration import OrchestrateRequest, OrchestrateResult, orchestrate
from tools._context import core_errors, dependencies, make_tool

MAX_PROMPT_CHARS = 1_000_000

DESCRIPTION = """Send one prompt to an LLM through the server's provider pool and return the answer.

Providers are ordered by the routing strategy (or the order given in `providers`); when one fails
(timeout, rate limit, server error, dropped connection, unreadable reply) the next is tried at once.
The result says which provider and model answered, every attempt with its error class and latency,
token usage, cost in USD, total latency, the server's own overhead in milliseconds, and a
`continuation_id`: pass it back to continue the conversation (on any provider). list_providers shows
the provider names, their health and circuit state."""


Name = Annotated[str, Field(max_length=64)]


async def orchestrate_tool(
    ctx: Context,
    prompt: Annotated[str, Field(description="The user prompt to send.", max_length=MAX_PROMPT_CHARS)],
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
    temperature: Annotated[float | None, Field(description="Sampling temperature.", ge=0, le=2)] = None,
    timeout_s: Annotated[float | None, Field(description="Deadline for the whole call, seconds.", gt=0, le=600)] = None,
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
) -> OrchestrateResult:
    started = time.perf_counter()
    deps = dependencies(ctx)
    ask = OrchestrateRequest(
        prompt=prompt, system=system, providers=providers, strategy=strategy, capabilities=capabilities or (),
        model=model, max_tokens=max_tokens, temperature=temperature, timeout_s=timeout_s,
        max_fallbacks=max_fallbacks, user_id=user_id, continuation_id=continuation_id,
        response_format=response_format, cache=cache,
    )
    with core_errors():
        return await orchestrate(deps.pool, deps.store, deps.config, ask, started=started, clock=deps.clock)


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
