"""The fallback provider: a :class:`Provider` that asks its candidates in order until one answers.

The rule by error class (the README's table; LiteLLM documents its Router's the same way):

| failure | error class | next candidate | same provider again |
| --- | --- | --- | --- |
| no answer within the provider's ``timeout_s`` | ``timeout`` | at once | yes |
| 429 / 529, overloaded | ``rate_limited`` | at once (the provider cools down) | yes, after Retry-After |
| 5xx, 408 | ``server_error`` | at once | yes |
| connection refused or dropped | ``connection`` | at once | yes |
| unreadable reply, invalid JSON in JSON mode | ``malformed_reply`` | at once | yes |
| 401 / 403: this provider's credentials | ``authentication`` | at once | never |
| 404: model or endpoint unknown to this provider | ``not_found`` | at once | never |
| context window exceeded | ``context_window_exceeded`` | a larger configured window first | never |
| content refused (filter, refusal stop reason, content-policy 400) | ``content_refused`` | at once, unless ``[routing] fallback_on_content_refused = false`` | yes |
| other 400 / 422: invalid parameters | ``bad_request`` | no: the call ends (every provider would refuse it) | never |
| the caller's deadline | ``deadline`` (cancelled) | no: the call ends | never |

1. A candidate that may not take a call now (circuit open, cooling down, over a limit or its budget) is
   skipped without a request.
2. Only when no other candidate remains is a provider retried: up to ``max_retries`` times, after an exponential
   backoff with full jitter (``backoff_base_s · 2ⁿ``, capped at ``backoff_max_s``; AWS Architecture Blog,
   "Exponential Backoff And Jitter", 2015) or the provider's Retry-After, whichever is longer, and only if the
   call's deadline allows the wait.

Every attempt is reported back (:attr:`Completion.attempts`, or :attr:`AllProvidersFailed.errors`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import anyio

from server.config import RoutingConfig
from server.errors import AllProvidersFailed, DeadlineExceeded, NoProviderAvailable, ProviderError
from server.pool.call import Progress
from server.pool.member import PoolMember
from server.pool.providers import Attempt, Completion, CompletionRequest, Provider
from server.pool.text import request_tokens

logger = logging.getLogger(__name__)
RETRY_SAME = frozenset({"timeout", "rate_limited", "server_error", "connection", "malformed_reply",
                        "content_refused", "provider_error"})
"""Failures after which the same provider is worth another try once nobody else is left."""
Candidate = tuple[PoolMember, Provider]
"""A member (configuration and health, for admission and ordering) and the provider to call for it (the member,
wrapped in recording)."""


@dataclass(slots=True)
class _State:
    deadline: float | None
    total: int
    estimated_tokens: int
    attempts: list[Attempt] = field(default_factory=list)
    errors: list[ProviderError] = field(default_factory=list)
    waited_ms: float = 0.0

    def failed(self, member: PoolMember, error: ProviderError) -> None:
        latency_ms = error.latency_ms or 0.0
        status = "cancelled" if isinstance(error, DeadlineExceeded) else "error"
        self.attempts.append(Attempt(member.config.name, member.config.model, status, latency_ms,
                                     error.error_class, error.detail))
        self.errors.append(error)
        self.waited_ms += latency_ms


class FallbackProvider:
    """Asks ``candidates`` in the given order under the retry and fallback rule (the module docstring).

    ``request.timeout_s`` is the deadline of the whole call: each attempt gets the provider's ``timeout_s`` or what
    is left, whichever is less.

    Args:
        candidates: in the order to try them (routing has ordered them).
        routing: the ``[routing]`` settings (retries, backoff, content refusals).
        progress: told before each attempt ("attempt i of n", "falling back to X").
        timer: monotonic seconds; clock: Unix seconds (cooldowns); rng: backoff jitter; sleep: how backoff waits.
    """

    name = "fallback"

    def __init__(self, candidates: Sequence[Candidate], routing: RoutingConfig, *, progress: Progress | None = None,
                 timer: Callable[[], float] = time.perf_counter, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[object]] = anyio.sleep) -> None:
        self.candidates = list(candidates)
        self.model = self.candidates[0][0].model if self.candidates else ""
        self._routing = routing
        self._progress = progress
        self._timer = timer
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def complete(self, request: CompletionRequest) -> Completion:
        """The first answer (with every attempt in :attr:`Completion.attempts`).

        Raises:
            NoProviderAvailable: every candidate was skipped (breaker, cooldown, limits, budget).
            AllProvidersFailed: every attempt failed, or one failed in a way no other provider can mend.
        """
        deadline = None if request.timeout_s is None else self._timer() + request.timeout_s
        estimated = request_tokens(request)
        state = _State(deadline, len(self.candidates), estimated)
        skipped: dict[str, tuple[str, float | None]] = {}
        tried: list[Candidate] = []
        queue = list(self.candidates)
        while queue:
            candidate = queue.pop(0)
            member = candidate[0]
            unavailable = member.unavailable(estimated)
            if unavailable is not None:
                skipped[member.config.name] = (unavailable.reason, unavailable.retry_after_s)
                continue
            completion = await self._try(candidate, request, state)
            if completion is not None:
                return completion
            error = state.errors[-1]
            tried.append(candidate)
            if error.error_class == "context_window_exceeded":
                queue = _larger_windows_first(queue, member.config.context_window)
            elif not self._moves_on(error) or self._deadline_passed(state):
                raise AllProvidersFailed(state.errors)
        if not tried:
            if not skipped:
                raise AllProvidersFailed(state.errors)
            waits = [wait for _, wait in skipped.values() if wait is not None]
            raise NoProviderAvailable({name: why for name, (why, _) in skipped.items()}, min(waits, default=None))
        return await self._retry(tried, request, state)

    def _moves_on(self, error: ProviderError) -> bool:
        if error.error_class == "content_refused":
            return self._routing.fallback_on_content_refused
        return error.retryable

    async def _retry(self, tried: list[Candidate], request: CompletionRequest, state: _State) -> Completion:
        """Retry providers that failed retryably, once no other candidate remains, within the deadline."""
        routing = self._routing
        last_error = {e.provider: e for e in state.errors}
        for retry in range(routing.max_retries):
            eligible = [c for c in tried if last_error[c[0].config.name].error_class in RETRY_SAME
                        and c[0].health.state != "open"]
            if not eligible:
                break
            backoff = self._rng.uniform(0, min(routing.backoff_max_s, routing.backoff_base_s * 2**retry))
            waits = [(max(backoff, last_error[c[0].config.name].retry_after_s or 0.0,
                          c[0].health.cooldown_until - self._clock()), c) for c in eligible]
            wait, candidate = min(waits, key=lambda pair: pair[0])
            if state.deadline is not None and self._timer() + wait >= state.deadline:
                break
            await self._sleep(wait)
            if candidate[0].unavailable(state.estimated_tokens) is not None:
                continue  # still not admitted (its limits, or another call opened its circuit meanwhile)
            completion = await self._try(candidate, request, state)
            if completion is not None:
                return completion
            last_error[candidate[0].config.name] = state.errors[-1]
        raise AllProvidersFailed(state.errors)

    def _deadline_passed(self, state: _State) -> bool:
        return state.deadline is not None and self._timer() >= state.deadline

    async def _try(self, candidate: Candidate, request: CompletionRequest, state: _State) -> Completion | None:
        """One attempt: the answer with every attempt so far, or ``None`` with the error recorded in ``state``."""
        member, provider = candidate
        remaining = None if state.deadline is None else state.deadline - self._timer()
        if remaining is not None and remaining <= 0:
            error = DeadlineExceeded(member.config.name, "the call's deadline passed before this provider was tried")
            error.latency_ms = 0.0
            state.failed(member, error)
            return None
        await self._announce(member, state)
        try:
            completion = await provider.complete(replace(request, timeout_s=remaining))
        except ProviderError as error:
            state.failed(member, error)
            logger.info("provider %s failed (%s)", member.config.name, error.error_class)
            return None
        state.waited_ms += completion.latency_ms
        return replace(completion, attempts=(*state.attempts, *completion.attempts), latency_ms=state.waited_ms)

    async def _announce(self, member: PoolMember, state: _State) -> None:
        if self._progress is None:
            return
        number, name = len(state.attempts) + 1, member.config.name
        total = max(state.total, number)
        if not state.errors:
            message = f"asking {name} (attempt 1 of {total})"
        elif state.errors[-1].provider == name:
            message = f"retrying {name} after {state.errors[-1].error_class} (attempt {number} of {total})"
        else:
            last = state.errors[-1]
            message = (f"{last.provider} failed ({last.error_class}); falling back to {name} "
                       f"(attempt {number} of {total})")
        await self._progress(number, total, message)

    async def aclose(self) -> None:
        """Nothing to close: the candidates' members belong to the pool, which closes them."""


def _larger_windows_first(queue: list[Candidate], overflowed: int | None) -> list[Candidate]:
    """After a context-window overflow at a window of ``overflowed`` tokens (``None``: not configured): candidates
    with a larger configured window first, then those whose window is not configured; smaller or equal ones can
    only overflow again and are dropped."""
    floor = overflowed or 0
    larger = [c for c in queue if c[0].config.context_window is not None and c[0].config.context_window > floor]
    unknown = [c for c in queue if c[0].config.context_window is None]
    return larger + unknown
