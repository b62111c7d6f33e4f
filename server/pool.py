"""The provider pool: candidate selection, fallback, per-attempt timeouts, concurrency limits, cost, recording.

A call goes to the first candidate; on a retryable failure (timeout, 429, 5xx, connection error, malformed
reply, authentication) the next candidate is tried at once, and every attempt is recorded (off the hot
path) and reported back. A bad request stops the call: another provider would refuse it too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from server.config import ProviderConfig
from server.errors import (
    AllProvidersFailed,
    NoProvidersConfigured,
    OrchestrationError,
    ProviderError,
    ProviderTimeout,
    UnknownProvider,
)
from server.providers import Completion, CompletionRequest, Provider
from server.store import CallRecord, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider attempt within a call, as reported to the client.

    Attributes:
        provider / model: who was asked.
        status: ``ok`` or ``error``.
        error_class: the failure class (``rate_limited``, ``timeout`` …), ``None`` on success.
        error: a redacted one-line description of the failure.
        latency_ms: time spent waiting on this provider.
    """

    provider: str
    model: str
    status: str
    latency_ms: float
    error_class: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PoolResult:
    """The outcome of a successful pool call.

    Attributes:
        completion: the answer.
        provider: the provider that answered.
        attempts: every attempt in order, the last one the success.
        cost_usd: cost of the successful completion (failed attempts report no usage).
        provider_wait_ms: total time spent waiting on providers, all attempts.
    """

    completion: Completion
    provider: ProviderConfig
    attempts: tuple[Attempt, ...]
    cost_usd: float
    provider_wait_ms: float


@dataclass(slots=True)
class PoolMember:
    """A provider with its configuration and its concurrency limiter."""

    config: ProviderConfig
    provider: Provider
    limiter: anyio.CapacityLimiter


