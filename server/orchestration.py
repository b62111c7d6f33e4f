"""The ``orchestrate`` service: one prompt through the provider pool, with the figures the result reports."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from server.pool import ProviderPool
from server.providers import CompletionRequest, Message


class AttemptReport(BaseModel):
    """One provider attempt (see :class:`server.pool.Attempt`)."""

    provider: str
    model: str
    status: str = Field(description="ok or error")
    error_class: str | None = Field(default=None, description="timeout, rate_limited, server_error, connection, "
                                    "malformed_reply, authentication, bad_request")
    error: str | None = None
    latency_ms: float


class UsageReport(BaseModel):
    """Token usage of the answer that was returned."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


class OrchestrateResult(BaseModel):
    """The ``orchestrate`` result. Times in milliseconds, cost in USD."""

    text: str
    provider: str
    model: str
    attempts: list[AttemptReport]
    usage: UsageReport
    cost_usd: float
    latency_ms: float = Field(description="the whole call as the server saw it")
    overhead_ms: float = Field(description="time the server spent that was not spent waiting on providers")
    continuation_id: str | None = None


async def orchestrate(
    pool: ProviderPool,
    *,
    prompt: str,
    system: str | None = None,
    providers: Sequence[str] | None = None,
    max_tokens: int = 1024,
    temperature: float | None = None,
    timeout_s: float | None = None,
    started: float | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> OrchestrateResult:
    """Send one prompt through the pool and report the answer with its attempts, usage, cost and timings.

    Args:
        started: ``timer()`` value when the tool call began (defaults to now); ``overhead_ms`` counts from it.

    Raises:
        ValueError: an empty prompt.
        server.errors.OrchestrationError: no provider, unknown provider, or every provider failed.
    """
    started = timer() if started is None else started
    if not prompt.strip():
        raise ValueError("prompt is empty: pass the text to send to the model")
    request = CompletionRequest(
        messages=(Message("user", prompt),), system=system or None, max_tokens=max_tokens, temperature=temperature
    )
    result = await pool.complete(
        request, providers=providers, tool="orchestrate", call_id=uuid.uuid4().hex, timeout_s=timeout_s
    )
    usage = result.completion.usage
    latency_ms = (timer() - started) * 1000
    return OrchestrateResult(
        text=result.completion.text,
        provider=result.provider.name,
        model=result.completion.model,
        attempts=[
            AttemptReport(provider=a.provider, model=a.model, status=a.status, error_class=a.error_class,
                          error=a.error, latency_ms=round(a.latency_ms, 3))
            for a in result.attempts
        ],
        usage=UsageReport(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                          total_tokens=usage.input_tokens + usage.output_tokens),
        cost_usd=round(result.cost_usd, 10),
        latency_ms=round(latency_ms, 3),
        overhead_ms=round(max(0.0, latency_ms - result.provider_wait_ms), 3),
    )
