"""The ``orchestrate`` service: one prompt through the provider pool, with conversations, the response cache,
A/B buckets, progress, and the figures the result reports. The caller's principal comes down from the tool (or
the workflow run); the pool's policy layer screens the call under it."""

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from knowledge import PatternRegistry, resolve_prompt
from server.config import Config, Strategy
from server.errors import InvalidRequest, require_finite
from server.models import DeferredModel
from server.pool.call import Call, Progress
from server.pool.pool import CallOptions, ProviderPool
from server.pool.providers import Attempt, Completion, CompletionRequest, Message, Usage
from server.pool.routing import assign_bucket
from server.pool.text import estimate_tokens
from server.security import LOCAL, Principal
from server.store import CallRecord, Store


class AttemptReport(DeferredModel):
    """One provider attempt (see :class:`server.pool.providers.Attempt`)."""

    provider: str
    model: str
    status: str = Field(description="ok, error, cancelled (a deadline, the client) or cached")
    error_class: str | None = Field(default=None, description="timeout, rate_limited, server_error, connection, "
                                    "malformed_reply, authentication, not_found, bad_request, "
                                    "context_window_exceeded, content_refused, deadline")
    error: str | None = None
    latency_ms: float


class UsageReport(DeferredModel):
    """Token usage of the answer that was returned."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


class AgentRouting(DeferredModel):
    """The agent that answered ``orchestrate(agent=…)``, and how it was chosen (:mod:`server.agents.routing`)."""

    name: str
    version: int
    reason: str
    via: str = Field(description="named, single, model, cache or fallback")
    cached: bool = False
    routing_latency_ms: float = 0.0
    routing_cost_usd: float = 0.0


class OrchestrateResult(DeferredModel):
    """The ``orchestrate`` result. Times in milliseconds, cost in USD."""

    text: str
    provider: str
    model: str
    attempts: list[AttemptReport]
    usage: UsageReport
    cost_usd: float
    latency_ms: float = Field(description="the whole call as the server saw it")
    overhead_ms: float = Field(description="time the server spent that was not spent waiting on providers")
    continuation_id: str = Field(description="pass it back to continue this conversation")
    cached: bool = False
    ab_bucket: str | None = None
    pattern: str | None = Field(default=None, description="the pattern the prompt was rendered from")
    pattern_version: int | None = Field(default=None, description="the version of that pattern")
    agent: AgentRouting | None = None


@dataclass(frozen=True, slots=True)
class OrchestrateRequest:
    """What a caller asks of ``orchestrate`` (the tool's arguments, validated): ``prompt``, or ``pattern``
    rendered with ``variables``."""

    prompt: str | None = None
    system: str | None = None
    providers: Sequence[str] | None = None
    strategy: Strategy | None = None
    capabilities: Sequence[str] = ()
    model: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    timeout_s: float | None = None
    max_fallbacks: int | None = None
    user_id: str | None = None
    continuation_id: str | None = None
    response_format: Literal["text", "json"] = "text"
    cache: bool | None = None
    pattern: str | None = None
    variables: Mapping[str, Any] | None = None


class UnknownConversation(InvalidRequest):
    """A ``continuation_id`` that no conversation has (or that another principal's conversation has)."""


def trim_history(turns: Sequence[tuple[str, str]], token_budget: int) -> list[tuple[str, str]]:
    """The newest turns whose estimated tokens fit ``token_budget``, oldest first, starting on a user turn."""
    kept: list[tuple[str, str]] = []
    used = 0
    for role, content in reversed(turns):
        cost = estimate_tokens(content)
        if used + cost > token_budget:
            break
        kept.append((role, content))
        used += cost
    kept.reverse()
    while kept and kept[0][0] != "user":  # providers want the conversation to open with the user
        kept.pop(0)
    return kept


def cache_key(request: CompletionRequest, options: CallOptions, principal: str) -> str:
    """SHA-256 of everything that shapes the answer (messages, system, limits, format, provider choice) and of
    the principal: one caller's cached answer is never another's."""
    material = {
        "principal": principal,
        "messages": [[m.role, m.content] for m in request.messages],
        "system": request.system,
        "max_tokens": request.max_tokens,
        "format": request.response_format,
        "providers": list(options.providers or ()),
        "bucket": list(options.bucket_providers),
        "model": options.model,
        "capabilities": sorted(options.capabilities),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


async def orchestrate(
    pool: ProviderPool,
    store: Store,
    config: Config,
    ask: OrchestrateRequest,
    *,
    principal: Principal = LOCAL,
    started: float | None = None,
    timer: Callable[[], float] = time.perf_counter,
    clock: Callable[[], float] = time.time,
    patterns: PatternRegistry | None = None,
    progress: Progress | None = None,
) -> OrchestrateResult:
    """Send one prompt through the pool and report the answer with its attempts, usage, cost and timings.

    Args:
        principal: who asks: the policy screens the call under it, a ``continuation_id`` must be its own, new
            conversations and cache entries belong to it.
        started: ``timer()`` value when the tool call began (defaults to now); ``overhead_ms`` counts from it.
        patterns: the pattern registry, for ``ask.pattern`` (rendered with ``ask.variables`` into the prompt).
        progress: told before each attempt ("attempt i of n", "falling back to X").

    Raises:
        InvalidRequest: an empty prompt, both or neither of prompt and pattern, a NaN or infinite number, or an
            unknown ``continuation_id`` (:class:`UnknownConversation`).
        server.errors.PolicyError: refused by a guardrail or a ceiling (nothing sent), or the answer withheld.
        server.errors.OrchestrationError: no provider, unknown provider, budget, or every provider failed; an
            unknown pattern or a variable that does not fit it (:class:`knowledge.PatternError`); the
            conversation could not be stored (:class:`server.store.StorageError`: no ``continuation_id`` is
            returned that does not exist).
    """
    started = timer() if started is None else started
    require_finite(temperature=ask.temperature, timeout_s=ask.timeout_s)
    resolved = await resolve_prompt(patterns, ask.prompt, ask.pattern, ask.variables)
    prompt = resolved.text
    if not prompt.strip():
        raise InvalidRequest("prompt is empty: pass the text to send to the model" if resolved.pattern is None else
                             f"pattern '{resolved.pattern}' rendered to empty text: pass values for its variables")
    history: list[tuple[str, str]] = []
    if ask.continuation_id:
        turns = await store.conversations.load_turns(ask.continuation_id, owner=principal.owner_filter)
        if turns is None:
            raise UnknownConversation(f"unknown continuation_id {ask.continuation_id!r}: start without one, "
                                      "and pass back the continuation_id a result returns")
        history = trim_history(turns, config.conversations.history_token_budget)
    messages = tuple(Message(role, content) for role, content in history) + (Message("user", prompt),)
    request = CompletionRequest(messages=messages, system=ask.system or None, max_tokens=ask.max_tokens,
                                temperature=ask.temperature, response_format=ask.response_format,
                                timeout_s=ask.timeout_s)
    bucket = None if ask.providers else assign_bucket(config.experiments, ask.user_id)
    options = CallOptions(providers=ask.providers, strategy=ask.strategy, capabilities=tuple(ask.capabilities),
                          model=ask.model, max_fallbacks=ask.max_fallbacks,
                          bucket_providers=bucket[1] if bucket else ())
    call = await pool.call(principal, "orchestrate", ab_bucket=bucket[0] if bucket else None, progress=progress)
    provider = pool.fallback(call, request, options)
    request = await call.policy.screen_request(request)  # what is sent, stored and cached: redacted
    use_cache = (config.cache.enabled if ask.cache is None else ask.cache) and ask.temperature == 0
    key = cache_key(request, options, principal.id) if use_cache else None
    completion = await _cached(store, key, config.cache.ttl_s, call, clock) if key else None
    if completion is None:
        completion = await provider.complete(request)
        if key:
            usage = completion.usage
            store.cache.cache_put(key, {"provider": completion.provider, "model": completion.model,
                                  "text": completion.text, "input_tokens": usage.input_tokens,
                                  "output_tokens": usage.output_tokens}, clock())
    else:
        completion = call.policy.screen_completion(completion)
    continuation_id = ask.continuation_id or uuid.uuid4().hex
    # Committed before the id is returned (a failed write raises StorageError: no continuation_id that does not exist).
    await store.conversations.append_turns(continuation_id, [("user", request.messages[-1].content),
                                                             ("assistant", completion.text)],
                                           clock(), owner=principal.owner_id)
    report = _report(completion, call, continuation_id, (timer() - started) * 1000)
    if resolved.pattern is not None:
        report.pattern, report.pattern_version = resolved.pattern, resolved.version
    return report


async def _cached(store: Store, key: str, ttl_s: float, call: Call, clock: Callable[[], float]) -> Completion | None:
    now = clock()
    hit = await store.cache.cache_get(key, now - ttl_s)
    if hit is None:
        return None
    usage = Usage(hit["input_tokens"] or 0, hit["output_tokens"] or 0)
    store.calls.record_call(CallRecord(ts=now, call_id=call.call_id, tool="orchestrate", provider=hit["provider"],
                                 model=hit["model"], status="ok", latency_ms=0.0, input_tokens=usage.input_tokens,
                                 output_tokens=usage.output_tokens, ab_bucket=call.ab_bucket, cached=True,
                                 workflow=call.workflow))
    return Completion(text=hit["text"], model=hit["model"], usage=usage, provider=hit["provider"],
                      attempts=(Attempt(hit["provider"], hit["model"], "cached", 0.0),))


def _report(completion: Completion, call: Call, continuation_id: str, latency_ms: float) -> OrchestrateResult:
    usage = completion.usage
    cached = bool(completion.attempts) and completion.attempts[-1].status == "cached"
    return OrchestrateResult(
        text=completion.text,
        provider=completion.attempts[-1].provider,
        model=completion.model,
        attempts=[
            AttemptReport(provider=a.provider, model=a.model, status=a.status, error_class=a.error_class,
                          error=a.error, latency_ms=round(a.latency_ms, 3))
            for a in completion.attempts
        ],
        usage=UsageReport(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                          total_tokens=usage.input_tokens + usage.output_tokens),
        cost_usd=round(completion.cost_usd, 10),
        latency_ms=round(latency_ms, 3),
        overhead_ms=round(max(0.0, latency_ms - completion.latency_ms), 3),
        continuation_id=continuation_id,
        cached=cached,
        ab_bucket=call.ab_bucket,
    )
