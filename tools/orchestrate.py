"""The ``orchestrate`` tool."""

from __future__ import annotations

import time
from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field

from server.orchestration import OrchestrateResult, orchestrate
from tools._context import core_errors, dependencies, make_tool

MAX_PROMPT_CHARS = 1_000_000

DESCRIPTION = """Send one prompt to an LLM through the server's provider pool and return the answer.

Providers are tried in priority order (or the order given in `providers`); when one fails (timeout,
rate limit, server error, dropped connection, unreadable reply) the next is tried at once. The result
says which provider and model answered, every attempt with its error class and latency, token usage,
cost in USD, total latency and the server's own overhead in milliseconds. monitor_operations lists
the configured provider names."""


async def orchestrate_tool(
    ctx: Context,
    prompt: Annotated[str, Field(description="The user prompt to send.", max_length=MAX_PROMPT_CHARS)],
    system: Annotated[str | None, Field(description="Optional system prompt.", max_length=MAX_PROMPT_CHARS)] = None,
    providers: Annotated[
        list[Annotated[str, Field(max_length=64)]] | None,
        Field(description="Provider names to use, tried in this order; default: all, by priority.", max_length=32),
    ] = None,
    max_tokens: Annotated[int, Field(description="Completion token ceiling.", ge=1, le=200_000)] = 1024,
    temperature: Annotated[float | None, Field(description="Sampling temperature.", ge=0, le=2)] = None,
    timeout_s: Annotated[float | None, Field(description="Deadline for the whole call, seconds.", gt=0, le=600)] = None,
) -> OrchestrateResult:
    started = time.perf_counter()
    deps = dependencies(ctx)
    with core_errors():
        return await orchestrate(
            deps.pool,
            prompt=prompt,
            system=system,
            providers=providers,
            max_tokens=max_tokens,
            temperature=temperature,
            timeout_s=timeout_s,
            started=started,
        )


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
