"""Per-provider runtime state: circuit breaker, 429 cooldown, rate and token limits, daily spend, latency EWMA.

The breaker follows the usual three states (Nygard, *Release It!*, ch. 5): **closed** counts outcomes in a
sliding window and opens when at least ``breaker_min_calls`` calls failed at a rate of
``breaker_failure_rate`` or more; **open** refuses calls for ``breaker_cooldown_s``; then **half-open** lets
one probe through, whose success closes the circuit and whose failure opens it again. Only failures that
say something about the provider count (timeouts, 5xx, dropped connections, unreadable replies); a 429
cools the provider down for its Retry-After instead, and request-specific errors (bad request, context
window, refusal) count for nothing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.config import ProviderConfig, RoutingConfig
from server.errors import ProviderError

BREAKER_ERRORS = frozenset({"timeout", "server_error", "connection", "malformed_reply", "provider_error"})
_MINUTE_S = 60.0

logger = logging.getLogger(__name__)


RECENT_CALLS = 10
"""How many of a provider's last calls its :meth:`ProviderHealth.status` reads."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Why a provider may not take a call now, and for how long (seconds) when known."""

    reason: str
    retry_after_s: float | None = None


def utc_day(ts: float) -> str:
    """The UTC calendar day of a Unix time, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(ts: float) -> float:
    now = datetime.fromtimestamp(ts, UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


class ProviderHealth:
    """The mutable state of one provider. Single event loop: no locks needed.

    Args:
        config: the provider's configuration (limits, budget).
        routing: breaker and cooldown settings.
        clock: Unix seconds; injectable for tests.
    """

    def __init__(self, config: ProviderConfig, routing: RoutingConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.routing = routing
        self.clock = clock
        self.state = "closed"
        self.open_until = 0.0
        self.cooldown_until = 0.0
        self.probe_in_flight = False
        self.in_flight = 0
        self.ewma_latency_ms: float | None = None
        self.outcomes: deque[tuple[float, bool]] = deque()
        self.recent: deque[str | None] = deque(maxlen=RECENT_CALLS)
        """The error class of each of the last calls (``None``: it succeeded), whatever the class: what
        :meth:`status` reads, where the breaker counts only failures that say something about the provider."""
        self.request_times: deque[float] = deque()
        self.token_times: deque[tuple[float, int]] = deque()
        self.spend_day = utc_day(clock())
        self.spend_usd = 0.0

    # -- admission ------------------------------------------------------------------------------------------

    def unavailable(self, estimated_tokens: int = 0) -> Unavailable | None:
        """``None`` when the provider may take a call of ``estimated_tokens`` now, else why not."""
        now = self.clock()
        if self.state == "open":
            if now < self.open_until:
                return Unavailable("circuit open", self.open_until - now)
            self.state = "half_open"
        if self.state == "half_open" and self.probe_in_flight:
            return Unavailable("circuit half-open, probe in flight")
        if now < self.cooldown_until:
            return Unavailable("cooling down after a rate limit", self.cooldown_until - now)
        if self.config.rpm is not None:
            self._prune(now)
            if len(self.request_times) >= self.config.rpm:
                return Unavailable(f"at its limit of {self.config.rpm} requests/min",
                                   self.request_times[0] + _MINUTE_S - now)
        if self.config.tpm is not None:
            self._prune(now)
            used = sum(tokens for _, tokens in self.token_times)
            if used and used + estimated_tokens > self.config.tpm:
                return Unavailable(f"at its limit of {self.config.tpm} tokens/min",
                                   self.token_times[0][0] + _MINUTE_S - now)
        if self.config.daily_budget_usd is not None and self.spent_today(now) >= self.config.daily_budget_usd:
            return Unavailable(f"daily budget of ${self.config.daily_budget_usd:g} spent",
                               seconds_to_utc_midnight(now))
        return None

    def _prune(self, now: float) -> None:
        while self.request_times and self.request_times[0] <= now - _MINUTE_S:
            self.request_times.popleft()
        while self.token_times and self.token_times[0][0] <= now - _MINUTE_S:
            self.token_times.popleft()

    def spent_today(self, now: float | None = None) -> float:
        """USD spent on this provider during the current UTC day."""
        day = utc_day(self.clock() if now is None else now)
        if day != self.spend_day:
            self.spend_day, self.spend_usd = day, 0.0
        return self.spend_usd

    # -- bookkeeping ----------------------------------------------------------------------------------------

    def started(self, estimated_tokens: int) -> None:
        """A call is about to go out: count it against the limits; a half-open circuit sends its probe."""
        now = self.clock()
        self.in_flight += 1
        self.request_times.append(now)
        if estimated_tokens:
            self.token_times.append((now, estimated_tokens))
        self._prune(now)  # here too: without rpm/tpm limits nothing else trims the windows
        if self.state == "half_open":
            self.probe_in_flight = True

    def succeeded(self, latency_ms: float, cost_usd: float) -> None:
        now = self.clock()
        self.in_flight -= 1
        self.spent_today(now)
        self.spend_usd += cost_usd
        alpha = self.routing.ewma_alpha
        self.ewma_latency_ms = latency_ms if self.ewma_latency_ms is None else (
            alpha * latency_ms + (1 - alpha) * self.ewma_latency_ms)
        if self.state == "half_open":
            self.state, self.probe_in_flight = "closed", False
            self.outcomes.clear()
        self._count(now, ok=True)
        self.recent.append(None)

    def failed(self, error: ProviderError | None) -> None:
        """A call failed (``None``: cancelled, which says nothing about the provider)."""
        now = self.clock()
        self.in_flight -= 1
        if error is None:
            self.probe_in_flight = False
            return
        self.recent.append(error.error_class)
        if error.error_class == "rate_limited":
            pause = error.retry_after_s if error.retry_after_s is not None else self.routing.rate_limit_cooldown_s
            self.cooldown_until = max(self.cooldown_until, now + pause)
        if error.error_class not in BREAKER_ERRORS:
            self.probe_in_flight = False
            return
        if self.state == "half_open":
            self._open(now)
            return
        self._count(now, ok=False)
        failures = sum(not ok for _, ok in self.outcomes)
        if (len(self.outcomes) >= self.routing.breaker_min_calls
                and failures / len(self.outcomes) >= self.routing.breaker_failure_rate):
            self._open(now)

    def _count(self, now: float, *, ok: bool) -> None:
        self.outcomes.append((now, ok))
        horizon = now - self.routing.breaker_window_s
        while self.outcomes and self.outcomes[0][0] < horizon:
            self.outcomes.popleft()

    def _open(self, now: float) -> None:
        self.state, self.probe_in_flight = "open", False
        self.open_until = now + self.routing.breaker_cooldown_s
        self.outcomes.clear()
        logger.warning("circuit breaker of provider %s opened for %.0f s", self.config.name,
                       self.routing.breaker_cooldown_s)

    def status(self) -> str:
        """``untested`` (no call yet), ``failing`` (the circuit is open, or every one of the last calls failed,
        for any reason: an authentication failure or an unknown model too), ``degraded`` (some failed) or ``ok``."""
        if self.state == "open" or self.recent and all(self.recent):
            return "failing"
        if not self.recent:
            return "untested"
        return "degraded" if any(self.recent) else "ok"

    def error_rate(self) -> float | None:
        """Failure fraction over the breaker window (calls that count for the breaker), ``None`` without calls."""
        if not self.outcomes:
            return None
        return sum(not ok for _, ok in self.outcomes) / len(self.outcomes)