class ProviderPool:
    """Routes completion requests through configured providers with fallback.

    Args:
        members: (config, provider) pairs; order does not matter, ``priority`` does.
        store: where attempts are recorded.
        clock: wall clock in Unix seconds (record timestamps); injectable for tests.
        timer: monotonic seconds (latencies).
    """

    def __init__(
        self,
        members: Sequence[tuple[ProviderConfig, Provider]],
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        ordered = sorted(members, key=lambda pair: (pair[0].priority, pair[0].name))
        self._members = {
            config.name: PoolMember(config, provider, anyio.CapacityLimiter(config.max_concurrency))
            for config, provider in ordered
        }
        self._store = store
        self._clock = clock
        self._timer = timer

    @property
    def configs(self) -> list[ProviderConfig]:
        """Provider configurations in priority order."""
        return [member.config for member in self._members.values()]

    def candidates(self, names: Sequence[str] | None = None) -> list[PoolMember]:
        """The members a call may use, in the order they will be tried.

        Args:
            names: explicit provider names, tried in the order given; ``None`` means every ready provider by priority.

        Raises:
            NoProvidersConfigured: no provider is configured, or none of them is ready (no key).
            UnknownProvider: a name is not configured.
        """
        if not self._members:
            raise NoProvidersConfigured(
                "no LLM provider is configured: set OPENAI_API_KEY or ANTHROPIC_API_KEY (or OPENAI_BASE_URL for a "
                "local OpenAI-compatible server), or add [[providers]] to the config file (--config)"
            )
        if names:
            unknown = [name for name in names if name not in self._members]
            if unknown:
                raise UnknownProvider(unknown, list(self._members))
            chosen = [self._members[name] for name in dict.fromkeys(names)]
        else:
            chosen = list(self._members.values())
        ready = [member for member in chosen if member.config.readiness() is None]
        if not ready:
            missing = "; ".join(m.config.readiness() or "" for m in chosen)
            raise NoProvidersConfigured(f"no configured provider is ready: {missing}")
        return ready

    async def complete(
        self,
        request: CompletionRequest,
        *,
        providers: Sequence[str] | None = None,
        tool: str = "orchestrate",
        call_id: str | None = None,
        timeout_s: float | None = None,
    ) -> PoolResult:
        """Ask candidates in order until one answers.

        Args:
            request: the completion request (its ``timeout_s`` is replaced per attempt).
            providers: explicit provider names (see :meth:`candidates`).
            tool: the MCP tool on whose behalf the call runs (recorded).
            call_id: groups the attempts in the records; generated when omitted.
            timeout_s: the whole call's deadline in seconds; each attempt also obeys its provider's ``timeout_s``.

        Raises:
            NoProvidersConfigured, UnknownProvider: see :meth:`candidates`.
            AllProvidersFailed: every candidate failed, or one failed with a non-retryable error.
        """
        members = self.candidates(providers)
        call_id = call_id or uuid.uuid4().hex
        deadline = None if timeout_s is None else self._timer() + timeout_s
        attempts: list[Attempt] = []
        errors: list[ProviderError] = []
        waited_ms = 0.0
        for number, member in enumerate(members, start=1):
            config = member.config
            remaining = None if deadline is None else deadline - self._timer()
            if remaining is not None and remaining <= 0:
                errors.append(ProviderTimeout(config.name, "call deadline passed before this provider was tried"))
                break
            attempt_timeout_s = config.timeout_s if remaining is None else min(config.timeout_s, remaining)
            prepare = getattr(member.provider, "prepare", None)
            if prepare is not None:
                await prepare()
            started_ts = self._clock()
            started = self._timer()
            try:
                completion = await self._attempt(member, request, attempt_timeout_s)
            except ProviderError as error:
                latency_ms = (self._timer() - started) * 1000
                waited_ms += latency_ms
                attempts.append(Attempt(config.name, config.model, "error", latency_ms, error.error_class, error.detail))
                errors.append(error)
                self._record(call_id, tool, config, started_ts, latency_ms, number, error_class=error.error_class)
                logger.info("provider %s failed (%s); %s", config.name, error.error_class,
                            "falling back" if error.retryable else "not retryable")
                if not error.retryable:
                    break
                continue
            except anyio.get_cancelled_exc_class():
                latency_ms = (self._timer() - started) * 1000
                self._record(call_id, tool, config, started_ts, latency_ms, number, error_class="cancelled")
                raise
            latency_ms = (self._timer() - started) * 1000
            waited_ms += latency_ms
            cost_usd = config.cost_usd(completion.usage.input_tokens, completion.usage.output_tokens)
            attempts.append(Attempt(config.name, completion.model, "ok", latency_ms))
            self._record(call_id, tool, config, started_ts, latency_ms, number, completion=completion, cost_usd=cost_usd)
            return PoolResult(completion, config, tuple(attempts), cost_usd, waited_ms)
        raise AllProvidersFailed(errors)

    async def _attempt(self, member: PoolMember, request: CompletionRequest, timeout_s: float) -> Completion:
        config = member.config
        try:
            with anyio.fail_after(timeout_s):
                async with member.limiter:
                    # The SDK's own timeout is a backstop slightly past ours, so ours decides.
                    attempt = CompletionRequest(
                        messages=request.messages,
                        system=request.system,
                        max_tokens=request.max_tokens,
                        temperature=request.temperature,
                        timeout_s=timeout_s + 1.0,
                    )
                    return await member.provider.complete(attempt)
        except TimeoutError:
            raise ProviderTimeout(config.name, f"no answer within {timeout_s:.3g} s") from None

    def _record(
        self,
        call_id: str,
        tool: str,
        config: ProviderConfig,
        started_ts: float,
        latency_ms: float,
        attempt: int,
        *,
        error_class: str | None = None,
        completion: Completion | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        usage = completion.usage if completion is not None else None
        self._store.record_call(
            CallRecord(
                ts=started_ts,
                call_id=call_id,
                tool=tool,
                provider=config.name,
                model=config.model,
                status="ok" if error_class is None else "error",
                latency_ms=latency_ms,
                error_class=error_class,
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                cost_usd=cost_usd,
                attempt=attempt,
            )
        )

    async def aclose(self) -> None:
        """Close every provider's connections; one failing close does not stop the others."""
        for member in self._members.values():
            try:
                await member.provider.aclose()
            except Exception:
                logger.warning("closing provider %s failed", member.config.name, exc_info=True)


def pool_error_message(error: OrchestrationError) -> str:
    """A client-facing message for a pool failure, with what to do next."""
    if isinstance(error, AllProvidersFailed):
        return f"{error} — check the providers' status with monitor_operations, or pass other `providers`."
    return str(error)
