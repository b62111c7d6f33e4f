"""A pool member: one configured provider with its health and concurrency limit, itself a :class:`Provider`.

Calling a member makes one attempt under the pool's per-provider rules: admission (circuit open, cooling down
after a 429, over its requests- or tokens-per-minute limit or its daily budget: refused with
:class:`~server.errors.ProviderUnavailable`, nothing sent), at most ``max_concurrency`` calls in flight (excess
calls wait, within their time limit), the attempt's time limit (the provider's ``timeout_s``, or less when the
caller's deadline comes first), JSON-mode validation, and the health bookkeeping the breaker and the routing
strategies read (:mod:`server.pool.health`). The answer comes back with its provider, cost and latency.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import anyio

from server.config import ProviderConfig
from server.errors import DeadlineExceeded, MalformedReply, ProviderError, ProviderTimeout, ProviderUnavailable
from server.pool.health import ProviderHealth, Unavailable
from server.pool.providers import Attempt, Completion, CompletionRequest, Provider
from server.pool.text import request_tokens, strip_code_fence


class PoolMember:
    """One provider of the pool (see the module docstring).

    Args:
        config: the provider's configuration (mutable: an incident response may demote its priority).
        provider: the SDK or wire-protocol provider (possibly instrumented).
        health: its runtime state.
        timer: monotonic seconds (latencies).
    """

    def __init__(self, config: ProviderConfig, provider: Provider, health: ProviderHealth, *,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.config = config
        self.provider = provider
        self.health = health
        self.limiter = anyio.CapacityLimiter(config.max_concurrency)
        self._timer = timer

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def ewma_latency_ms(self) -> float | None:
        return self.health.ewma_latency_ms

    @property
    def in_flight(self) -> int:
        return self.health.in_flight

    def unavailable(self, estimated_tokens: int = 0) -> Unavailable | None:
        """``None`` when the member may take a call of ``estimated_tokens`` now, else why not."""
        return self.health.unavailable(estimated_tokens)

    async def complete(self, request: CompletionRequest) -> Completion:
        """One attempt (see the module docstring).

        Raises:
            ProviderUnavailable: not admitted now; the provider was not called.
            DeadlineExceeded: the caller's deadline (``request.timeout_s``) ended the attempt first.
            ProviderTimeout: no answer within the provider's own ``timeout_s``.
            server.errors.ProviderError: what the provider raised (with ``latency_ms`` set).
        """
        config = self.config
        estimated = request_tokens(request)
        unavailable = self.health.unavailable(estimated)
        if unavailable is not None:
            raise ProviderUnavailable(config.name, unavailable.reason, retry_after_s=unavailable.retry_after_s)
        by_deadline = request.timeout_s is not None and request.timeout_s < config.timeout_s
        timeout_s = request.timeout_s if by_deadline else config.timeout_s
        if timeout_s <= 0:
            error = DeadlineExceeded(config.name, "the call's deadline passed before this provider was tried")
            error.latency_ms = 0.0
            raise error
        prepare = getattr(self.provider, "prepare", None)
        if prepare is not None:
            await prepare()  # one-time set-up (SDK import, client): not the provider's latency
        self.health.started(estimated)
        started = self._timer()
        try:
            completion = await self._attempt(request, timeout_s, by_deadline)
        except ProviderError as error:
            error.latency_ms = (self._timer() - started) * 1000
            self.health.failed(None if isinstance(error, DeadlineExceeded) else error)
            raise
        except BaseException:  # cancelled (early stop, the client), or a bug: nothing said about the provider
            self.health.failed(None)
            raise
        latency_ms = (self._timer() - started) * 1000
        cost_usd = config.cost_usd(completion.usage.input_tokens, completion.usage.output_tokens)
        self.health.succeeded(latency_ms, cost_usd)
        return replace(completion, provider=config.name, cost_usd=cost_usd, latency_ms=latency_ms,
                       attempts=(Attempt(config.name, completion.model, "ok", latency_ms),))

    async def _attempt(self, request: CompletionRequest, timeout_s: float, by_deadline: bool) -> Completion:
        name = self.config.name
        try:
            with anyio.fail_after(timeout_s):
                async with self.limiter:
                    # The provider's own timeout is a backstop slightly past ours, so ours decides.
                    completion = await self.provider.complete(replace(request, timeout_s=timeout_s + 1.0))
        except TimeoutError:
            if by_deadline:
                raise DeadlineExceeded(name, f"the call's deadline passed ({timeout_s:.3g} s were left)") from None
            raise ProviderTimeout(name, f"no answer within {timeout_s:.3g} s") from None
        if request.response_format == "json":
            try:
                json.loads(strip_code_fence(completion.text))
            except ValueError:
                raise MalformedReply(name, "reply is not valid JSON (response_format=json)") from None
        return completion

    async def aclose(self) -> None:
        """Close the provider's connections."""
        await self.provider.aclose()
